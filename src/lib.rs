//! learner-sync: pull users from Entra ID, Google Workspace or a CSV export into a
//! learner store. The flow of one run:
//! config -> source (read) -> plan (pure) -> guard (pure) -> store (apply) -> state (commit),
//! then the same for the directory's groups (`groups`, `run::groups`) where selected.

pub mod applied;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod db;
pub mod error;
pub mod faults;
pub mod groups;
pub mod guard;
pub mod http;
pub mod logging;
pub mod mapping;
pub mod model;
pub mod notify;
pub mod plan;
pub mod progress;
pub mod redact;
pub mod report;
pub mod run;
pub mod service_access;
pub mod source;
pub mod state;
pub mod store;
pub mod unit_credentials;
