//! `/healthz` and `/metrics` over HTTP, for `[daemon] listen`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::metrics::Metrics;

/// What `/healthz` reports: whether the scheduler is alive and which directories fail.
pub struct Health {
    alive: AtomicBool,
    unhealthy_after: AtomicU32,
    failures: Mutex<BTreeMap<String, u32>>,
    /// Each directory's next scheduled run (RFC 3339), for the state DB's daemon row.
    next_runs: Mutex<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HealthReport {
    pub status: &'static str,
    pub scheduler_alive: bool,
    pub unhealthy_after: u32,
    pub failing: Vec<FailingDirectory>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FailingDirectory {
    pub directory: String,
    pub consecutive_failures: u32,
}

impl Health {
    pub fn new(unhealthy_after: u32) -> Health {
        Health {
            alive: AtomicBool::new(true),
            unhealthy_after: AtomicU32::new(unhealthy_after),
            failures: Mutex::new(BTreeMap::new()),
            next_runs: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set_next_run(&self, directory: &str, at: &chrono::DateTime<chrono::Utc>) {
        if let Ok(mut n) = self.next_runs.lock() {
            n.insert(
                directory.to_string(),
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
    }

    pub fn next_runs(&self) -> BTreeMap<String, String> {
        self.next_runs.lock().map(|n| n.clone()).unwrap_or_default()
    }

    pub fn scheduler_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::SeqCst);
    }

    pub fn set_unhealthy_after(&self, n: u32) {
        self.unhealthy_after.store(n, Ordering::SeqCst);
    }

    pub fn set_failures(&self, directory: &str, n: u32) {
        if let Ok(mut f) = self.failures.lock() {
            f.insert(directory.to_string(), n);
        }
    }

    pub fn forget(&self, directory: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(directory);
        }
        if let Ok(mut n) = self.next_runs.lock() {
            n.remove(directory);
        }
    }

    /// Healthy while the scheduler runs and no directory failed more than
    /// `unhealthy_after` runs in a row.
    pub fn report(&self) -> HealthReport {
        let alive = self.alive.load(Ordering::SeqCst);
        let limit = self.unhealthy_after.load(Ordering::SeqCst);
        let failing: Vec<FailingDirectory> = match self.failures.lock() {
            Ok(f) => f
                .iter()
                .filter(|(_, n)| **n > limit)
                .map(|(d, n)| FailingDirectory {
                    directory: d.clone(),
                    consecutive_failures: *n,
                })
                .collect(),
            Err(_) => vec![],
        };
        HealthReport {
            status: if alive && failing.is_empty() {
                "ok"
            } else {
                "unhealthy"
            },
            scheduler_alive: alive,
            unhealthy_after: limit,
            failing,
        }
    }
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    let report = s.health.report();
    let code = if report.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(report))
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Bind `addr`; the returned future serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics_: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(Shared {
            health,
            metrics: metrics_,
        });
    let server = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    };
    Ok((local, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_turns_unhealthy_only_after_more_than_n_failures() {
        let h = Health::new(2);
        h.set_failures("a", 2);
        h.set_failures("b", 0);
        assert_eq!(h.report().status, "ok");
        h.set_failures("a", 3);
        let r = h.report();
        assert_eq!(r.status, "unhealthy");
        assert_eq!(
            r.failing,
            vec![FailingDirectory {
                directory: "a".into(),
                consecutive_failures: 3
            }]
        );
        h.set_failures("a", 0);
        assert_eq!(h.report().status, "ok");
        h.set_alive(false);
        assert_eq!(h.report().status, "unhealthy");
    }
}
