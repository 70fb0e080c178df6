//! The state DB: per-directory snapshot, cursors, runs, the action log and held
//! deactivations. One SQLite file (`sync.state_db`).

pub mod daemon;
pub mod groups;
mod migrations;
pub mod pending;
pub mod query;
mod snapshot_reader;

pub use snapshot_reader::SnapshotReader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::applied::Applied;
use crate::db::{self, DbError};
use crate::model::DirectoryUser;
use crate::plan::{ActionKind, Operation};
use crate::source::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state DB {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state DB {}: {message}", path.display())]
    Other { path: PathBuf, message: String },
    #[error("state DB {0}")]
    Open(#[from] DbError),
}

impl StateError {
    /// Only a lock another process holds goes away by itself.
    pub fn is_permanent(&self) -> bool {
        match self {
            StateError::Sqlite { source, .. } => !db::is_busy(source),
            StateError::Other { .. } => true,
            StateError::Open(e) => e.is_permanent(),
        }
    }
}

pub struct State {
    conn: Connection,
    path: PathBuf,
}

/// How a run ended, as `runs.outcome` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Held,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Held => "held",
            Outcome::Failed => "failed",
        }
    }
}

/// Counts recorded with a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub deactivated: usize,
    pub reactivated: usize,
    pub held: usize,
    pub unchanged: usize,
    pub failed: usize,
    /// Of `created`, the learners whose SCIM user already existed and was adopted
    /// (printed in the run's line; not kept in the runs table).
    pub adopted: usize,
}

/// What a directory's cursor and snapshot were read from and which store its runs
/// wrote to (see `run::binding`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Fingerprint of the directory's origin (kind, tenant or customer, hosts, path).
    pub origin: Option<String>,
    /// Fingerprint of the store (kind, url or path, the store's own marker).
    pub store: Option<String>,
    /// The learners of the directory in the store after the last run.
    pub store_learners: Option<u64>,
}

/// What a run commits after its operations reached the store.
pub struct RunCommit<'a> {
    pub run_id: i64,
    pub directory: &'a str,
    pub outcome: Outcome,
    pub counts: Counts,
    pub requests: u64,
    /// Snapshot rows to remove.
    pub snapshot_deletes: &'a [String],
    /// `Some(cursor)` replaces the stored cursor (`Some(None)` clears it).
    pub cursor: Option<Option<String>>,
    pub full_read: bool,
    pub held: &'a [Operation],
    /// The learners the run evaluated (a delta run), or `None` for all of them. Holds
    /// of learners the run did not look at stay until `approve` or a run that does.
    pub evaluated: Option<&'a std::collections::BTreeSet<String>>,
    pub hold_reason: Option<String>,
    /// What the run read from and wrote to, recorded with the cursor (a sync run).
    pub binding: Option<Binding>,
    /// Field changes held by the mass-update guard (replace the directory's previous
    /// ones), and each held field's reason.
    pub held_updates: &'a [Operation],
    pub update_hold_reasons: &'a BTreeMap<String, String>,
    /// `Some(reason)` holds the directory's creates (it looks renamed), `Some(None)`
    /// clears such a hold, `None` leaves it as it is.
    pub directory_hold: Option<Option<String>>,
    /// Operations the store refused, with the store's explanation.
    pub failed: &'a [(String, String)],
    pub error: Option<String>,
}

/// The page cache (`PRAGMA cache_size`, negative: KiB) of the main schema from a run's first large write (100,000s of staged rows or actions in one
/// transaction spill pages with SQLite's 2 MB default) to its commit, when it goes
/// back to the default: a run that only reads keeps no more pages than before. 8 MiB
/// staged, journalled and committed 100,000 users as fast as 16 MiB did.
const WRITE_CACHE: i64 = -8 * 1024;
const DEFAULT_CACHE: i64 = -2000;
/// Rows from which a write is large.
const LARGE_WRITE: usize = 1000;

