//! The real runner: one engine run of one directory, on the blocking pool (SQLite
//! work is synchronous), with metrics and a failed run recorded on timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::metrics::{Metrics, RunObservation};
use super::{RunFuture, RunResult, Runner, Stop};
use crate::config::Config;
use crate::error::RunError;
use crate::run::{run_directory, RunOptions, RunReport};
use crate::source::Source;
use crate::state::{Counts, Outcome, State};
use crate::store::Store;

pub struct EngineRunner {
    pub metrics: Arc<Metrics>,
}

impl Runner for EngineRunner {
    fn run(
        &self,
        config: Arc<Config>,
        directory: String,
        stop: watch::Receiver<Stop>,
    ) -> RunFuture {
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let handle = tokio::runtime::Handle::current();
            let name = directory.clone();
            // The engine's SQLite calls block; a thread of the blocking pool keeps them
            // off the workers that serve signals, HTTP and the other directories.
            let task = tokio::task::spawn_blocking(move || {
                handle.block_on(run_once(&config, &directory, stop, &metrics))
            });
            match task.await {
                Ok(result) => result,
                Err(e) => {
                    tracing::error!(directory = %name, error = %e, "run task ended abnormally");
                    RunResult::Failed(format!("run task ended abnormally: {e}"))
                }
            }
        })
    }

    fn timed_out(&self, config: &Config, directory: &str, error: &str, after: Duration) {
        record_failure(config, directory, error);
        self.metrics.observe_run(&RunObservation {
            directory,
            outcome: Outcome::Failed,
            counts: &Counts::default(),
            requests: 0,
            retries: 0,
            schedule_period_seconds: schedule_period(config, directory),
            duration_seconds: after.as_secs_f64(),
            learners: None,
            held: None,
            finished_at_unix: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        });
    }

    fn consecutive_failures(&self, config: &Config, directory: &str) -> u32 {
        match State::open_read_only(&config.sync.state_db) {
            Ok(Some(st)) => st.consecutive_failures(directory).unwrap_or(0),
            _ => 0,
        }
    }
}

async fn run_once(
    config: &Config,
    name: &str,
    mut stop: watch::Receiver<Stop>,
    metrics: &Metrics,
) -> RunResult {
    let Some(dir) = config.directory(name) else {
        return RunResult::Cancelled;
    };
    let started = Instant::now();
    tracing::info!(directory = name, "run started");
    let finished = match Source::for_directory(dir, config.sync.request_timeout) {
        Ok(mut source) => {
            let run = run_directory(config, dir, &mut source, RunOptions::default());
            tokio::select! {
                report = run => Ok(report),
                why = super::stop_requested(&mut stop) => Err(why),
            }
        }
        Err(e) => {
            record_failure(config, name, &e.to_string());
            Ok(RunReport::failed(name, started, 0, RunError::Source(e)))
        }
    };
    let report = match finished {
        Ok(report) => report,
        // The scheduler records the timeout (`Runner::timed_out`).
        Err(Stop::TimedOut) => return RunResult::Failed("timed out".to_string()),
        Err(_) => {
            tracing::warn!(
                directory = name,
                "run abandoned at shutdown; the next run settles it"
            );
            return RunResult::Cancelled;
        }
    };

    let learners = learner_counts(config, name).await;
    let held = State::open_read_only(&config.sync.state_db)
        .ok()
        .flatten()
        .and_then(|st| st.held(name).ok())
        .map(|h| h.len() as u64);
    metrics.observe_run(&RunObservation {
        directory: name,
        outcome: report.outcome,
        counts: &report.counts,
        requests: report.requests,
        retries: report.retries,
        schedule_period_seconds: schedule_period(config, name),
        duration_seconds: report.duration.as_secs_f64(),
        learners,
        held,
        finished_at_unix: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
    });
    let c = &report.counts;
    match report.outcome {
        Outcome::Ok => {
            tracing::info!(
                directory = name,
                created = c.created,
                updated = c.updated,
                deactivated = c.deactivated,
                reactivated = c.reactivated,
                unchanged = c.unchanged,
                seconds = report.duration.as_secs_f64(),
                "run finished"
            );
            RunResult::Ok
        }
        Outcome::Held => {
            tracing::warn!(directory = name, held = c.held, reason = %report.hold_reason.as_ref().map(|r| r.to_string()).unwrap_or_default(), "run finished; deactivations held; review with `learner-sync status`, release with `learner-sync approve {name}`");
            RunResult::Held
        }
        Outcome::Failed => {
            // `permanent`: the next runs fail too until someone fixes the cause.
            let permanent = report.error.as_ref().is_some_and(|e| e.is_permanent());
            let error = report.error.map(|e| e.to_string()).unwrap_or_default();
            tracing::error!(directory = name, error = %error, permanent, "run failed");
            RunResult::Failed(error)
        }
    }
}

/// Record a run that failed outside the engine (timeout, unusable source) so that
/// `status`, `/healthz` and a restarted daemon see it.
fn record_failure(config: &Config, name: &str, error: &str) {
    let key = uuid::Uuid::new_v4().to_string();
    let recorded = State::open(&config.sync.state_db)
        .and_then(|mut st| st.record_failed_run(name, &key, 0, error));
    if let Err(e) = recorded {
        tracing::error!(directory = name, error = %e, "cannot record the failed run");
    }
}

/// `(active, inactive)` learners of the directory in the store.
async fn learner_counts(config: &Config, name: &str) -> Option<(u64, u64)> {
    let mut store = Store::open(&config.store, &config.sync, true).await.ok()?;
    let learners = store.load(name).await.ok()?;
    let active = learners.values().filter(|l| l.active).count() as u64;
    Some((active, learners.len() as u64 - active))
}

/// Seconds between two runs of a directory on its schedule (for cron, the gap between
/// its next two times), so that alerts can say "no success for three periods".
fn schedule_period(config: &Config, directory: &str) -> Option<f64> {
    let schedule = config
        .directory(directory)
        .and_then(|d| d.schedule.as_ref())
        .unwrap_or(&config.sync.schedule);
    let first = schedule.next_after(chrono::Utc::now())?;
    let second = schedule.next_after(first)?;
    Some((second - first).num_milliseconds() as f64 / 1000.0)
}
