//! The daemon: many runs of many directories, each on its schedule, until shutdown.
//!
//! One task per directory waits for its next tick, takes a permit of the
//! `sync.concurrency` semaphore and runs; it computes its next tick only after the
//! run ended, so runs of one directory never overlap and missed ticks are skipped.
//! The engine's per-directory file lock also keeps a `sync` from another process out.

pub mod beacon;
pub mod http;
pub mod metrics;
mod runner;
pub mod schedule;
pub mod sharing;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Config;
use http::Health;
use metrics::Metrics;
pub use runner::EngineRunner;

/// Why a run is asked to stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Continue,
    /// It ran longer than `sync.run_timeout`: record it as failed.
    TimedOut,
    /// The daemon is stopping and the grace period is over.
    Shutdown,
}

/// How one run ended, as far as scheduling cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunResult {
    Ok,
    /// Applied, but deactivations were held by a guard: not a failure.
    Held,
    Failed(String),
    /// Abandoned at shutdown.
    Cancelled,
    /// Not run: another daemon sharing the store holds the directory's lease.
    Skipped,
}

pub type RunFuture = Pin<Box<dyn Future<Output = RunResult> + Send>>;

/// Runs one directory once. The daemon uses [`EngineRunner`]; tests use fakes.
pub trait Runner: Send + Sync + 'static {
    /// Must return soon after `stop` leaves [`Stop::Continue`], without leaving a
    /// half-written store (stop at an await point, between transactions).
    fn run(&self, config: Arc<Config>, directory: String, stop: watch::Receiver<Stop>)
        -> RunFuture;

    /// Failed runs in a row before the daemon started.
    fn consecutive_failures(&self, _config: &Config, _directory: &str) -> u32 {
        0
    }

    /// A run exceeded `sync.run_timeout`: record the failure. Called once per timed-out
    /// run, whether or not the run stopped when asked.
    fn timed_out(&self, _config: &Config, _directory: &str, _error: &str, _after: Duration) {}
}

/// Knobs of the scheduler that are not in the config file.
pub struct Options {
    /// Spread ticks by a small random delay (off in deterministic tests).
    pub jitter: bool,
    /// The wall-clock time at the start; cron ticks are computed from it plus the
    /// elapsed tokio time, so a paused tokio clock drives cron schedules too.
    pub wall_origin: DateTime<Utc>,
    /// How long in-flight runs may go on after a stop request before they are abandoned.
    pub stop_grace: Duration,
    /// How long abandoned runs get to reach an await point before the daemon exits anyway.
    pub abandon_wait: Duration,
    /// Called every `heartbeat_every` while the scheduler is alive (systemd watchdog).
    pub heartbeat: Option<(Duration, Box<dyn Fn() + Send + Sync>)>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// The directories other daemons sharing a store run (`sharing`); `None`: all are
    /// this daemon's.
    pub owned: Option<watch::Receiver<sharing::Owned>>,
}

impl Options {
    pub fn new(health: Arc<Health>, metrics: Arc<Metrics>) -> Options {
        Options {
            jitter: true,
            wall_origin: Utc::now(),
            stop_grace: Duration::from_secs(10),
            abandon_wait: Duration::from_secs(5),
            heartbeat: None,
            health,
            metrics,
            owned: None,
        }
    }
}

/// Maps wall-clock times onto the tokio clock.
#[derive(Clone, Copy)]
struct Clock {
    wall: DateTime<Utc>,
    at: Instant,
}

impl Clock {
    fn now_wall(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default();
        self.wall + elapsed
    }

    fn instant_at(&self, t: DateTime<Utc>) -> Instant {
        self.at + (t - self.wall).to_std().unwrap_or_default()
    }
}

/// The config a directory task sees, with the concurrency permits that go with it.
#[derive(Clone)]
struct Generation {
    config: Arc<Config>,
    permits: Arc<Semaphore>,
}