/// Empty the stage of `directory`. When it is the only directory staged (a run has
/// its own connection, so usually), the whole table is emptied at once: SQLite then
/// drops its pages instead of deleting 100,000 rows one by one.
fn clear_stage(tx: &rusqlite::Transaction<'_>, directory: &str) -> rusqlite::Result<()> {
    let (first, last): (Option<String>, Option<String>) = tx.query_row(
        "SELECT min(directory), max(directory) FROM temp.snapshot_stage",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let only_this = [first, last].iter().flatten().all(|d| d == directory);
    if only_this {
        tx.execute("DELETE FROM temp.snapshot_stage", [])?;
    } else {
        tx.execute(
            "DELETE FROM temp.snapshot_stage WHERE directory = ?1",
            [directory],
        )?;
    }
    Ok(())
}

/// The digest of a user's JSON form, as the snapshot compares rows. Owned here so
/// that every caller compares like with like.
pub fn digest(json: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// Digests of the JSON form of each user, as `State::snapshot_digests` reads them.
pub fn digests(snapshot: &Snapshot) -> BTreeMap<String, u64> {
    snapshot
        .iter()
        .map(|(id, u)| {
            (
                id.clone(),
                digest(&serde_json::to_string(u).unwrap_or_default()),
            )
        })
        .collect()
}

impl State {
    /// Open (creating and migrating) the state DB.
    pub fn open(path: &Path) -> Result<State, StateError> {
        let conn = db::open_writable(
            path,
            db::Writable {
                wal_synchronous: None,
                foreign_keys: true,
            },
            &migrations::migrations(),
        )?;
        // Where a run stages its snapshot rows until it commits (see `stage_snapshot`).
        conn.execute_batch(
            "CREATE TEMP TABLE snapshot_stage (
                directory TEXT NOT NULL, external_id TEXT NOT NULL, user TEXT NOT NULL,
                PRIMARY KEY (directory, external_id)) WITHOUT ROWID",
        )
        .map_err(|source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(State {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Open for reading only (dry runs, status, history): never creates or migrates.
    /// `None` when the file does not exist yet.
    pub fn open_read_only(path: &Path) -> Result<Option<State>, StateError> {
        Ok(db::open_read_only(path)?.map(|conn| State {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// Set the page cache of the main schema (see [`WRITE_CACHE`]). The temp schema,
    /// where rows are staged, keeps its default: a larger one cost 15 MiB and no time.
    fn write_cache(&self, kib: i64) -> rusqlite::Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA main.cache_size = {kib};"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    pub fn load_snapshot(&self, directory: &str) -> Result<Snapshot, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT external_id, user FROM snapshot WHERE directory = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (id, json) = row.map_err(|e| self.err(e))?;
            let user: DirectoryUser =
                serde_json::from_str(&json).map_err(|e| StateError::Other {
                    path: self.path.clone(),
                    message: format!("snapshot row {directory}/{id} is corrupt: {e}"),
                })?;
            out.insert(id, user);
        }
        Ok(out)
    }

    /// Stage the snapshot rows a run will write: users whose JSON digest differs from
    /// `before`. Staged rows live in a temp table of this connection until
    /// `commit_run` moves them.
    pub fn stage_snapshot(
        &mut self,
        directory: &str,
        before: &BTreeMap<String, u64>,
        after: &Snapshot,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        if after.len() >= LARGE_WRITE {
            self.write_cache(WRITE_CACHE).map_err(e)?;
        }
        let tx = self.conn.transaction().map_err(e)?;
        clear_stage(&tx, directory).map_err(e)?;
        {
            let mut ins = tx
                .prepare_cached("INSERT INTO temp.snapshot_stage (directory, external_id, user) VALUES (?1, ?2, ?3)")
                .map_err(e)?;
            // One buffer for every row's JSON; the digest only where there is one to
            // compare with (an initial sync has none).
            let mut json = Vec::with_capacity(1024);
            for (id, user) in after {
                json.clear();
                serde_json::to_writer(&mut json, user).map_err(|err| StateError::Other {
                    path: path.clone(),
                    message: err.to_string(),
                })?;
                let text = std::str::from_utf8(&json).map_err(|err| StateError::Other {
                    path: path.clone(),
                    message: err.to_string(),
                })?;
                let unchanged = before.get(id).is_some_and(|d| *d == digest(text));
                if !unchanged {
                    ins.execute(params![directory, id, text]).map_err(e)?;
                }
            }
        }
        tx.commit().map_err(e)
    }

    /// A digest of each stored user's JSON, to find what a complete listing changed
    /// without parsing every row.
    pub fn snapshot_digests(&self, directory: &str) -> Result<BTreeMap<String, u64>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT external_id, user FROM snapshot WHERE directory = ?1")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([directory]).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let id: String = row.get(0).map_err(|e| self.err(e))?;
            let json = row
                .get_ref(1)
                .and_then(|v| v.as_str().map_err(Into::into))
                .map_err(|e| self.err(e))?;
            out.insert(id, digest(json));
        }
        Ok(out)
    }

    /// What the cursor and snapshot of a directory are bound to (`None`: never recorded).
    pub fn binding(&self, directory: &str) -> Result<Option<Binding>, StateError> {
        self.conn
            .query_row(
                "SELECT origin, store, store_learners FROM cursors WHERE directory = ?1",
                [directory],
                |r| {
                    Ok(Binding {
                        origin: r.get(0)?,
                        store: r.get(1)?,
                        store_learners: r.get::<_, Option<i64>>(2)?.map(|n| n as u64),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The stored cursor and when the last full read happened.
    pub fn cursor(&self, directory: &str) -> Result<(Option<String>, Option<String>), StateError> {
        self.conn
            .query_row(
                "SELECT cursor, full_read_at FROM cursors WHERE directory = ?1",
                [directory],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map(|o| o.unwrap_or((None, None)))
            .map_err(|e| self.err(e))
    }

    /// Runs that started but never finished (the process died): `(id, run_key)`.
    pub fn unfinished_runs(&self, directory: &str) -> Result<Vec<(i64, String)>, StateError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, run_key FROM runs WHERE directory = ?1 AND outcome = 'running' ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Close an unfinished run. What of its operations reached the store stays in the
    /// action log (`interrupted`); what did not never happened and is removed (and a
    /// run of which nothing landed is `aborted`). The next run plans the rest again.
    pub fn resolve_unfinished(&mut self, run_id: i64, applied: &Applied) -> Result<(), StateError> {
        let path = self.path.clone();
        let sql = |e| StateError::Sqlite {
            path: path.clone(),
            source: e,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let outcome = match applied {
            Applied::Nothing => "aborted",
            Applied::Only(landed) if landed.is_empty() => "aborted",
            _ => "interrupted",
        };
        tx.execute(
            "UPDATE runs SET outcome = ?2, finished_at = ?3, error = 'the process stopped before the run finished' WHERE id = ?1",
            params![run_id, outcome, db::now()],
        )
        .map_err(sql)?;
        match (applied, outcome) {
            (Applied::All, _) => {}
            // Nothing landed: the run never happened.
            (Applied::Nothing, _) | (_, "aborted") => {
                tx.execute("DELETE FROM actions WHERE run_id = ?1", [run_id])
                    .map_err(sql)?;
            }
            (Applied::Only(landed), _) => {
                // `held` records a decision of the run, not a write to the store.
                let unlanded: Vec<i64> = {
                    let mut stmt = tx
                        .prepare("SELECT id, external_id FROM actions WHERE run_id = ?1 AND action <> 'held'")
                        .map_err(sql)?;
                    let rows = stmt
                        .query_map([run_id], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                        })
                        .map_err(sql)?
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(sql)?;
                    rows.into_iter()
                        .filter(|(_, ext)| !landed.contains(ext))
                        .map(|(id, _)| id)
                        .collect()
                };
                let mut delete = tx
                    .prepare("DELETE FROM actions WHERE id = ?1")
                    .map_err(sql)?;
                for id in unlanded {
                    delete.execute([id]).map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)
    }

    /// Record the start of a run and the operations it is about to apply, in one
    /// transaction, before anything reaches the store.
    pub fn begin_run(
        &mut self,
        directory: &str,
        run_key: &str,
        kind: &str,
        full_read: bool,
        operations: &[Operation],
        held: &[Operation],
    ) -> Result<i64, StateError> {
        let path = self.path.clone();
        let e = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        if operations.len() + held.len() >= LARGE_WRITE {
            self.write_cache(WRITE_CACHE).map_err(e)?;
        }
        let tx = self.conn.transaction().map_err(e)?;
        let time = db::now();
        tx.execute(
            "INSERT INTO runs (run_key, directory, kind, started_at, outcome, full_read) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
            params![run_key, directory, kind, time, full_read],
        )
        .map_err(e)?;
        let run_id = tx.last_insert_rowid();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO actions (run_id, time, directory, external_id, user_name, action, reason, changes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(e)?;
            let rows = operations
                .iter()
                .map(|op| (op, op.kind()))
                .chain(held.iter().map(|op| (op, ActionKind::Held)));
            for (op, kind) in rows {
                let changes = serde_json::to_string(op.changes()).unwrap_or_else(|_| "[]".into());
                ins.execute(params![
                    run_id,
                    time,
                    directory,
                    op.external_id(),
                    op.fields().user_name,
                    kind.as_str(),
                    op.reason(),
                    changes
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        Ok(run_id)
    }

    /// Record a run that failed before it could apply anything.
    pub fn record_failed_run(
        &mut self,
        directory: &str,
        run_key: &str,
        requests: u64,
        error: &str,
    ) -> Result<i64, StateError> {
        let time = db::now();
        self.conn
            .execute(
                "INSERT INTO runs (run_key, directory, kind, started_at, finished_at, outcome, requests, error) VALUES (?1, ?2, 'sync', ?3, ?3, 'failed', ?4, ?5)",
                params![run_key, directory, time, requests as i64, error],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Commit a run whose operations reached the store: snapshot, cursor, held
    /// deactivations and outcome, in one transaction.
    pub fn commit_run(&mut self, c: RunCommit<'_>) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let time = db::now();
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO snapshot (directory, external_id, user)
                     SELECT directory, external_id, user FROM temp.snapshot_stage WHERE directory = ?1
                     ON CONFLICT (directory, external_id) DO UPDATE SET user = excluded.user",
                )
                .map_err(e)?;
            upsert.execute([c.directory]).map_err(e)?;
            clear_stage(&tx, c.directory).map_err(e)?;
        }
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM snapshot WHERE directory = ?1 AND external_id = ?2")
                .map_err(e)?;
            for id in c.snapshot_deletes {
                delete.execute(params![c.directory, id]).map_err(e)?;
            }
        }
        if let Some(cursor) = &c.cursor {
            tx.execute(
                "INSERT INTO cursors (directory, cursor) VALUES (?1, ?2) ON CONFLICT (directory) DO UPDATE SET cursor = excluded.cursor",
                params![c.directory, cursor],
            )
            .map_err(e)?;
        }
        if let Some(b) = &c.binding {
            tx.execute(
                "INSERT INTO cursors (directory, origin, store, store_learners) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (directory) DO UPDATE SET origin = excluded.origin, store = excluded.store, store_learners = excluded.store_learners",
                params![c.directory, b.origin, b.store, b.store_learners.map(|n| n as i64)],
            )
            .map_err(e)?;
        }
        if c.full_read {
            tx.execute(
                "INSERT INTO cursors (directory, full_read_at) VALUES (?1, ?2) ON CONFLICT (directory) DO UPDATE SET full_read_at = excluded.full_read_at",
                params![c.directory, time],
            )
            .map_err(e)?;
        }
        match c.evaluated {
            None => {
                tx.execute("DELETE FROM held WHERE directory = ?1", [c.directory])
                    .map_err(e)?;
            }
            Some(ids) => {
                let mut delete = tx
                    .prepare_cached("DELETE FROM held WHERE directory = ?1 AND external_id = ?2")
                    .map_err(e)?;
                for id in ids {
                    delete.execute(params![c.directory, id]).map_err(e)?;
                }
            }
        }
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO held (directory, external_id, user_name, reason, hold_reason, run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(e)?;
            for op in c.held {
                ins.execute(params![
                    c.directory,
                    op.external_id(),
                    op.fields().user_name,
                    op.reason(),
                    c.hold_reason.as_deref().unwrap_or(""),
                    c.run_id
                ])
                .map_err(e)?;
            }
        }
        query::record_holds(&tx, &c).map_err(e)?;
        {
            let mut fail = tx
                .prepare_cached(
                    "UPDATE actions SET action = 'failed', reason = ?3 WHERE run_id = ?1 AND external_id = ?2",
                )
                .map_err(e)?;
            for (id, detail) in c.failed {
                fail.execute(params![c.run_id, id, detail]).map_err(e)?;
            }
        }
        let n = |v: usize| v as i64;
        tx.execute(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, created = ?4, updated = ?5, deactivated = ?6, reactivated = ?7, held = ?8, unchanged = ?9, failed = ?10, requests = ?11, error = ?12 WHERE id = ?1",
            params![
                c.run_id,
                time,
                c.outcome.as_str(),
                n(c.counts.created),
                n(c.counts.updated),
                n(c.counts.deactivated),
                n(c.counts.reactivated),
                n(c.counts.held),
                n(c.counts.unchanged),
                n(c.counts.failed),
                c.requests as i64,
                c.error
            ],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        self.write_cache(DEFAULT_CACHE).map_err(e)
    }
}

impl State {
    /// Forget the delta cursor of a directory: its next run reads everything.
    pub fn drop_cursor(&mut self, directory: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE cursors SET cursor = NULL WHERE directory = ?1",
                [directory],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Mark a run failed (after `resolve_unfinished` removed what it never applied).
    pub fn mark_failed(&mut self, run_id: i64, error: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE runs SET outcome = 'failed', finished_at = ?2, error = ?3 WHERE id = ?1",
                params![run_id, db::now(), error],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    #[test]
    fn clearing_one_directorys_stage_keeps_another_ones_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("state.db")).unwrap();
        for (d, n) in [("a", 3), ("b", 2)] {
            for i in 0..n {
                st.conn
                    .execute(
                        "INSERT INTO temp.snapshot_stage (directory, external_id, user) VALUES (?1, ?2, '{}')",
                        params![d, i],
                    )
                    .unwrap();
            }
        }
        let staged = |st: &State, d: &str| -> i64 {
            st.conn
                .query_row(
                    "SELECT count(*) FROM temp.snapshot_stage WHERE directory = ?1",
                    [d],
                    |r| r.get(0),
                )
                .unwrap()
        };
        let tx = st.conn.transaction().unwrap();
        clear_stage(&tx, "a").unwrap();
        tx.commit().unwrap();
        assert_eq!((staged(&st, "a"), staged(&st, "b")), (0, 2));
        // The only directory left: the whole table is emptied.
        let tx = st.conn.transaction().unwrap();
        clear_stage(&tx, "b").unwrap();
        tx.commit().unwrap();
        assert_eq!(staged(&st, "b"), 0);
    }
}
