//! The SQLite store's groups: the documented `groups` and `group_members` tables
//! (migration 4). A group step's operations are applied in one transaction with the
//! step's run key, like a run's learners.

use rusqlite::{params, Connection};

use super::{prune_before, SqliteStore};
use crate::db;
use crate::groups::{Group, GroupOp, Groups};
use crate::store::StoreError;

impl SqliteStore {
    /// The groups of a directory with their members.
    pub fn groups(&self, directory: &str) -> Result<Groups, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(Groups::new());
        };
        read(conn, directory).map_err(|e| self.err(e))
    }

    /// Apply a group step's operations and record its key, in one transaction.
    pub fn apply_groups(
        &mut self,
        directory: &str,
        run_key: &str,
        ops: &[GroupOp],
    ) -> Result<(), StoreError> {
        let path = self.path.display().to_string();
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Other("store opened read-only".to_string()))?;
        write(conn, directory, run_key, ops, &db::now())
            .map_err(|source| StoreError::Sqlite { path, source })
    }
}

fn read(conn: &Connection, directory: &str) -> rusqlite::Result<Groups> {
    let mut groups = Groups::new();
    let mut stmt = conn.prepare_cached(
        "SELECT external_id, display_name, email FROM groups WHERE directory = ?1",
    )?;
    for row in stmt.query_map([directory], |r| {
        Ok(Group {
            external_id: r.get(0)?,
            display_name: r.get(1)?,
            email: r.get(2)?,
            members: Default::default(),
        })
    })? {
        let g = row?;
        groups.insert(g.external_id.clone(), g);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT group_external_id, learner_external_id FROM group_members WHERE directory = ?1",
    )?;
    let mut rows = stmt.query([directory])?;
    while let Some(r) = rows.next()? {
        let group: String = r.get(0)?;
        if let Some(g) = groups.get_mut(&group) {
            g.members.insert(r.get(1)?);
        }
    }
    Ok(groups)
}

fn write(
    conn: &mut Connection,
    directory: &str,
    run_key: &str,
    ops: &[GroupOp],
    now: &str,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut add = tx.prepare_cached(
            "INSERT OR IGNORE INTO group_members (directory, group_external_id, learner_external_id) VALUES (?1, ?2, ?3)",
        )?;
        let mut remove = tx.prepare_cached(
            "DELETE FROM group_members WHERE directory = ?1 AND group_external_id = ?2 AND learner_external_id = ?3",
        )?;
        let mut touch = tx.prepare_cached(
            "UPDATE groups SET updated_at = ?3 WHERE directory = ?1 AND external_id = ?2",
        )?;
        for op in ops {
            match op {
                GroupOp::Create { group } => {
                    tx.execute(
                        "INSERT INTO groups (directory, external_id, display_name, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                         ON CONFLICT (directory, external_id) DO UPDATE SET display_name = excluded.display_name, email = excluded.email, updated_at = excluded.updated_at",
                        params![directory, group.external_id, group.display_name, group.email, now],
                    )?;
                    for m in &group.members {
                        add.execute(params![directory, group.external_id, m])?;
                    }
                }
                GroupOp::Rename {
                    external_id,
                    display_name,
                    email,
                    ..
                } => {
                    tx.execute(
                        "UPDATE groups SET display_name = ?3, email = ?4, updated_at = ?5 WHERE directory = ?1 AND external_id = ?2",
                        params![directory, external_id, display_name, email, now],
                    )?;
                }
                GroupOp::AddMembers {
                    external_id,
                    members,
                    ..
                } => {
                    for m in members {
                        add.execute(params![directory, external_id, m])?;
                    }
                    touch.execute(params![directory, external_id, now])?;
                }
                GroupOp::RemoveMembers {
                    external_id,
                    members,
                    ..
                } => {
                    for m in members {
                        remove.execute(params![directory, external_id, m])?;
                    }
                    touch.execute(params![directory, external_id, now])?;
                }
                GroupOp::Remove { external_id, .. } => {
                    tx.execute(
                        "DELETE FROM group_members WHERE directory = ?1 AND group_external_id = ?2",
                        params![directory, external_id],
                    )?;
                    tx.execute(
                        "DELETE FROM groups WHERE directory = ?1 AND external_id = ?2",
                        params![directory, external_id],
                    )?;
                }
            }
        }
    }
    tx.execute(
        "INSERT OR IGNORE INTO learner_sync_runs (run_key, directory, applied_at) VALUES (?1, ?2, ?3)",
        params![run_key, directory, now],
    )?;
    tx.execute(
        "DELETE FROM learner_sync_runs WHERE directory = ?1 AND run_key <> ?2 AND applied_at < ?3",
        params![directory, run_key, prune_before(now)],
    )?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_step_lands_whole_with_its_key_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("l.db"), false).unwrap();
        let sales = Group {
            external_id: "g1".into(),
            display_name: "Sales".into(),
            email: Some("sales@x.example".into()),
            members: ["u1".to_string(), "u2".to_string()].into(),
        };
        s.apply_groups(
            "d",
            "k1",
            &[GroupOp::Create {
                group: sales.clone(),
            }],
        )
        .unwrap();
        assert!(s.was_applied("k1").unwrap());
        assert_eq!(s.groups("d").unwrap()["g1"], sales);
        s.apply_groups(
            "d",
            "k2",
            &[
                GroupOp::RemoveMembers {
                    external_id: "g1".into(),
                    display_name: "Sales".into(),
                    members: vec!["u1".into()],
                },
                GroupOp::Rename {
                    external_id: "g1".into(),
                    display_name: "Sales EMEA".into(),
                    email: None,
                    before: "Sales".into(),
                },
            ],
        )
        .unwrap();
        let g = &s.groups("d").unwrap()["g1"];
        assert_eq!(g.display_name, "Sales EMEA");
        assert_eq!(g.members, ["u2".to_string()].into());
        assert!(s.groups("other").unwrap().is_empty());
        s.apply_groups(
            "d",
            "k3",
            &[GroupOp::Remove {
                external_id: "g1".into(),
                display_name: "Sales EMEA".into(),
            }],
        )
        .unwrap();
        assert!(s.groups("d").unwrap().is_empty());
        let members: i64 = s
            .conn
            .as_ref()
            .unwrap()
            .query_row("SELECT count(*) FROM group_members", [], |r| r.get(0))
            .unwrap();
        assert_eq!(members, 0);
    }
}
