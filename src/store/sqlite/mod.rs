//! The embedded learner store: the documented `learners` table in a SQLite file.
//! A run's operations are applied in one transaction, together with the run's key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

mod groups;

use super::{ApplyReport, StoreError};
use crate::check::CheckLine;
use crate::db;
use crate::model::{Field, Learner, LearnerFields};
use crate::plan::Operation;

/// The triggers that keep `learner_sync_counts` (store migration 3). A bulk write
/// drops them inside its transaction and recreates them from this same text.
macro_rules! count_triggers {
    () => {
        r#"
CREATE TRIGGER learner_sync_counts_insert AFTER INSERT ON learners BEGIN
    INSERT INTO learner_sync_counts (directory, learners, active) VALUES (NEW.directory, 1, NEW.active)
        ON CONFLICT (directory) DO UPDATE SET learners = learners + 1, active = active + excluded.active;
END;
CREATE TRIGGER learner_sync_counts_delete AFTER DELETE ON learners BEGIN
    UPDATE learner_sync_counts SET learners = learners - 1, active = active - OLD.active
        WHERE directory = OLD.directory;
END;
CREATE TRIGGER learner_sync_counts_update AFTER UPDATE OF directory, active ON learners
    WHEN OLD.directory IS NOT NEW.directory OR OLD.active IS NOT NEW.active BEGIN
    UPDATE learner_sync_counts SET learners = learners - 1, active = active - OLD.active
        WHERE directory = OLD.directory;
    INSERT INTO learner_sync_counts (directory, learners, active) VALUES (NEW.directory, 1, NEW.active)
        ON CONFLICT (directory) DO UPDATE SET learners = learners + 1, active = active + excluded.active;
END;
"#
    };
}

/// Append-only. The `learners` table is read by other programs: never change a column.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE learners (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    email TEXT,
    given_name TEXT,
    family_name TEXT,
    display_name TEXT,
    department TEXT,
    job_title TEXT,
    employee_id TEXT,
    manager_email TEXT,
    active INTEGER NOT NULL CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deactivated_at TEXT,
    PRIMARY KEY (directory, external_id)
);
CREATE INDEX learners_by_user_name ON learners(directory, user_name);

-- Which runs reached this store: how a crashed run is told apart from one that applied.
CREATE TABLE learner_sync_runs (
    run_key TEXT PRIMARY KEY,
    directory TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
"#,
        ),
        // This store's identity, made once with the file: a state DB that wrote to
        // another file (deleted, replaced, re-created) sees a different generation.
        M::up(
            r#"
CREATE TABLE learner_sync_store (generation TEXT NOT NULL);
INSERT INTO learner_sync_store (generation) VALUES (lower(hex(randomblob(16))));
"#,
        ),
        // Learners and active learners per directory, kept by triggers in the writes'
        // own transactions: every run asks, and counting walks all of a directory's rows
        // (165-250 ms at 100,000 learners). Triggers also count writes by other programs.
        M::up(concat!(
            r#"
CREATE TABLE learner_sync_counts (
    directory TEXT PRIMARY KEY,
    learners INTEGER NOT NULL,
    active INTEGER NOT NULL
);
INSERT INTO learner_sync_counts (directory, learners, active)
    SELECT directory, count(*), coalesce(sum(active), 0) FROM learners GROUP BY directory;
"#,
            count_triggers!()
        )),
        // Migration 4 (issue 16): the directories' groups and their members (learner
        // external ids, nested groups flattened), for stores whose directories select
        // groups. `learners` is unchanged.
        M::up(
            r#"
CREATE TABLE groups (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (directory, external_id)
);
CREATE TABLE group_members (
    directory TEXT NOT NULL,
    group_external_id TEXT NOT NULL,
    learner_external_id TEXT NOT NULL,
    PRIMARY KEY (directory, group_external_id, learner_external_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_learner ON group_members(directory, learner_external_id);
"#,
        ),
    ])
}

