//! Shared helpers for the end-to-end tests: a temp folder with a config, and the
//! real binary run against it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// Run `learner-sync ARGS --config <env>/config.toml`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        self.command(args, envs).output().expect("run learner-sync")
    }

    /// `learner-sync ARGS --config <env>/config.toml` in the env's folder, with `envs`
    /// and without the test process's own config or fault point.
    pub fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.config())
            .env_remove("LEARNER_SYNC_CONFIG")
            .env_remove("LEARNER_SYNC_FAULT")
            .current_dir(self.dir.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// [`Env::command`] started in the background, its output discarded (to be killed).
    pub fn spawn_quiet(&self, args: &[&str], envs: &[(&str, &str)]) -> Child {
        self.command(args, envs)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn learner-sync")
    }

    /// Rows of the learner store: `SELECT <cols> FROM learners ... ORDER BY external_id`.
    pub fn learners(&self, store: &str, directory: &str) -> Vec<Row> {
        learners(&self.path(store), directory)
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_learner-sync")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub external_id: String,
    pub user_name: String,
    pub email: Option<String>,
    pub department: Option<String>,
    pub active: bool,
    pub deactivated_at: Option<String>,
}

pub fn learners(db: &Path, directory: &str) -> Vec<Row> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open store");
    let mut stmt = conn
        .prepare("SELECT external_id, user_name, email, department, active, deactivated_at FROM learners WHERE directory = ?1 ORDER BY external_id")
        .expect("prepare");
    stmt.query_map([directory], |r| {
        Ok(Row {
            external_id: r.get(0)?,
            user_name: r.get(1)?,
            email: r.get(2)?,
            department: r.get(3)?,
            active: r.get::<_, i64>(4)? == 1,
            deactivated_at: r.get(5)?,
        })
    })
    .expect("query")
    .collect::<Result<Vec<_>, _>>()
    .expect("rows")
}

/// The learners of a directory in a PostgreSQL store, as `learners` reads them from a
/// SQLite one (none before the first sync made the table).
pub fn pg_learners(url: &str, directory: &str) -> Vec<Row> {
    let psql = crate::support::postgres::psql;
    if psql(url, "SELECT to_regclass('learners') IS NULL") == "t" {
        return vec![];
    }
    let sql = format!(
        "SELECT coalesce(json_agg(t ORDER BY external_id), '[]') FROM (SELECT external_id, user_name, email, department, active, deactivated_at FROM learners WHERE directory = '{}') t",
        directory.replace('\'', "''")
    );
    let json = psql(url, &sql);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("json_agg");
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    rows.iter()
        .map(|r| Row {
            external_id: text(&r["external_id"]).unwrap(),
            user_name: text(&r["user_name"]).unwrap(),
            email: text(&r["email"]),
            department: text(&r["department"]),
            active: r["active"] == 1,
            deactivated_at: text(&r["deactivated_at"]),
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Every row of a query on a SQLite file (opened read-only), parameters bound, each
/// column as text (integers in decimal, NULL as None).
pub fn rows(db: &Path, query: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    let mut stmt = conn.prepare(query).expect("prepare");
    let n = stmt.column_count();
    stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => None,
                    rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                    rusqlite::types::Value::Text(t) => Some(t),
                    other => Some(format!("{other:?}")),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("query")
    .collect::<Result<Vec<_>, _>>()
    .expect("rows")
}

/// [`rows`] of a query without parameters on `db` in the env's folder.
pub fn sql(env: &Env, db: &str, query: &str) -> Vec<Vec<Option<String>>> {
    rows(&env.path(db), query, &[])
}

/// Exit 0, or a failure that shows both streams.
pub fn assert_ok(out: &Output) {
    assert_eq!(
        code(out),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// One column of one learner in the env's `learners.db` (`None`: no such learner, or NULL).
pub fn column(env: &Env, directory: &str, external_id: &str, col: &str) -> Option<String> {
    rows(
        &env.path("learners.db"),
        &format!("SELECT {col} FROM learners WHERE directory = ?1 AND external_id = ?2"),
        &[directory, external_id],
    )
    .into_iter()
    .next()
    .and_then(|r| r.into_iter().next().flatten())
}

/// (external_id, action, reason) of the last run's actions in the env's `state.db`.
pub fn last_actions(env: &Env) -> Vec<(String, String, String)> {
    sql(
        env,
        "state.db",
        "SELECT external_id, action, reason FROM actions WHERE run_id = (SELECT MAX(run_id) FROM actions) ORDER BY external_id",
    )
    .into_iter()
    .map(|r| {
        let v: Vec<String> = r.into_iter().map(Option::unwrap_or_default).collect();
        (v[0].clone(), v[1].clone(), v[2].clone())
    })
    .collect()
}

pub mod config_builder;
pub mod daemon;
pub use config_builder::ConfigBuilder;

impl ConfigBuilder {
    /// Write it as the env's `config.toml`.
    pub fn write(&self, env: &Env) -> PathBuf {
        env.write("config.toml", &self.build())
    }
}
pub mod world;
