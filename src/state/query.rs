//! Read-side queries of the state DB: `status`, `history` and `approve`.

use rusqlite::params;
use serde::Serialize;

use super::{State, StateError};
use crate::plan::FieldChange;

#[derive(Debug, Clone, Serialize)]
pub struct HeldRow {
    pub external_id: String,
    pub user_name: String,
    pub reason: String,
    pub hold_reason: String,
    pub run: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: i64,
    pub directory: String,
    pub kind: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub full_read: bool,
    pub counts: super::Counts,
    pub requests: i64,
    pub error: Option<String>,
}

/// One entry of the action log, as `history --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub time: String,
    pub run: i64,
    pub directory: String,
    pub external_id: String,
    pub user_name: String,
    pub action: String,
    /// Names of the changed columns.
    pub fields: Vec<String>,
    /// The changed columns with their values before and after.
    pub changes: Vec<FieldChange>,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub directory: Option<String>,
    /// Matches external id, user name (substring, case-insensitive).
    pub user: Option<String>,
    /// RFC 3339 lower bound.
    pub since: Option<String>,
    pub limit: Option<usize>,
}

impl State {
    pub fn held(&self, directory: &str) -> Result<Vec<HeldRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT external_id, user_name, reason, hold_reason, run_id FROM held WHERE directory = ?1 ORDER BY external_id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok(HeldRow {
                    external_id: r.get(0)?,
                    user_name: r.get(1)?,
                    reason: r.get(2)?,
                    hold_reason: r.get(3)?,
                    run: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The most recent finished runs of a directory, newest first.
    pub fn recent_runs(&self, directory: &str, limit: usize) -> Result<Vec<RunRow>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, directory, kind, started_at, finished_at, outcome, full_read, created, updated, deactivated, reactivated, held, unchanged, failed, requests, error
                 FROM runs WHERE directory = ?1 AND outcome <> 'running' ORDER BY id DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![directory, limit as i64], |r| {
                let c = |i: usize| -> rusqlite::Result<usize> { Ok(r.get::<_, i64>(i)? as usize) };
                Ok(RunRow {
                    id: r.get(0)?,
                    directory: r.get(1)?,
                    kind: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    outcome: r.get(5)?,
                    full_read: r.get(6)?,
                    counts: super::Counts {
                        created: c(7)?,
                        updated: c(8)?,
                        deactivated: c(9)?,
                        reactivated: c(10)?,
                        held: c(11)?,
                        unchanged: c(12)?,
                        failed: c(13)?,
                    },
                    requests: r.get(14)?,
                    error: r.get(15)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// How many of the directory's latest sync runs failed in a row.
    pub fn consecutive_failures(&self, directory: &str) -> Result<u32, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT outcome FROM runs WHERE directory = ?1 AND kind = 'sync' AND outcome <> 'running' ORDER BY id DESC LIMIT 1000",
            )
            .map_err(|e| self.err(e))?;
        let outcomes = stmt
            .query_map([directory], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(outcomes.iter().take_while(|o| *o == "failed").count() as u32)
    }

    /// The action log, newest first. Actions of runs that never reached the store
    /// (still running, or aborted by a crash) are not part of it.
    pub fn history(&self, f: &HistoryFilter) -> Result<Vec<ActionRecord>, StateError> {
        // Matched here, not with SQLite's LIKE: its lower() folds only ASCII (`Åsa` would
        // never match `åsa`), and `%` and `_` in the text are meant literally.
        let user = f.user.as_ref().map(|u| u.to_lowercase());
        let matches = |r: &ActionRecord| {
            user.as_ref().is_none_or(|u| {
                r.user_name.to_lowercase().contains(u.as_str())
                    || r.external_id.to_lowercase().contains(u.as_str())
            })
        };
        let mut stmt = self
            .conn
            .prepare(
                "SELECT a.time, a.run_id, a.directory, a.external_id, a.user_name, a.action, a.reason, a.changes
                 FROM actions a JOIN runs r ON r.id = a.run_id
                 WHERE r.outcome NOT IN ('running', 'aborted')
                   AND (?1 IS NULL OR a.directory = ?1)
                   AND (?2 IS NULL OR a.time >= ?2)
                 ORDER BY a.id DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![f.directory, f.since], |r| {
                let changes: String = r.get(7)?;
                let changes: Vec<FieldChange> = serde_json::from_str(&changes).unwrap_or_default();
                Ok(ActionRecord {
                    time: r.get(0)?,
                    run: r.get(1)?,
                    directory: r.get(2)?,
                    external_id: r.get(3)?,
                    user_name: r.get(4)?,
                    action: r.get(5)?,
                    fields: changes.iter().map(|c| c.field.clone()).collect(),
                    changes,
                    reason: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?
            .filter(|r| r.as_ref().map_or(true, matches))
            .take(f.limit.unwrap_or(usize::MAX))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}
