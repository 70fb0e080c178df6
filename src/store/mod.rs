//! Learner stores: where the plan is applied.

pub mod sqlite;

use std::collections::BTreeMap;

use crate::check::CheckLine;
use crate::config::StoreConfig;
use crate::model::Learner;
use crate::plan::Operation;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("learner store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("learner store: {0}")]
    Other(String),
}

/// What happened to a run's operations. A store that applies all-or-nothing either
/// returns an error or a report with no failures.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// `(external_id, the store's explanation)` of operations that were refused.
    pub failed: Vec<(String, String)>,
}

pub enum Store {
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Open the configured store. `read_only` (dry runs, status) never creates or writes.
    pub async fn open(config: &StoreConfig, read_only: bool) -> Result<Store, StoreError> {
        match config {
            StoreConfig::Sqlite { path } => {
                Ok(Store::Sqlite(sqlite::SqliteStore::open(path, read_only)?))
            }
            StoreConfig::Scim { .. } => Err(StoreError::Other(
                "the scim store is not available in this build".to_string(),
            )),
        }
    }

    /// Every learner of a directory, active or not, by external id.
    pub async fn load(&mut self, directory: &str) -> Result<BTreeMap<String, Learner>, StoreError> {
        match self {
            Store::Sqlite(s) => s.load(directory),
        }
    }

    /// Visit every learner of a directory without holding them all in memory.
    pub async fn for_each_learner(
        &mut self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.for_each_learner(directory, visit),
        }
    }

    /// Visit the learners of a directory with these external ids (those the store has).
    pub async fn learners_by_id(
        &mut self,
        directory: &str,
        ids: &std::collections::BTreeSet<String>,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.learners_by_id(directory, ids, visit),
        }
    }

    /// `(learners, active learners)` of a directory.
    pub async fn counts(&mut self, directory: &str) -> Result<(usize, usize), StoreError> {
        match self {
            Store::Sqlite(s) => s.counts(directory),
        }
    }

    /// Apply operations, recording `run_key` so a crashed run can be told apart later.
    pub async fn apply(
        &mut self,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
    ) -> Result<ApplyReport, StoreError> {
        match self {
            Store::Sqlite(s) => s.apply(directory, run_key, operations),
        }
    }

    /// Whether the operations of a run reached the store; `None` when the store cannot tell.
    pub async fn was_applied(&mut self, run_key: &str) -> Result<Option<bool>, StoreError> {
        match self {
            Store::Sqlite(s) => s.was_applied(run_key).map(Some),
        }
    }

    pub async fn check(&mut self) -> Vec<CheckLine> {
        match self {
            Store::Sqlite(s) => vec![s.check()],
        }
    }
}
