//! The integration tests, one binary: each module drives the real `learner-sync` binary
//! for one feature against temp configs, mock servers on 127.0.0.1 or the real
//! scim2-server. Run one module with `cargo test --test it entra::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

mod admin_week;
mod as_service;
mod config;
mod config_fuzz;
mod crash;
mod crash_remote;
mod credential_expiry;
mod daemon;
mod entra;
mod failover;
mod google;
mod grace;
mod groups;
mod guards_across_runs;
mod hostile_data;
mod hostile_remote;
mod mapping;
mod multi_tenant;
mod named_stores;
mod network_faults;
mod notify;
mod on_demand;
mod packaging;
mod postgres_infra;
mod postgres_store;
mod scim_dialect;
mod scim_faults;
mod scim_interop;
mod scim_interop2;
mod scim_limits;
mod scim_takeover;
mod scoping_filters;
mod secret_sources;
mod secrets;
mod storage_faults;
mod sync_csv;
mod terminal_and_files;
mod trust_csv;
mod trust_entra;
mod trust_google;
mod trust_schedule;
mod trust_scim;
mod trust_secrets;
mod trust_state;
