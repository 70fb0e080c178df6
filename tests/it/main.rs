//! The integration tests, one binary: each module drives the real `learner-sync` binary
//! for one feature against temp configs, mock servers on 127.0.0.1 or the real
//! scim2-server. Run one module with `cargo test --test it entra::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

mod admin_week;
mod config;
mod config_fuzz;
mod crash;
mod crash_remote;
mod daemon;
mod entra;
mod google;
mod guards_across_runs;
mod hostile_data;
mod hostile_remote;
mod network_faults;
mod packaging;
mod scim_dialect;
mod scim_faults;
mod scim_interop;
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
