//! Queries of the state DB beyond a run's own bookkeeping: `status`, `history`,
//! `approve`, what the guards need to know across runs, and `rename-directory`.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{RunCommit, State, StateError};
use crate::plan::FieldChange;

#[derive(Debug, Clone, Serialize)]
pub struct HeldRow {
    pub external_id: String,
    pub user_name: String,
    pub reason: String,
    pub hold_reason: String,
    pub run: i64,
}

/// A field change held by the mass-update guard.
#[derive(Debug, Clone, Serialize)]
pub struct HeldUpdateRow {
    pub external_id: String,
    pub user_name: String,
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub hold_reason: String,
    pub run: i64,
}

/// Every create of a directory held because it looks renamed.
#[derive(Debug, Clone, Serialize)]
pub struct DirectoryHold {
    pub reason: String,
    pub run: i64,
    /// When `approve` released it: the next run creates the learners.
    pub approved_at: Option<String>,
}

/// What `rename-directory` moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renamed {
    pub snapshot: usize,
    pub runs: usize,
    pub actions: usize,
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
    /// Every row a query returns, mapped: how this module reads lists.
    fn rows<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StateError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, map)
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    pub fn held(&self, directory: &str) -> Result<Vec<HeldRow>, StateError> {
        let rows = self.rows(
            "SELECT external_id, user_name, reason, hold_reason, run_id FROM held WHERE directory = ?1 ORDER BY external_id",
            [directory],
            |r| {
                Ok(HeldRow {
                    external_id: r.get(0)?,
                    user_name: r.get(1)?,
                    reason: r.get(2)?,
                    hold_reason: r.get(3)?,
                    run: r.get(4)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// The most recent finished runs of a directory, newest first (group steps have
    /// their own: `last_group_run`).
    pub fn recent_runs(&self, directory: &str, limit: usize) -> Result<Vec<RunRow>, StateError> {
        let rows = self.rows(
            "SELECT id, directory, kind, started_at, finished_at, outcome, full_read, created, updated, deactivated, reactivated, held, unchanged, failed, requests, error
                 FROM runs WHERE directory = ?1 AND outcome <> 'running' AND kind <> 'groups' ORDER BY id DESC LIMIT ?2",
            params![directory, limit as i64],
            |r| {
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
                        adopted: 0,
                    },
                    requests: r.get(14)?,
                    error: r.get(15)?,
                })
            },
        )?;
        Ok(rows)
    }

    /// How many of the directory's latest sync runs failed in a row.
    pub fn consecutive_failures(&self, directory: &str) -> Result<u32, StateError> {
        let outcomes = self.rows(
            "SELECT outcome FROM runs WHERE directory = ?1 AND kind = 'sync' AND outcome <> 'running' ORDER BY id DESC LIMIT 1000",
            [directory],
            |r| r.get::<_, String>(0),
        )?;
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

/// Write the holds of a run being committed (inside `commit_run`'s transaction): the
/// held field changes replace the previous ones (of the learners the run evaluated),
/// and the directory hold
/// is set, cleared or left as `RunCommit::directory_hold` says.
pub(super) fn record_holds(tx: &Connection, c: &RunCommit<'_>) -> rusqlite::Result<()> {
    // Like the held deactivations: a delta run replaces only the holds of the learners
    // it evaluated.
    match c.evaluated {
        None => {
            tx.execute(
                "DELETE FROM held_updates WHERE directory = ?1",
                [c.directory],
            )?;
        }
        Some(ids) => {
            let mut delete = tx.prepare_cached(
                "DELETE FROM held_updates WHERE directory = ?1 AND external_id = ?2",
            )?;
            for id in ids {
                delete.execute(params![c.directory, id])?;
            }
        }
    }
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO held_updates (directory, external_id, field, user_name, before, after, hold_reason, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for op in c.held_updates {
        for change in op.changes() {
            ins.execute(params![
                c.directory,
                op.external_id(),
                change.field,
                op.fields().user_name,
                change.before,
                change.after,
                c.update_hold_reasons
                    .get(&change.field)
                    .map(String::as_str)
                    .unwrap_or(""),
                c.run_id
            ])?;
        }
    }
    match &c.directory_hold {
        None => {}
        Some(None) => {
            tx.execute(
                "DELETE FROM directory_holds WHERE directory = ?1",
                [c.directory],
            )?;
        }
        Some(Some(reason)) => {
            tx.execute(
                "INSERT INTO directory_holds (directory, reason, run_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (directory) DO UPDATE SET reason = excluded.reason, run_id = excluded.run_id, approved_at = NULL",
                params![c.directory, reason, c.run_id],
            )?;
        }
    }
    Ok(())
}

impl State {
    /// Whether the schema has a table (a state DB written by an older version, opened
    /// read-only, may not have the newer ones yet).
    pub(crate) fn has_table(&self, name: &str) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// Deactivations of a directory that reached the store at or after `since`
    /// (RFC 3339 UTC, as the action log writes times), by sync runs and `approve`.
    pub fn deactivated_since(&self, directory: &str, since: &str) -> Result<usize, StateError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM actions a JOIN runs r ON r.id = a.run_id
                 WHERE a.directory = ?1 AND a.action = 'deactivated' AND a.time >= ?2
                   AND r.outcome NOT IN ('running', 'aborted')",
                params![directory, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    pub fn held_updates(&self, directory: &str) -> Result<Vec<HeldUpdateRow>, StateError> {
        if !self.has_table("held_updates")? {
            return Ok(vec![]);
        }
        let rows = self.rows(
            "SELECT external_id, user_name, field, before, after, hold_reason, run_id FROM held_updates
                 WHERE directory = ?1 ORDER BY field, external_id",
            [directory],
            |r| {
                Ok(HeldUpdateRow {
                    external_id: r.get(0)?,
                    user_name: r.get(1)?,
                    field: r.get(2)?,
                    before: r.get(3)?,
                    after: r.get(4)?,
                    hold_reason: r.get(5)?,
                    run: r.get(6)?,
                })
            },
        )?;
        Ok(rows)
    }

    pub fn directory_hold(&self, directory: &str) -> Result<Option<DirectoryHold>, StateError> {
        if !self.has_table("directory_holds")? {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT reason, run_id, approved_at FROM directory_holds WHERE directory = ?1",
                [directory],
                |r| {
                    Ok(DirectoryHold {
                        reason: r.get(0)?,
                        run: r.get(1)?,
                        approved_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Release a directory hold: the next run creates the directory's learners.
    pub fn approve_directory_hold(&mut self, directory: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE directory_holds SET approved_at = ?2 WHERE directory = ?1",
                params![directory, crate::db::now()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The directories of the snapshot other than `configured`, with how many of `ids`
    /// each holds: where a directory renamed in the config left its users.
    pub fn unconfigured_sharing(
        &self,
        configured: &BTreeSet<&str>,
        ids: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, usize>, StateError> {
        let directories: Vec<String> = self.rows(
            "SELECT DISTINCT directory FROM snapshot ORDER BY directory",
            [],
            |r| r.get(0),
        )?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM snapshot WHERE directory = ?1 AND external_id = ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for d in directories
            .into_iter()
            .filter(|d| !configured.contains(d.as_str()))
        {
            let mut n = 0;
            for id in ids {
                n += stmt
                    .query_row(params![d, id], |r| r.get::<_, i64>(0))
                    .map_err(|e| self.err(e))? as usize;
            }
            out.insert(d, n);
        }
        Ok(out)
    }

    /// Directories the state DB knows (a snapshot, a cursor or a run), in name order.
    pub fn known_directories(&self) -> Result<Vec<String>, StateError> {
        let rows = self.rows(
            "SELECT directory FROM snapshot UNION SELECT directory FROM cursors
                 UNION SELECT directory FROM runs ORDER BY 1",
            [],
            |r| r.get::<_, String>(0),
        )?;
        Ok(rows)
    }

    /// Whether the directory has a snapshot, a cursor or a full read on record (runs
    /// alone, such as one held because it looked renamed, are history, not data).
    pub fn has_data(&self, directory: &str) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM snapshot WHERE directory = ?1)
                     OR EXISTS (SELECT 1 FROM cursors WHERE directory = ?1
                                AND (cursor IS NOT NULL OR full_read_at IS NOT NULL))",
                [directory],
                |r| r.get::<_, bool>(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Move everything the state DB keeps about `old` to `new`: snapshot, cursor,
    /// held deactivations and updates, pending leavers, and the history (runs and the action log, so
    /// that `history --directory NEW` tells the whole story). `new`'s own runs (a run
    /// held because it looked renamed) stay; its directory hold is settled.
    /// The caller checked that `new` has no data.
    pub fn rename_directory(&mut self, old: &str, new: &str) -> Result<Renamed, StateError> {
        let path = self.path.clone();
        let e = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let mut moved = Renamed::default();
        let mv = |table: &str| -> Result<usize, StateError> {
            tx.execute(
                &format!("UPDATE {table} SET directory = ?2 WHERE directory = ?1"),
                params![old, new],
            )
            .map_err(e)
        };
        moved.snapshot = mv("snapshot")?;
        moved.runs = mv("runs")?;
        moved.actions = mv("actions")?;
        // `new` has no cursor (the caller checked), at most what a run recorded of
        // where it read from: `old`'s takes its place.
        tx.execute("DELETE FROM cursors WHERE directory = ?1", [new])
            .map_err(e)?;
        mv("cursors")?;
        // Holds planned under `new` were planned against an empty store: stale now.
        // So are `new`'s pending leavers; `old`'s keep their clocks (a rename must not
        // restart a grace period).
        for table in [
            "held",
            "held_updates",
            "directory_holds",
            "pending_deactivations",
            "group_holds",
            "group_reads",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE directory = ?1"), [new])
                .map_err(e)?;
            mv(table)?;
        }
        tx.commit().map_err(e)?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LearnerFields;
    use crate::plan::Operation;
    use crate::state::{Counts, Outcome};

    fn email_change(id: &str) -> Operation {
        Operation::Update {
            external_id: id.into(),
            fields: LearnerFields {
                user_name: format!("{id}@x.io"),
                ..Default::default()
            },
            changes: vec![FieldChange {
                field: "email".into(),
                before: Some(format!("{id}@old.io")),
                after: Some(format!("{id}@new.io")),
            }],
        }
    }

    /// Commit a sync run of `hr` holding these email changes, having evaluated `only`.
    fn commit(st: &mut State, held: &[Operation], only: Option<&BTreeSet<String>>) {
        let run_id = st
            .begin_run(
                "hr",
                &uuid::Uuid::new_v4().to_string(),
                "sync",
                false,
                &[],
                held,
            )
            .unwrap();
        let reasons = BTreeMap::from([("email".to_string(), "too many".to_string())]);
        st.commit_run(RunCommit {
            run_id,
            directory: "hr",
            outcome: Outcome::Held,
            counts: Counts::default(),
            requests: 0,
            snapshot_deletes: &[],
            cursor: None,
            full_read: false,
            held: &[],
            evaluated: only,
            hold_reason: None,
            binding: None,
            held_updates: held,
            update_hold_reasons: &reasons,
            directory_hold: None,
            failed: &[],
            error: None,
        })
        .unwrap();
    }

    fn held_ids(st: &State) -> Vec<String> {
        st.held_updates("hr")
            .unwrap()
            .into_iter()
            .map(|h| h.external_id)
            .collect()
    }

    #[test]
    fn a_delta_run_replaces_only_the_held_changes_of_the_learners_it_evaluated() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("state.db")).unwrap();
        commit(&mut st, &[email_change("a"), email_change("b")], None);
        assert_eq!(held_ids(&st), ["a", "b"]);
        let row = &st.held_updates("hr").unwrap()[0];
        assert_eq!(
            (
                row.before.as_deref(),
                row.after.as_deref(),
                row.hold_reason.as_str()
            ),
            (Some("a@old.io"), Some("a@new.io"), "too many")
        );
        // A delta that saw only `b` (whose change is gone) keeps `a`'s.
        let only = BTreeSet::from(["b".to_string()]);
        commit(&mut st, &[], Some(&only));
        assert_eq!(held_ids(&st), ["a"]);
        // A full run replaces them all.
        commit(&mut st, &[email_change("c")], None);
        assert_eq!(held_ids(&st), ["c"]);
    }

    #[test]
    fn rename_moves_the_history_and_the_holds_to_the_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("state.db")).unwrap();
        commit(&mut st, &[email_change("a")], None);
        assert!(!st.has_data("people").unwrap());
        let moved = st.rename_directory("hr", "people").unwrap();
        assert_eq!((moved.runs, moved.snapshot), (1, 0));
        assert!(st.held_updates("hr").unwrap().is_empty());
        assert_eq!(st.held_updates("people").unwrap().len(), 1);
        assert_eq!(st.known_directories().unwrap(), ["people"]);
    }
}
