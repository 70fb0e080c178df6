//! The daemon's row in the state DB (pid, heartbeat, config generation, last reload
//! error, next runs), which `status` reads to know whether a daemon runs.

use std::time::Duration;

use crate::config::Config;

/// How often the daemon writes its row in the state DB (`status` reads it).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

/// The daemon's row in the state DB: pid, heartbeat, generation, last reload error.
pub struct Beacon {
    row: std::sync::Mutex<(std::path::PathBuf, crate::state::daemon::DaemonRow)>,
}

impl Beacon {
    pub fn new(config: &Config) -> Beacon {
        let now = crate::db::now();
        Beacon {
            row: std::sync::Mutex::new((
                config.sync.state_db.clone(),
                crate::state::daemon::DaemonRow {
                    pid: i64::from(std::process::id()),
                    started_at: now.clone(),
                    heartbeat_at: now,
                    generation: 1,
                    last_reload_error: None,
                    next_runs: Default::default(),
                },
            )),
        }
    }

    pub fn reloaded(&self, next: &Config) {
        if let Ok(mut r) = self.row.lock() {
            r.0 = next.sync.state_db.clone();
            r.1.generation += 1;
            r.1.last_reload_error = None;
        }
    }

    pub fn reloaded_failed(&self, error: &str) {
        if let Ok(mut r) = self.row.lock() {
            r.1.last_reload_error = Some(crate::redact::scrub(error));
        }
    }

    pub async fn beat(&self, next_runs: std::collections::BTreeMap<String, String>) {
        let Ok((path, row)) = self.row.lock().map(|mut r| {
            r.1.heartbeat_at = crate::db::now();
            r.1.next_runs = next_runs;
            (r.0.clone(), r.1.clone())
        }) else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            crate::state::State::open(&path).and_then(|mut st| st.write_daemon(&row))
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "cannot write the daemon's heartbeat to the state DB");
        }
    }

    pub async fn stopped(&self) {
        let Ok((path, pid)) = self.row.lock().map(|r| (r.0.clone(), r.1.pid)) else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || {
            crate::state::State::open(&path).and_then(|mut st| st.clear_daemon(pid))
        })
        .await;
    }
}
