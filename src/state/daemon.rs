//! The running daemon's row in the state DB: its pid, heartbeat, config generation,
//! last reload error and each directory's next scheduled run, for `status`.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{State, StateError};

/// What the daemon last wrote about itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DaemonRow {
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
    /// 1 for the config the daemon started with, +1 per successful reload.
    pub generation: i64,
    pub last_reload_error: Option<String>,
    /// Directory -> RFC 3339 time of its next scheduled run.
    pub next_runs: BTreeMap<String, String>,
}

impl State {
    /// Write the daemon's row (one daemon per state DB: the row is replaced).
    pub fn write_daemon(&mut self, row: &DaemonRow) -> Result<(), StateError> {
        let next_runs = serde_json::to_string(&row.next_runs).unwrap_or_else(|_| "{}".into());
        self.conn
            .execute(
                "INSERT INTO daemon (id, pid, started_at, heartbeat_at, generation, last_reload_error, next_runs)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(id) DO UPDATE SET pid = ?1, started_at = ?2, heartbeat_at = ?3,
                   generation = ?4, last_reload_error = ?5, next_runs = ?6",
                params![
                    row.pid,
                    row.started_at,
                    row.heartbeat_at,
                    row.generation,
                    row.last_reload_error,
                    next_runs
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remove the row of daemon `pid` as it stops (another daemon's row stays).
    pub fn clear_daemon(&mut self, pid: i64) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM daemon WHERE id = 1 AND pid = ?1", [pid])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The daemon's row, if a daemon wrote one (and did not clear it).
    pub fn daemon(&self) -> Result<Option<DaemonRow>, StateError> {
        let has_table: bool = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'daemon'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))?;
        if !has_table {
            // A state DB no daemon of this version has opened yet.
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT pid, started_at, heartbeat_at, generation, last_reload_error, next_runs FROM daemon WHERE id = 1",
                [],
                |r| {
                    let next: String = r.get(5)?;
                    Ok(DaemonRow {
                        pid: r.get(0)?,
                        started_at: r.get(1)?,
                        heartbeat_at: r.get(2)?,
                        generation: r.get(3)?,
                        last_reload_error: r.get(4)?,
                        next_runs: serde_json::from_str(&next).unwrap_or_default(),
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

/// A run of a directory not finished yet: in progress, or left by a crash.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpenRun {
    pub id: i64,
    pub kind: String,
    pub started_at: String,
}

impl State {
    /// The directory's newest run still marked running.
    pub fn open_run(&self, directory: &str) -> Result<Option<OpenRun>, StateError> {
        self.conn
            .query_row(
                "SELECT id, kind, started_at FROM runs WHERE directory = ?1 AND outcome = 'running' ORDER BY id DESC LIMIT 1",
                [directory],
                |r| {
                    Ok(OpenRun {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        started_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

/// One `approve`: who ran it, when, and what it released.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Approval {
    pub directory: String,
    /// The approve's run, when it applied something (a directory hold has none).
    pub run_id: Option<i64>,
    pub approved_by: String,
    pub approved_at: String,
    pub what: String,
}

impl State {
    pub fn record_approval(&mut self, a: &Approval) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO approvals (directory, run_id, approved_by, approved_at, what) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.directory, a.run_id, a.approved_by, a.approved_at, a.what],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every approval of `directory` (all directories if `None`), newest first.
    pub fn approvals(&self, directory: Option<&str>) -> Result<Vec<Approval>, StateError> {
        let has_table: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'approvals'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if has_table == 0 {
            return Ok(vec![]);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT directory, run_id, approved_by, approved_at, what FROM approvals
                 WHERE ?1 IS NULL OR directory = ?1 ORDER BY id DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok(Approval {
                    directory: r.get(0)?,
                    run_id: r.get(1)?,
                    approved_by: r.get(2)?,
                    approved_at: r.get(3)?,
                    what: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

/// Who runs this command: the admin behind `sudo` ($SUDO_USER), else the uid's name.
pub fn invoking_user() -> String {
    if let Ok(u) = std::env::var("SUDO_USER") {
        if !u.is_empty() {
            return u;
        }
    }
    // SAFETY: getuid(2) cannot fail; getpwuid_r writes only into the buffers given.
    let uid = unsafe { libc::getuid() };
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    format!("uid {uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_row_is_replaced_and_cleared_only_by_its_own_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(st.daemon().unwrap(), None);
        let mut row = DaemonRow {
            pid: 10,
            started_at: "2026-12-01T00:00:00Z".into(),
            heartbeat_at: "2026-12-01T00:00:05Z".into(),
            generation: 1,
            last_reload_error: None,
            next_runs: BTreeMap::from([("hr".into(), "2026-12-01T01:00:00Z".into())]),
        };
        st.write_daemon(&row).unwrap();
        row.generation = 2;
        row.last_reload_error = Some("config.toml:3: sync.x: unknown".into());
        st.write_daemon(&row).unwrap();
        assert_eq!(st.daemon().unwrap(), Some(row.clone()));
        st.clear_daemon(11).unwrap();
        assert_eq!(st.daemon().unwrap(), Some(row));
        st.clear_daemon(10).unwrap();
        assert_eq!(st.daemon().unwrap(), None);
    }
}
