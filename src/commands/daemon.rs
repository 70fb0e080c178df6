//! `learner-sync daemon`: the scheduler plus signals, systemd notifications and the
//! `/healthz` + `/metrics` listener.
//!
//! SIGTERM/SIGINT stop (runs in flight get a grace period, then stop at an await
//! point, never inside a store transaction); SIGHUP re-reads the config file: a
//! valid one applies from each directory's next tick, an invalid one is logged and
//! the running config stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::CommandError;
use super::Exit;
use crate::config::Config;
use crate::daemon::http::{self, Health};
use crate::daemon::metrics::Metrics;
use crate::daemon::{self as scheduler, EngineRunner, Options};

/// `/healthz` default when the config has no `[daemon]` table.
const DEFAULT_UNHEALTHY_AFTER: u32 = 3;

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// A long-running process holding tenant credentials needs no privileges; as root, a
/// flaw in it or in a parsed API answer would own the machine.
fn warn_if_root() {
    // SAFETY: geteuid(2) takes no arguments, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        tracing::warn!(
            "the daemon is running as root; it needs no privileges: run it as an unprivileged \
             user (the packaged unit uses User=learner-sync with DynamicUser=yes)"
        );
    }
}

/// Create and migrate the state DB and the stores once, before directories run in
/// parallel: two first runs migrating the same new SQLite file at once would race (a
/// PostgreSQL store's migrations wait on each other, but once is enough).
async fn prepare_databases(config: &Config) {
    if let Err(e) = crate::state::State::open(&config.sync.state_db) {
        tracing::warn!(error = %e, "cannot prepare the state DB; runs will report it");
    }
    for (name, store) in &config.stores {
        if !matches!(store, crate::config::StoreConfig::Scim { .. }) {
            if let Err(e) = crate::store::Store::open(store, &config.sync, false).await {
                tracing::warn!(store = %name, error = %e, "cannot prepare the learner store; runs will report it");
            }
        }
    }
}

pub async fn run(config: Config, path: PathBuf) -> Result<Exit, CommandError> {
    if config.directories.is_empty() {
        return Err(CommandError::Usage(format!(
            "{} configures no [[directory]]",
            config.path.display()
        )));
    }
    warn_if_root();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;

    let unhealthy_after = |c: &Config| {
        c.daemon
            .as_ref()
            .map(|d| d.unhealthy_after)
            .unwrap_or(DEFAULT_UNHEALTHY_AFTER)
    };
    let listen = config.daemon.as_ref().and_then(|d| d.listen);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(unhealthy_after(&config)));
    let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
    let server = match listen {
        Some(addr) => {
            let stop = async move {
                let _ = http_stop_rx.wait_for(|s| *s).await;
            };
            let (local, server) = http::serve(addr, health.clone(), metrics.clone(), stop)
                .await
                .map_err(|source| ListenError { addr, source })?;
            tracing::info!(address = %local, "serving /healthz and /metrics");
            Some(tokio::spawn(server))
        }
        None => None,
    };

    prepare_databases(&config).await;
    let directories = config.directories.len();
    let beacon = Arc::new(crate::daemon::beacon::Beacon::new(&config));
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let reload_health = health.clone();
    let reload_beacon = beacon.clone();
    let reloader = tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match Config::load(&path) {
                Ok(next) => {
                    if next.daemon.as_ref().and_then(|d| d.listen) != listen {
                        tracing::warn!(
                            "daemon.listen changed: it takes effect at the next restart"
                        );
                    }
                    prepare_databases(&next).await;
                    reload_health.set_unhealthy_after(unhealthy_after(&next));
                    tracing::info!(
                        config = %path.display(),
                        directories = next.directories.len(),
                        "config reloaded; it applies from each directory's next tick"
                    );
                    reload_beacon.reloaded(&next);
                    config_tx.send_replace(Arc::new(next));
                    reload_beacon.beat(reload_health.next_runs()).await;
                }
                Err(e) => {
                    reload_beacon.reloaded_failed(&e.to_string());
                    reload_beacon.beat(reload_health.next_runs()).await;
                    tracing::error!(error = %e, "config reload failed; the running config stays in effect");
                }
            }
        }
    });

    let mut opts = Options::new(health.clone(), metrics.clone());
    // Daemons on other machines may share a PostgreSQL store: agree who runs what
    // before the first run, and follow reloads (one may add such a store).
    let (sharing_stop_tx, sharing_stop_rx) = watch::channel(false);
    let (owned, sharing) = crate::daemon::sharing::start(config_rx.clone(), sharing_stop_rx).await;
    opts.owned = Some(owned);
    if let Some(every) = sd_notify::watchdog_enabled() {
        // Pinged from the scheduler's own loop, so a stuck scheduler stops the pings.
        opts.heartbeat = Some((every / 2, Box::new(|| notify(&[NotifyState::Watchdog]))));
    }
    let shutdown = async move {
        let which = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(
            signal = which,
            "stopping: no new runs; runs in progress get a grace period"
        );
        notify(&[NotifyState::Stopping]);
    };
    notify(&[
        NotifyState::Ready,
        NotifyState::Status("scheduling directories"),
    ]);
    tracing::info!(directories, "daemon started");
    let runner = Arc::new(EngineRunner {
        metrics: metrics.clone(),
        sources: Default::default(),
    });
    let beat_health = health.clone();
    let beat_beacon = beacon.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::daemon::beacon::HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            // Only while the scheduler lives: a stale heartbeat says it does not.
            if beat_health.scheduler_alive() {
                beat_beacon.beat(beat_health.next_runs()).await;
            }
        }
    });
    scheduler::run(config_rx, runner, opts, shutdown).await;
    let _ = sharing_stop_tx.send(true);
    // Leaving tells the other daemons at once, rather than after a lease.
    let _ = tokio::time::timeout(Duration::from_secs(2), sharing).await;

    heartbeat.abort();
    beacon.stopped().await;
    reloader.abort();
    let _ = http_stop_tx.send(true);
    if let Some(server) = server {
        if tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .is_err()
        {
            tracing::warn!("the HTTP listener did not stop in time");
        }
    }
    // Alerts a last run raised (a failure, a hold) are worth a few seconds of the
    // unit's 30 s stop timeout; the runs' own grace period came first.
    crate::notify::flush(DAEMON_FLUSH.min(crate::notify::flush_limit())).await;
    tracing::info!("daemon stopped");
    Ok(Exit::Ok)
}

/// How long a stopping daemon waits for undelivered notifications.
const DAEMON_FLUSH: Duration = Duration::from_secs(5);

/// The `[daemon] listen` address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
struct ListenError {
    addr: std::net::SocketAddr,
    #[source]
    source: std::io::Error,
}