#[derive(Clone)]
struct Shared {
    runner: Arc<dyn Runner>,
    clock: Clock,
    jitter: bool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    generation: watch::Receiver<Generation>,
    /// True once the daemon stops: no new runs start.
    stopping: watch::Receiver<bool>,
    /// True once the grace period is over: in-flight runs are asked to stop.
    abandon: watch::Receiver<bool>,
    /// How long a run asked to stop may take to do so before it is left behind.
    abandon_wait: Duration,
    /// The directories other daemons run (see `sharing`).
    owned: watch::Receiver<sharing::Owned>,
    /// Keeps `owned` open when no sharing task sends to it.
    _owned_tx: Option<Arc<watch::Sender<sharing::Owned>>>,
}

/// Run every directory of the (reloadable) config on its schedule until `shutdown`.
pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    runner: Arc<dyn Runner>,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) {
    let clock = Clock {
        wall: opts.wall_origin,
        at: Instant::now(),
    };
    let first = config.borrow_and_update().clone();
    let (generation_tx, generation_rx) = watch::channel(Generation {
        permits: Arc::new(Semaphore::new(first.sync.concurrency)),
        config: first,
    });
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (abandon_tx, abandon_rx) = watch::channel(false);
    let (owned, owned_tx) = match opts.owned {
        Some(rx) => (rx, None),
        None => {
            let (tx, rx) = watch::channel(sharing::Owned::default());
            (rx, Some(Arc::new(tx)))
        }
    };
    let shared = Shared {
        owned,
        _owned_tx: owned_tx,
        runner,
        clock,
        jitter: opts.jitter,
        health: opts.health.clone(),
        metrics: opts.metrics.clone(),
        generation: generation_rx,
        stopping: stopping_rx,
        abandon: abandon_rx,
        abandon_wait: opts.abandon_wait,
    };
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    spawn_new_directories(&shared, &mut tasks, &mut running);

    let (heartbeat_every, heartbeat) = match opts.heartbeat {
        Some((every, f)) => (every, Some(f)),
        None => (Duration::from_secs(3600), None),
    };
    let mut beat = tokio::time::interval(heartbeat_every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut config_open = true;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = config.changed(), if config_open => {
                if changed.is_err() {
                    config_open = false;
                    continue;
                }
                let next = config.borrow_and_update().clone();
                let current = generation_tx.borrow().clone();
                let permits = if next.sync.concurrency == current.config.sync.concurrency {
                    current.permits
                } else {
                    Arc::new(Semaphore::new(next.sync.concurrency))
                };
                for gone in running.iter().filter(|n| next.directory(n).is_none()) {
                    tracing::info!(directory = %gone, "directory removed from the config; it stops after its current run");
                }
                generation_tx.send_replace(Generation { config: next, permits });
                spawn_new_directories(&shared, &mut tasks, &mut running);
            }
            Some(done) = tasks.join_next() => {
                if let Ok(name) = done {
                    running.remove(&name);
                    shared.health.forget(&name);
                }
            }
            _ = beat.tick() => {
                if let Some(f) = &heartbeat {
                    f();
                }
            }
        }
    }

    // Stop: no new runs, let in-flight ones finish for a while, then abandon them.
    let _ = stopping_tx.send(true);
    opts.health.set_alive(false);
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.stop_grace, drain).await.is_err() {
        tracing::warn!(
            grace_seconds = opts.stop_grace.as_secs(),
            "runs still in progress after the grace period; abandoning them"
        );
        let _ = abandon_tx.send(true);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(opts.abandon_wait, drain)
            .await
            .is_err()
        {
            tracing::warn!("a run did not stop in time; exiting anyway");
            tasks.abort_all();
        }
    }
}

fn spawn_new_directories(
    shared: &Shared,
    tasks: &mut JoinSet<String>,
    running: &mut BTreeSet<String>,
) {
    let generation = shared.generation.borrow().clone();
    for dir in &generation.config.directories {
        if running.insert(dir.name.clone()) {
            let name = dir.name.clone();
            let shared = shared.clone();
            tasks.spawn(async move {
                directory_loop(&name, shared).await;
                name
            });
        }
    }
}

