//! Mock servers on 127.0.0.1 (Graph, Google, SCIM), the fault-injecting proxy and the
//! real SCIM reference server, shared by the integration tests, benches and the soak.
pub mod fault_proxy;
pub mod google_mock;
pub mod graph_mock;
pub mod scim_mock;
pub mod scim_server;