/// The page cache (`PRAGMA cache_size`, negative: KiB) while a large write runs: with
/// SQLite's 2 MB default, one transaction of 100,000s of rows spills dirty pages to
/// the WAL mid-way and writes many of them again (B-tree rebalancing). Back to the
/// default afterwards, so that reading every learner does not keep these pages. 8 MiB
/// wrote a 100,000-learner initial sync as fast as 16 MiB did, with 8 MiB less peak.
const WRITE_CACHE: i64 = -8 * 1024;
const DEFAULT_CACHE: i64 = -2000;
/// Operations from which a write is large.
const LARGE_WRITE: usize = 1000;
/// Operations from which a write is a bulk write, when they are also at least half as
/// many as the directory's learners: the count triggers (a counts-row upsert per row,
/// a quarter of an initial sync's store write) are dropped in the write's transaction,
/// the directory is counted once at the end, and the triggers are recreated before it
/// commits. Nothing outside the transaction ever sees the store without them.
const BULK_WRITE: usize = 10_000;

fn learner_columns() -> String {
    Field::column_list(&["external_id"], &["active"])
}

fn learner_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Learner> {
    Ok(Learner {
        external_id: r.get(0)?,
        fields: LearnerFields::try_from_columns(|i, _| r.get(1 + i))?,
        active: r.get::<_, i64>(1 + Field::ALL.len())? == 1,
    })
}

/// Open a store-side SQLite file: read-only (`None` when it does not exist yet or was
/// never migrated: a dry run sees an empty store), or created, in WAL mode with the
/// given `synchronous` level, and migrated.
pub fn open_file(
    path: &Path,
    read_only: bool,
    synchronous: &str,
    migrations: &Migrations<'_>,
) -> Result<Option<Connection>, StoreError> {
    if read_only {
        return Ok(db::open_read_only(path)?);
    }
    let how = db::Writable {
        wal_synchronous: Some(synchronous),
        foreign_keys: false,
    };
    Ok(Some(db::open_writable(path, how, migrations)?))
}

