//! A directory's group steps in the state DB: each is a run of kind `groups`, its
//! operations in the action log (recorded before the store sees them, settled after a
//! crash like any run), its counts on the run, and the group removals held for `approve`.

use rusqlite::{params, OptionalExtension};

use super::{State, StateError};
use crate::db;
use crate::groups::{Group, GroupCounts, GroupOp, Groups};

/// The last finished group step of a directory, for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupRunRow {
    pub finished_at: Option<String>,
    pub outcome: String,
    pub counts: GroupCounts,
    pub error: Option<String>,
}

/// Group removals held because many groups disappeared at once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupHold {
    pub reason: String,
    pub removals: usize,
    pub approved_at: Option<String>,
}

/// How a group step ended.
pub struct GroupFinish<'a> {
    pub outcome: &'a str,
    pub counts: &'a GroupCounts,
    pub error: Option<&'a str>,
    /// `Some(reason, removals)`: removals held; `None`: none held (an earlier hold is
    /// cleared).
    pub hold: Option<(&'a str, usize)>,
}

impl State {
    /// Record a group step and the action-log rows of its operations, before the store
    /// sees any. A membership row names the learner (`user_name` looks them up) and has
    /// the group's display name as its reason.
    pub fn begin_group_run(
        &mut self,
        directory: &str,
        run_key: &str,
        ops: &[GroupOp],
        user_name: &dyn Fn(&str) -> String,
    ) -> Result<i64, StateError> {
        let path = self.path.clone();
        let e = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let time = db::now();
        tx.execute(
            "INSERT INTO runs (run_key, directory, kind, started_at, outcome) VALUES (?1, ?2, 'groups', ?3, 'running')",
            params![run_key, directory, time],
        )
        .map_err(e)?;
        let run_id = tx.last_insert_rowid();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO actions (run_id, time, directory, external_id, user_name, action, reason, changes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(e)?;
            for op in ops {
                let mut row = |id: &str, name: &str, reason: &str, changes: String| {
                    ins.execute(params![
                        run_id,
                        time,
                        directory,
                        id,
                        name,
                        op.kind(),
                        reason,
                        changes
                    ])
                    .map(|_| ())
                };
                match op {
                    GroupOp::Create { group } => {
                        row(&group.external_id, &group.display_name, "", "[]".into())
                    }
                    GroupOp::Rename {
                        external_id,
                        display_name,
                        before,
                        ..
                    } => row(
                        external_id,
                        display_name,
                        "",
                        serde_json::json!([{"field": "displayName", "before": before, "after": display_name}])
                            .to_string(),
                    ),
                    GroupOp::Remove {
                        external_id,
                        display_name,
                    } => row(external_id, display_name, "", "[]".into()),
                    GroupOp::AddMembers {
                        members,
                        display_name,
                        ..
                    }
                    | GroupOp::RemoveMembers {
                        members,
                        display_name,
                        ..
                    } => members.iter().try_for_each(|m| {
                        row(m, &user_name(m), display_name, "[]".into())
                    }),
                }
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(run_id)
    }

    /// Close a group step: its outcome, counts and error, and the group removals it
    /// held (or that none are held now).
    pub fn finish_group_run(&mut self, run_id: i64, f: GroupFinish<'_>) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let directory: String = tx
            .query_row("SELECT directory FROM runs WHERE id = ?1", [run_id], |r| {
                r.get(0)
            })
            .map_err(e)?;
        let counts = serde_json::to_string(f.counts).unwrap_or_default();
        tx.execute(
            "UPDATE runs SET outcome = ?2, finished_at = ?3, groups = ?4, error = ?5, held = ?6 WHERE id = ?1",
            params![run_id, f.outcome, db::now(), counts, f.error, f.counts.held as i64],
        )
        .map_err(e)?;
        match f.hold {
            None => tx.execute("DELETE FROM group_holds WHERE directory = ?1", [&directory]),
            Some((reason, removals)) => tx.execute(
                "INSERT INTO group_holds (directory, reason, removals, run_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (directory) DO UPDATE SET reason = excluded.reason, removals = excluded.removals, run_id = excluded.run_id,
                     approved_at = CASE WHEN group_holds.removals >= excluded.removals THEN group_holds.approved_at END",
                params![directory, reason, removals as i64, run_id],
            ),
        }
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Record a group step that failed before it applied anything (the directory's
    /// groups could not be read, the provider refuses /Groups).
    pub fn record_failed_group_run(
        &mut self,
        directory: &str,
        run_key: &str,
        error: &str,
    ) -> Result<(), StateError> {
        let time = db::now();
        self.conn
            .execute(
                "INSERT INTO runs (run_key, directory, kind, started_at, finished_at, outcome, error) VALUES (?1, ?2, 'groups', ?3, ?3, 'failed', ?4)",
                params![run_key, directory, time, error],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The last whole read of a directory's groups made for `selection`, and its cursor.
    pub fn group_read(
        &self,
        directory: &str,
        selection: &str,
    ) -> Result<Option<(Option<String>, Groups)>, StateError> {
        if !self.has_table("group_reads")? {
            return Ok(None);
        }
        let row: Option<(Option<String>, String)> = self
            .conn
            .query_row(
                "SELECT cursor, groups FROM group_reads WHERE directory = ?1 AND selection = ?2",
                params![directory, selection],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        // A row that does not parse is no read: the groups are read whole again.
        Ok(row.and_then(|(cursor, json)| {
            serde_json::from_str::<Vec<Group>>(&json).ok().map(|list| {
                (
                    cursor,
                    list.into_iter()
                        .map(|g| (g.external_id.clone(), g))
                        .collect(),
                )
            })
        }))
    }

    /// The cursor of the last whole read made for `selection`, if one is kept.
    pub fn group_read_cursor(
        &self,
        directory: &str,
        selection: &str,
    ) -> Result<Option<String>, StateError> {
        if !self.has_table("group_reads")? {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT cursor FROM group_reads WHERE directory = ?1 AND selection = ?2",
                params![directory, selection],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.err(e))
    }

    /// Keep a group read's cursor, and the groups when it read them whole.
    pub fn save_group_read(
        &mut self,
        directory: &str,
        selection: &str,
        cursor: &str,
        groups: Option<&Groups>,
    ) -> Result<(), StateError> {
        match groups {
            Some(groups) => {
                let list: Vec<&Group> = groups.values().collect();
                let json = serde_json::to_string(&list).map_err(|e| StateError::Other {
                    path: self.path.clone(),
                    message: e.to_string(),
                })?;
                self.conn.execute(
                    "INSERT OR REPLACE INTO group_reads (directory, selection, cursor, groups, read_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![directory, selection, cursor, json, db::now()],
                )
            }
            None => self.conn.execute(
                "UPDATE group_reads SET cursor = ?3 WHERE directory = ?1 AND selection = ?2",
                params![directory, selection, cursor],
            ),
        }
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    pub fn last_group_run(&self, directory: &str) -> Result<Option<GroupRunRow>, StateError> {
        if !self.has_table("group_holds")? {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT finished_at, outcome, groups, error FROM runs
                 WHERE directory = ?1 AND kind = 'groups' AND outcome <> 'running' ORDER BY id DESC LIMIT 1",
                [directory],
                |r| {
                    let counts: Option<String> = r.get(2)?;
                    Ok(GroupRunRow {
                        finished_at: r.get(0)?,
                        outcome: r.get(1)?,
                        counts: counts
                            .and_then(|c| serde_json::from_str(&c).ok())
                            .unwrap_or_default(),
                        error: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn group_hold(&self, directory: &str) -> Result<Option<GroupHold>, StateError> {
        if !self.has_table("group_holds")? {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT reason, removals, approved_at FROM group_holds WHERE directory = ?1",
                [directory],
                |r| {
                    Ok(GroupHold {
                        reason: r.get(0)?,
                        removals: r.get::<_, i64>(1)? as usize,
                        approved_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// `approve`: the held group removals go ahead in the directory's next run (as long
    /// as they are no more than were approved). Whether there was a hold.
    pub fn approve_group_hold(&mut self, directory: &str, by: &str) -> Result<bool, StateError> {
        let now = db::now();
        let n = self
            .conn
            .execute(
                "UPDATE group_holds SET approved_at = ?2 WHERE directory = ?1",
                params![directory, now],
            )
            .map_err(|e| self.err(e))?;
        if n > 0 {
            self.conn
                .execute(
                    "INSERT INTO approvals (directory, approved_by, approved_at, what) VALUES (?1, ?2, ?3, 'group removals')",
                    params![directory, by, now],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(n > 0)
    }
}
