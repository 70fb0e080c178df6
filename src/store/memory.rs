//! An in-memory learner store for in-process tests of a whole run: the SQLite
//! store's semantics (all-or-nothing apply recorded with the run key), no file.

use std::collections::{BTreeMap, BTreeSet};

use super::{ApplyReport, StoreError};
use crate::model::Learner;
use crate::plan::Operation;

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// `(directory, external id)` -> learner.
    pub learners: BTreeMap<(String, String), Learner>,
    pub run_keys: BTreeSet<String>,
    /// Directory -> its groups.
    pub groups: BTreeMap<String, crate::groups::Groups>,
    /// Make the next `apply` fail with this error (and write nothing).
    pub fail_next_apply: Option<String>,
}

impl MemoryStore {
    pub fn for_each_learner(&self, directory: &str, visit: &mut dyn FnMut(Learner)) {
        for ((d, _), l) in &self.learners {
            if d == directory {
                visit(l.clone());
            }
        }
    }

    pub fn apply(
        &mut self,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
    ) -> Result<ApplyReport, StoreError> {
        if let Some(e) = self.fail_next_apply.take() {
            return Err(StoreError::Other(e));
        }
        for op in operations {
            let active = !matches!(op, Operation::Deactivate { .. });
            let key = (directory.to_string(), op.external_id().to_string());
            let keeps_state = matches!(op, Operation::Update { .. });
            let active = match self.learners.get(&key) {
                Some(l) if keeps_state => l.active,
                _ => active,
            };
            self.learners.insert(
                key,
                Learner {
                    external_id: op.external_id().to_string(),
                    fields: op.fields().clone(),
                    active,
                },
            );
        }
        self.run_keys.insert(run_key.to_string());
        Ok(ApplyReport::default())
    }
}