/// Run keys applied before this are pruned: `KEEP_RUN_KEYS_DAYS` before `now`.
pub(crate) fn prune_before(now: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(now)
        .map(|t| {
            (t - chrono::Duration::days(db::KEEP_RUN_KEYS_DAYS))
                .to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default()
}

pub struct SqliteStore {
    conn: Option<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    pub fn open(path: &Path, read_only: bool) -> Result<SqliteStore, StoreError> {
        // WAL lets the training platform read while a sync writes; FULL makes a
        // committed run survive power loss, which the state DB relies on.
        let conn = open_file(path, read_only, "FULL", &migrations())?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub fn load(&mut self, directory: &str) -> Result<BTreeMap<String, Learner>, StoreError> {
        let mut out = BTreeMap::new();
        self.for_each_learner(directory, &mut |l| {
            out.insert(l.external_id.clone(), l);
        })?;
        Ok(out)
    }

    pub fn for_each_learner(
        &mut self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM learners WHERE directory = ?1",
                learner_columns()
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], learner_from_row)
            .map_err(|e| self.err(e))?;
        for row in rows {
            visit(row.map_err(|e| self.err(e))?);
        }
        Ok(())
    }

    pub fn learners_by_id(
        &mut self,
        directory: &str,
        ids: &std::collections::BTreeSet<String>,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {} FROM learners WHERE directory = ?1 AND external_id = ?2",
                learner_columns()
            ))
            .map_err(|e| self.err(e))?;
        for id in ids {
            let mut rows = stmt
                .query_map(params![directory, id], learner_from_row)
                .map_err(|e| self.err(e))?;
            if let Some(row) = rows.next() {
                visit(row.map_err(|e| self.err(e))?);
            }
        }
        Ok(())
    }

    pub fn counts(&mut self, directory: &str) -> Result<(usize, usize), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok((0, 0));
        };
        // Kept by the triggers of migration 3; a store opened read-only before its
        // first writable open may not have the table yet.
        let kept = conn
            .query_row(
                "SELECT learners, active FROM learner_sync_counts WHERE directory = ?1",
                [directory],
                |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)),
            )
            .optional();
        match kept {
            Ok(Some(counts)) => Ok(counts),
            Ok(None) => Ok((0, 0)),
            Err(_) => conn
                .query_row(
                    "SELECT count(*), coalesce(sum(active), 0) FROM learners WHERE directory = ?1",
                    [directory],
                    |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize)),
                )
                .map_err(|e| self.err(e)),
        }
    }

    /// Apply every operation and record the run, all in one transaction.
    /// Idempotent: replaying the same operations leaves the same rows.
    pub fn apply(
        &mut self,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
    ) -> Result<ApplyReport, StoreError> {
        let path = self.path.display().to_string();
        let e = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Other("store opened read-only".to_string()))?;
        let now = db::now();
        let large = operations.len() >= LARGE_WRITE;
        if large {
            conn.pragma_update(None, "cache_size", WRITE_CACHE)
                .map_err(e)?;
        }
        let applied = Self::apply_in(conn, directory, run_key, operations, &now).map_err(e);
        if large {
            conn.pragma_update(None, "cache_size", DEFAULT_CACHE)
                .map_err(e)?;
        }
        applied?;
        Ok(ApplyReport::default())
    }

    fn apply_in(
        conn: &mut Connection,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
        now: &str,
    ) -> Result<(), rusqlite::Error> {
        // Immediate: the write lock is taken (waiting out the busy timeout) before the
        // count is read. A deferred transaction that reads first cannot upgrade to a
        // write after another connection has written: SQLite answers "database is
        // locked" at once, without waiting (parallel first runs of a fresh store).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let known: i64 = tx.query_row(
            "SELECT coalesce((SELECT learners FROM learner_sync_counts WHERE directory = ?1), 0)",
            [directory],
            |r| r.get(0),
        )?;
        let bulk = operations.len() >= BULK_WRITE && operations.len() as i64 * 2 >= known;
        if bulk {
            tx.execute_batch(
                "DROP TRIGGER learner_sync_counts_insert; DROP TRIGGER learner_sync_counts_delete;
                 DROP TRIGGER learner_sync_counts_update;",
            )?;
        }
        {
            // One statement for every kind: `active` and `deactivated_at` are set from
            // the operation, and `created_at` survives a replayed create.
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO learners (directory, external_id, user_name, email, given_name, family_name, display_name, department, job_title, employee_id, manager_email, active, created_at, updated_at, deactivated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, CASE WHEN ?12 = 0 THEN ?13 END)
                     ON CONFLICT (directory, external_id) DO UPDATE SET
                        user_name = excluded.user_name, email = excluded.email, given_name = excluded.given_name,
                        family_name = excluded.family_name, display_name = excluded.display_name,
                        department = excluded.department, job_title = excluded.job_title,
                        employee_id = excluded.employee_id, manager_email = excluded.manager_email,
                        active = CASE WHEN ?14 THEN excluded.active ELSE learners.active END,
                        deactivated_at = CASE
                            WHEN NOT ?14 THEN learners.deactivated_at
                            WHEN excluded.active = 1 THEN NULL
                            ELSE coalesce(learners.deactivated_at, ?13) END,
                        updated_at = ?13",
                )
                ?;
            for op in operations {
                let f = op.fields();
                let (active, sets_state) = match op {
                    Operation::Create { .. } | Operation::Reactivate { .. } => (1, true),
                    Operation::Deactivate { .. } => (0, true),
                    Operation::Update { .. } => (1, false),
                };
                upsert.execute(params![
                    directory,
                    op.external_id(),
                    f.user_name,
                    f.email,
                    f.given_name,
                    f.family_name,
                    f.display_name,
                    f.department,
                    f.job_title,
                    f.employee_id,
                    f.manager_email,
                    active,
                    now,
                    sets_state
                ])?;
            }
        }
        if bulk {
            // Only this directory's rows were written.
            tx.execute(
                "INSERT INTO learner_sync_counts (directory, learners, active)
                     SELECT ?1, count(*), coalesce(sum(active), 0) FROM learners WHERE directory = ?1
                     ON CONFLICT (directory) DO UPDATE SET learners = excluded.learners, active = excluded.active",
                [directory],
            )?;
            tx.execute_batch(count_triggers!())?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO learner_sync_runs (run_key, directory, applied_at) VALUES (?1, ?2, ?3)",
            params![run_key, directory, now],
        )
        ?;
        // A run key only settles a crashed run of this directory, and the run settles
        // those before it applies: old keys of the directory are no longer needed.
        tx.execute(
            "DELETE FROM learner_sync_runs WHERE directory = ?1 AND run_key <> ?2 AND applied_at < ?3",
            params![directory, run_key, prune_before(now)],
        )
        ?;
        tx.commit()
    }

    /// The store's generation id (`None` before the file exists).
    pub fn generation(&self) -> Result<Option<String>, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        // A file opened read-only may predate the table (the next write migrates it).
        let has_table: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'learner_sync_store'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if !has_table {
            return Ok(None);
        }
        conn.query_row("SELECT generation FROM learner_sync_store", [], |r| {
            r.get(0)
        })
        .map(Some)
        .map_err(|e| self.err(e))
    }

    /// Move a directory's learners to a new name (`rename-directory`), in one
    /// transaction; refuses when `new` already has learners. Returns how many moved.
    pub fn rename_directory(&mut self, old: &str, new: &str) -> Result<usize, StoreError> {
        super::rename_directory(
            self.conn.as_mut(),
            &self.path,
            "learners",
            &["learner_sync_runs", "groups", "group_members"],
            old,
            new,
        )
    }

    pub fn was_applied(&mut self, run_key: &str) -> Result<bool, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(false);
        };
        conn.query_row(
            "SELECT count(*) FROM learner_sync_runs WHERE run_key = ?1",
            [run_key],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| self.err(e))
    }

    pub fn check(&self) -> CheckLine {
        match &self.conn {
            Some(c) => {
                match c.query_row("SELECT count(*) FROM learners", [], |r| r.get::<_, i64>(0)) {
                    Ok(n) => CheckLine::ok(format!(
                        "sqlite store {}: {n} learners",
                        self.path.display()
                    )),
                    Err(e) => CheckLine::failed(
                        format!("sqlite store {}: {e}", self.path.display()),
                        "check the file's permissions and that it is a learner-sync store",
                    ),
                }
            }
            None => CheckLine::ok(format!(
                "sqlite store {}: not created yet (the first sync creates it)",
                self.path.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(id: &str) -> Operation {
        Operation::Create {
            external_id: id.into(),
            fields: LearnerFields {
                user_name: format!("{id}@x.io"),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_directorys_run_keys_older_than_the_retention_are_pruned_when_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.db"), false).unwrap();
        store.apply("hr", "old", &[create("1")]).unwrap();
        store.apply("it", "other", &[create("2")]).unwrap();
        let conn = store.conn.as_ref().unwrap();
        conn.execute(
            "UPDATE learner_sync_runs SET applied_at = '2000-01-01T00:00:00Z'",
            [],
        )
        .unwrap();
        store.apply("hr", "new", &[create("3")]).unwrap();
        assert!(!store.was_applied("old").unwrap(), "pruned");
        assert!(store.was_applied("new").unwrap());
        // Another directory's key waits for that directory's own run.
        assert!(store.was_applied("other").unwrap());
    }

    #[test]
    fn a_new_store_has_a_generation_and_another_file_another() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(&dir.path().join("a.db"), false).unwrap();
        let b = SqliteStore::open(&dir.path().join("b.db"), false).unwrap();
        let (ga, gb) = (a.generation().unwrap(), b.generation().unwrap());
        assert!(ga.as_ref().is_some_and(|g| g.len() == 32), "{ga:?}");
        assert_ne!(ga, gb);
        drop(a);
        let again = SqliteStore::open(&dir.path().join("a.db"), false).unwrap();
        assert_eq!(again.generation().unwrap(), ga);
    }

    #[test]
    fn a_store_of_the_first_schema_opened_read_only_has_no_generation_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let store = SqliteStore::open(&path, false).unwrap();
        store
            .conn
            .as_ref()
            .unwrap()
            .execute_batch(
                "DROP TRIGGER learner_sync_counts_insert; DROP TRIGGER learner_sync_counts_delete;
                 DROP TRIGGER learner_sync_counts_update; DROP TABLE learner_sync_counts;
                 DROP TABLE learner_sync_store; DROP TABLE group_members; DROP TABLE groups;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        drop(store);
        let mut read_only = SqliteStore::open(&path, true).unwrap();
        assert_eq!(read_only.generation().unwrap(), None);
        // Without the kept counts, it counts the rows.
        assert_eq!(read_only.counts("d").unwrap(), (0, 0));
        // The next write migrates it and it gets one.
        let store = SqliteStore::open(&path, false).unwrap();
        assert!(store.generation().unwrap().is_some());
    }

    #[test]
    fn the_kept_counts_follow_every_write_and_a_migrated_store_starts_from_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::open(&path, false).unwrap();
        let op = |id: &str, kind: &str| {
            let fields = LearnerFields {
                user_name: format!("{id}@x"),
                ..Default::default()
            };
            let external_id = id.to_string();
            match kind {
                "create" => Operation::Create {
                    external_id,
                    fields,
                },
                "reactivate" => Operation::Reactivate {
                    external_id,
                    fields,
                    changes: vec![],
                },
                _ => Operation::Deactivate {
                    external_id,
                    fields,
                    changes: vec![],
                    reason: crate::model::DeactivationReason::DeletedInDirectory,
                },
            }
        };
        let ops = [op("1", "create"), op("2", "create"), op("3", "create")];
        store.apply("d", "k1", &ops).unwrap();
        store.apply("e", "k2", &[op("9", "create")]).unwrap();
        assert_eq!(store.counts("d").unwrap(), (3, 3));
        store.apply("d", "k3", &[op("2", "deactivate")]).unwrap();
        // A replayed deactivation changes nothing.
        store.apply("d", "k4", &[op("2", "deactivate")]).unwrap();
        assert_eq!(store.counts("d").unwrap(), (3, 2));
        store.apply("d", "k5", &[op("2", "reactivate")]).unwrap();
        assert_eq!(store.counts("d").unwrap(), (3, 3));
        // Another program deletes a row or moves one to another directory.
        let conn = store.conn.as_ref().unwrap();
        conn.execute("DELETE FROM learners WHERE external_id = '1'", [])
            .unwrap();
        conn.execute(
            "UPDATE learners SET directory = 'e', active = 0 WHERE external_id = '3'",
            [],
        )
        .unwrap();
        assert_eq!(store.counts("d").unwrap(), (1, 1));
        assert_eq!(store.counts("e").unwrap(), (2, 1));
        assert_eq!(store.counts("none").unwrap(), (0, 0));
        // A store from before the kept counts gets them from its rows.
        store
            .conn
            .as_ref()
            .unwrap()
            .execute_batch(
                "DROP TRIGGER learner_sync_counts_insert; DROP TRIGGER learner_sync_counts_delete;
                 DROP TRIGGER learner_sync_counts_update; DROP TABLE learner_sync_counts;
                 DROP TABLE group_members; DROP TABLE groups; PRAGMA user_version = 2;",
            )
            .unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path, false).unwrap();
        assert_eq!(store.counts("e").unwrap(), (2, 1));
        assert_eq!(store.counts("d").unwrap(), (1, 1));
    }

    #[test]
    fn a_bulk_write_counts_its_directory_once_and_leaves_the_triggers_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.db"), false).unwrap();
        let fields = |id: &str| LearnerFields {
            user_name: format!("{id}@x"),
            ..Default::default()
        };
        let creates: Vec<Operation> = (0..BULK_WRITE)
            .map(|i| Operation::Create {
                external_id: format!("{i:05}"),
                fields: fields(&format!("{i:05}")),
            })
            .collect();
        store.apply("e", "k0", &creates[..2]).unwrap();
        store.apply("d", "k1", &creates).unwrap();
        assert_eq!(store.counts("d").unwrap(), (BULK_WRITE, BULK_WRITE));
        assert_eq!(store.counts("e").unwrap(), (2, 2));
        // A replay of the same bulk write, and a bulk deactivation of half of them.
        store.apply("d", "k1", &creates).unwrap();
        let deactivations: Vec<Operation> = creates
            .iter()
            .step_by(2)
            .map(|op| Operation::Deactivate {
                external_id: op.external_id().to_string(),
                fields: op.fields().clone(),
                changes: vec![],
                reason: crate::model::DeactivationReason::DeletedInDirectory,
            })
            .collect();
        store.apply("d", "k2", &deactivations).unwrap();
        assert_eq!(store.counts("d").unwrap(), (BULK_WRITE, BULK_WRITE / 2));
        // The triggers are back: another program's writes are still counted.
        let conn = store.conn.as_ref().unwrap();
        let triggers: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'learner_sync_counts_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(triggers, 3);
        conn.execute(
            "DELETE FROM learners WHERE directory = 'd' AND external_id = '00001'",
            [],
        )
        .unwrap();
        assert_eq!(
            store.counts("d").unwrap(),
            (BULK_WRITE - 1, BULK_WRITE / 2 - 1)
        );
    }
}
