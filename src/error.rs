//! The error policy, and the error of a run: what every boundary's error joins into.
//!
//! # Policy
//!
//! - **One enum per boundary**, in the module that owns the boundary: `ConfigError`
//!   (config), `SourceError` (source), `StoreError` (store), `StateError` (state),
//!   `DbError` (db: opening any SQLite file), `LockError` (run::lock), `RunError`
//!   (here: one run of one directory) and `CommandError` (commands: the process's edge).
//!   Each is a `thiserror` enum whose variants keep their typed cause (`#[source]` or
//!   `#[from]`); nobody flattens an error into a `String` on the way up.
//! - **Messages name the thing and the fix**: the path, the directory, the key, the
//!   remote; never a secret. A boundary adds its own context once (`state DB <path>:`,
//!   `learner store <path>:`), so the chain reads left to right.
//! - **`is_permanent()`** on every enum says whether the same attempt can never
//!   succeed (bad file, refused credential, corrupt row) or may pass if tried again
//!   (a lock another process holds, SQLITE_BUSY, a timeout, throttling). Retries
//!   (`db::migrate`, the remotes' retry schedule) retry only what is not permanent; a
//!   run's report carries the typed error to the edge, where it becomes a line on
//!   stderr or in the state DB and an exit code.
//! - **Only the edge formats**: `commands::dispatch` prints `learner-sync: <error>`
//!   and picks the exit code; the state DB stores the message of a failed run; the
//!   daemon logs it. Below the edge errors stay typed.

use crate::run::LockError;
use crate::source::SourceError;
use crate::state::StateError;
use crate::store::StoreError;

/// Why one run of one directory failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The previous users a delta merges into could not be read from the state DB.
    #[error("{0}")]
    Snapshot(String),
    /// A learner would be written without a user name: a delta's partial change of a
    /// user the snapshot does not hold. Nothing is written; the next run reads all.
    #[error("user {0} has no user name after merging a partial change (the snapshot does not hold the user); nothing was written, and the next run reads the whole directory")]
    NoUserName(String),
    /// The store refused some learners; the rest of the run was committed.
    #[error("{0} learners could not be written to the store")]
    Refused(usize),
}

impl RunError {
    /// Another process holds the directory's lease on a shared store: this run did
    /// nothing, and the other's run is the directory's run.
    pub fn is_lease_busy(&self) -> bool {
        matches!(self, RunError::Store(StoreError::LeaseBusy { .. }))
    }

    /// Whether running again, unchanged, can never succeed.
    pub fn is_permanent(&self) -> bool {
        match self {
            RunError::Lock(e) => e.is_permanent(),
            RunError::State(e) => e.is_permanent(),
            RunError::Store(e) => e.is_permanent(),
            RunError::Source(e) => e.is_permanent(),
            // A corrupt snapshot row stays corrupt until a full read replaces it.
            RunError::Snapshot(_) => true,
            // The next run, a full read, gets the whole user.
            RunError::NoUserName(_) => false,
            // The store may accept the learners once the admin fixes them.
            RunError::Refused(_) => false,
        }
    }
}
