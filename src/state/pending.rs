//! Leavers inside their grace period: the `pending_deactivations` rows that
//! `run::grace` reads and changes, and the counts `status` shows.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::Serialize;

use super::{State, StateError};

/// A learner gone from the directory (or disabled) whose deactivation waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingRow {
    pub external_id: String,
    pub user_name: String,
    /// When a run first saw the learner gone (RFC 3339).
    pub since: String,
    /// The deactivation reason (`deleted in directory`, ...).
    pub reason: String,
}

/// What one run changes in the pending rows of a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingChanges {
    /// Newly pending learners.
    pub add: Vec<PendingRow>,
    /// Learners no longer pending: back in the directory, or deactivated.
    pub remove: Vec<String>,
}

impl PendingChanges {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

impl State {
    /// Whether the table exists: a read-only open of a DB no run of this version has
    /// migrated yet (`status`, a dry run) has none, and nothing pending.
    fn has_pending_table(&self) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'pending_deactivations'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// The pending learners of a directory, by external id.
    pub fn pending(&self, directory: &str) -> Result<BTreeMap<String, PendingRow>, StateError> {
        if !self.has_pending_table()? {
            return Ok(BTreeMap::new());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT external_id, user_name, since, reason FROM pending_deactivations
                 WHERE directory = ?1 ORDER BY external_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok(PendingRow {
                    external_id: r.get(0)?,
                    user_name: r.get(1)?,
                    since: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .map(|p| (p.external_id.clone(), p))
            .collect())
    }

    /// How many learners of the directory are pending.
    pub fn pending_count(&self, directory: &str) -> Result<usize, StateError> {
        if !self.has_pending_table()? {
            return Ok(0);
        }
        self.conn
            .query_row(
                "SELECT count(*) FROM pending_deactivations WHERE directory = ?1",
                [directory],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    /// Whether this handle may write (not a dry run's read-only open).
    pub fn writable(&self) -> bool {
        !self.conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true)
    }

    /// Record what a run found, in one transaction. A first-seen time already stored
    /// is kept: a learner stays pending from when a run first saw them gone.
    pub fn apply_pending(
        &self,
        directory: &str,
        changes: &PendingChanges,
    ) -> Result<(), StateError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        for p in &changes.add {
            tx.execute(
                "INSERT OR IGNORE INTO pending_deactivations (directory, external_id, user_name, since, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![directory, p.external_id, p.user_name, p.since, p.reason],
            )
            .map_err(|e| self.err(e))?;
        }
        for id in &changes.remove {
            tx.execute(
                "DELETE FROM pending_deactivations WHERE directory = ?1 AND external_id = ?2",
                params![directory, id],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }
}