/// One directory: run at start, then at each tick after the previous run ended.
async fn directory_loop(name: &str, mut s: Shared) {
    let mut failures = {
        let config = s.generation.borrow().config.clone();
        s.runner.consecutive_failures(&config, name)
    };
    s.health.set_failures(name, failures);
    s.metrics.set_consecutive_failures(name, failures);
    let origin = s.clock.now_wall();
    let mut due = Instant::now();
    loop {
        // Another daemon's directory becomes this one's: run it now (its daemon may
        // have died mid-run).
        let theirs = !s.owned.borrow().runs(name);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = until_ours(&mut s.owned, name), if theirs => {
                tracing::info!(directory = name, "this daemon runs the directory now (the daemon that ran it left)");
            }
            _ = until_true(&mut s.stopping) => return,
        }
        let generation = s.generation.borrow().clone();
        if generation.config.directory(name).is_none() {
            return;
        }
        if !s.owned.borrow().runs(name) {
            tracing::debug!(directory = name, "run by another daemon sharing the store");
            match next_due(&s, name, origin, failures) {
                Some(next) => {
                    due = next;
                    continue;
                }
                None => return,
            }
        }
        let permit = tokio::select! {
            p = generation.permits.clone().acquire_owned() => p,
            _ = until_true(&mut s.stopping) => return,
        };
        let (stop_tx, stop_rx) = watch::channel(Stop::Continue);
        let mut run = s
            .runner
            .run(generation.config.clone(), name.to_string(), stop_rx);
        let result = tokio::select! {
            r = &mut run => r,
            _ = tokio::time::sleep(generation.config.sync.run_timeout) => {
                let limit = generation.config.sync.run_timeout;
                let error = format!("run timed out after {}s", limit.as_secs());
                tracing::error!(directory = name, timeout_seconds = limit.as_secs(), "run timed out; stopping it");
                let _ = stop_tx.send(Stop::TimedOut);
                // A run stuck outside an await point (a blocking read) cannot be
                // interrupted: leave it behind so the schedule goes on. Its directory
                // lock keeps the next run from overlapping it.
                if tokio::time::timeout(s.abandon_wait, &mut run).await.is_err() {
                    tracing::warn!(directory = name, "the timed-out run did not stop; leaving it behind");
                }
                s.runner.timed_out(&generation.config, name, &error, limit);
                RunResult::Failed(error)
            }
            _ = until_true(&mut s.abandon) => {
                let _ = stop_tx.send(Stop::Shutdown);
                run.await
            }
        };
        drop(permit);
        match result {
            RunResult::Ok | RunResult::Held => failures = 0,
            RunResult::Failed(_) => failures = failures.saturating_add(1),
            RunResult::Cancelled => return,
            RunResult::Skipped => {}
        }
        s.health.set_failures(name, failures);
        s.metrics.set_consecutive_failures(name, failures);
        match next_due(&s, name, origin, failures) {
            Some(next) => due = next,
            None => return,
        }
    }
}

/// The next tick of a directory, on the schedule of the latest config; `None` when the
/// directory is gone from it or its schedule has no future runs.
fn next_due(s: &Shared, name: &str, origin: DateTime<Utc>, failures: u32) -> Option<Instant> {
    let latest = s.generation.borrow().config.clone();
    let dir = latest.directory(name)?;
    let sched = dir.schedule.as_ref().unwrap_or(&latest.sync.schedule);
    let now = s.clock.now_wall();
    let jitter = if s.jitter {
        schedule::jitter(schedule::max_jitter(sched, now), &mut rand::rng())
    } else {
        Duration::ZERO
    };
    match schedule::next_run(sched, origin, now, failures, jitter) {
        Some(t) => {
            tracing::debug!(directory = name, next_run = %t.to_rfc3339(), "next run scheduled");
            s.health.set_next_run(name, &t);
            Some(s.clock.instant_at(t))
        }
        None => {
            tracing::warn!(directory = name, schedule = %sched, "the schedule has no future runs; this directory stops");
            None
        }
    }
}

/// Resolves once this daemon runs `directory` (never, once the sender is gone).
async fn until_ours(owned: &mut watch::Receiver<sharing::Owned>, directory: &str) {
    if owned.wait_for(|o| o.runs(directory)).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the flag is true (or its sender is gone, which means the same).
async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|v| *v).await;
}

/// Resolves with the reason once a run is asked to stop.
pub async fn stop_requested(stop: &mut watch::Receiver<Stop>) -> Stop {
    match stop.wait_for(|s| *s != Stop::Continue).await {
        Ok(reason) => *reason,
        Err(_) => Stop::Shutdown,
    }
}

#[cfg(test)]
mod tests;
