//! Mock servers on 127.0.0.1 (Graph, Google, SCIM) on one start-up, the fault-injecting
//! proxy and the real SCIM reference server; shared by the integration tests, the
//! benchmarks and the soak (which include this file by `#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fault_proxy;
pub mod google_mock;
pub mod graph_mock;
pub mod mock_server;
pub mod postgres;
pub mod scim_gateway;
pub mod scim_mock;
pub mod scim_server;
pub mod smtp;
