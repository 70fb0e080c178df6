//! The SCIM store's mirror: a SQLite file next to the state DB that links each learner
//! (directory, external id) to its SCIM resource id, with the values last pushed and
//! whether it is active. The plan diffs against the mirror; a row is written right
//! after each successful request, so a crash never loses a created resource.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

use crate::model::{Learner, LearnerFields};
use crate::store::StoreError;

/// Append-only.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE scim_learners (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    scim_id TEXT NOT NULL,
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
    updated_at TEXT NOT NULL,
    PRIMARY KEY (directory, external_id)
);
"#,
        ),
        // Runs whose apply started: how a crashed run is told apart from one that sent nothing.
        M::up(
            r#"
CREATE TABLE scim_runs (
    run_key TEXT PRIMARY KEY,
    directory TEXT NOT NULL,
    started_at TEXT NOT NULL
);
"#,
        ),
    ])
}

/// Where the mirror of a state DB lives: `<state_db>.scim-mirror.db`.
pub fn mirror_path(state_db: &Path) -> PathBuf {
    let mut name = state_db.as_os_str().to_owned();
    name.push(".scim-mirror.db");
    PathBuf::from(name)
}

pub struct Mirror {
    conn: Option<Connection>,
    path: PathBuf,
}

/// One mirrored learner: its SCIM id and what the provider was last told.
#[derive(Debug, Clone)]
pub struct Linked {
    pub scim_id: String,
    pub fields: LearnerFields,
    pub active: bool,
}

impl Mirror {
    pub fn open(path: &Path, read_only: bool) -> Result<Mirror, StoreError> {
        // NORMAL in WAL mode: a row survives the process being killed; a power loss may
        // lose the last rows, and the next run re-links those users by lookup.
        let conn = crate::store::sqlite::open_file(path, read_only, "NORMAL", &migrations())?;
        Ok(Mirror {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub fn for_each(
        &self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let mut stmt = conn
            .prepare(
                "SELECT external_id, user_name, email, given_name, family_name, display_name, department, job_title, employee_id, manager_email, active
                 FROM scim_learners WHERE directory = ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok(Learner {
                    external_id: r.get(0)?,
                    fields: fields_from(r, 1)?,
                    active: r.get::<_, i64>(10)? == 1,
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            visit(row.map_err(|e| self.err(e))?);
        }
        Ok(())
    }

    pub fn get(&self, directory: &str, external_id: &str) -> Result<Option<Linked>, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        conn.query_row(
            "SELECT scim_id, user_name, email, given_name, family_name, display_name, department, job_title, employee_id, manager_email, active
             FROM scim_learners WHERE directory = ?1 AND external_id = ?2",
            params![directory, external_id],
            |r| {
                Ok(Linked {
                    scim_id: r.get(0)?,
                    fields: fields_from(r, 1)?,
                    active: r.get::<_, i64>(10)? == 1,
                })
            },
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Record what the provider now holds for one learner (one committed write).
    pub fn upsert(
        &self,
        directory: &str,
        external_id: &str,
        linked: &Linked,
    ) -> Result<(), StoreError> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StoreError::Other("store opened read-only".to_string()))?;
        let f = &linked.fields;
        conn.prepare_cached(
            "INSERT INTO scim_learners (directory, external_id, scim_id, user_name, email, given_name, family_name, display_name, department, job_title, employee_id, manager_email, active, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (directory, external_id) DO UPDATE SET
                scim_id = excluded.scim_id, user_name = excluded.user_name, email = excluded.email,
                given_name = excluded.given_name, family_name = excluded.family_name,
                display_name = excluded.display_name, department = excluded.department,
                job_title = excluded.job_title, employee_id = excluded.employee_id,
                manager_email = excluded.manager_email, active = excluded.active,
                updated_at = excluded.updated_at",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                directory,
                external_id,
                linked.scim_id,
                f.user_name,
                f.email,
                f.given_name,
                f.family_name,
                f.display_name,
                f.department,
                f.job_title,
                f.employee_id,
                f.manager_email,
                linked.active as i64,
                crate::state::now(),
            ])
        })
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// `(userName or email, scim id)` of every linked learner of a directory, for
    /// resolving managers (emails last, so that they win).
    pub fn links(&self, directory: &str) -> Result<Vec<(String, String)>, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(vec![]);
        };
        let mut stmt = conn
            .prepare(
                "SELECT user_name, scim_id FROM scim_learners WHERE directory = ?1
                 UNION ALL SELECT email, scim_id FROM scim_learners WHERE directory = ?1 AND email IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// Record that a run's apply is starting, before anything is sent.
    pub fn begin_run(&self, directory: &str, run_key: &str) -> Result<(), StoreError> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StoreError::Other("store opened read-only".to_string()))?;
        conn.execute(
            "INSERT OR IGNORE INTO scim_runs (run_key, directory, started_at) VALUES (?1, ?2, ?3)",
            params![run_key, directory, crate::state::now()],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Whether a run's apply started (and so may have sent requests).
    pub fn run_started(&self, run_key: &str) -> Result<bool, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(false);
        };
        conn.query_row(
            "SELECT count(*) FROM scim_runs WHERE run_key = ?1",
            [run_key],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| self.err(e))
    }

    pub fn count(&self) -> Result<i64, StoreError> {
        match &self.conn {
            Some(c) => c
                .query_row("SELECT count(*) FROM scim_learners", [], |r| r.get(0))
                .map_err(|e| self.err(e)),
            None => Ok(0),
        }
    }
}

fn fields_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<LearnerFields> {
    Ok(LearnerFields {
        user_name: r.get(at)?,
        email: r.get(at + 1)?,
        given_name: r.get(at + 2)?,
        family_name: r.get(at + 3)?,
        display_name: r.get(at + 4)?,
        department: r.get(at + 5)?,
        job_title: r.get(at + 6)?,
        employee_id: r.get(at + 7)?,
        manager_email: r.get(at + 8)?,
    })
}
