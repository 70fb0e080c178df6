//! The real runner: one engine run of one directory, on the blocking pool (SQLite
//! work is synchronous), with metrics and a failed run recorded on timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
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
    /// Each directory's source between runs, so that its access token (cached until
    /// shortly before it expires) serves the next polls: an idle delta poll is one
    /// request. Kept only while the same config is loaded and the last run did not fail.
    pub sources: Kept,
}

/// The sources kept between runs, by directory, with the config they were built from.
pub type Kept = Arc<Mutex<BTreeMap<String, (Arc<Config>, Source)>>>;

/// The kept source of `name` if it was built from this `config`.
fn take_source(kept: &Kept, config: &Arc<Config>, name: &str) -> Option<Source> {
    let mut kept = kept.lock().ok()?;
    match kept.remove(name) {
        Some((built_from, source)) if Arc::ptr_eq(&built_from, config) => Some(source),
        _ => None,
    }
}

impl Runner for EngineRunner {
    fn run(
        &self,
        config: Arc<Config>,
        directory: String,
        stop: watch::Receiver<Stop>,
    ) -> RunFuture {
        let metrics = self.metrics.clone();
        let kept = self.sources.clone();
        Box::pin(async move {
            let handle = tokio::runtime::Handle::current();
            let name = directory.clone();
            let source = take_source(&kept, &config, &name);
            // The engine's SQLite calls block; a thread of the blocking pool keeps them
            // off the workers that serve signals, HTTP and the other directories.
            let task = tokio::task::spawn_blocking(move || {
                let (result, source) =
                    handle.block_on(run_once(&config, &directory, source, stop, &metrics));
                if let (Some(source), Ok(mut kept)) = (source, kept.lock()) {
                    kept.insert(directory, (config, source));
                }
                result
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
        crate::notify::after_run(config, &crate::notify::RunEnd::failed(directory, error));
        self.metrics.observe_run(&RunObservation {
            directory,
            store: config.store_named_for(directory).0,
            outcome: Outcome::Failed,
            counts: &Counts::default(),
            requests: 0,
            retries: 0,
            schedule_period_seconds: schedule_period(config, directory),
            duration_seconds: after.as_secs_f64(),
            learners: None,
            held: None,
            finished_at_unix: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
            groups: None,
        });
    }

    fn consecutive_failures(&self, config: &Config, directory: &str) -> u32 {
        match State::open_read_only(&config.sync.state_db) {
            Ok(Some(st)) => st.consecutive_failures(directory).unwrap_or(0),
            _ => 0,
        }
    }
}

/// One run with `kept` (the source of the previous run) or a new source; returns the
/// source to keep for the next run, if this one succeeded.
async fn run_once(
    config: &Config,
    name: &str,
    kept: Option<Source>,
    mut stop: watch::Receiver<Stop>,
    metrics: &Metrics,
) -> (RunResult, Option<Source>) {
    let Some(dir) = config.directory(name) else {
        return (RunResult::Cancelled, None);
    };
    let started = Instant::now();
    tracing::info!(directory = name, "run started");
    let source = match kept {
        Some(source) => Ok(source),
        None => Source::for_directory(dir, config.sync.request_timeout),
    };
    let (finished, source) = match source {
        Ok(mut source) => {
            let run = run_directory(config, dir, &mut source, RunOptions::default());
            let finished = tokio::select! {
                report = run => Ok(report),
                why = super::stop_requested(&mut stop) => Err(why),
            };
            (finished, Some(source))
        }
        Err(e) => {
            record_failure(config, name, &e.to_string());
            let report = RunReport::failed(name, started, 0, RunError::Source(e));
            (Ok(report), None)
        }
    };
    let report = match finished {
        Ok(report) if report.error.as_ref().is_some_and(|e| e.is_lease_busy()) => {
            // Another daemon sharing the store runs it now: not this daemon's run.
            let why = report.error.map(|e| e.to_string()).unwrap_or_default();
            tracing::info!(directory = name, reason = %why, "run skipped");
            return (RunResult::Skipped, source);
        }
        Ok(report) => report,
        // The scheduler records the timeout (`Runner::timed_out`).
        Err(Stop::TimedOut) => return (RunResult::Failed("timed out".to_string()), None),
        Err(_) => {
            tracing::warn!(
                directory = name,
                "run abandoned at shutdown; the next run settles it"
            );
            return (RunResult::Cancelled, None);
        }
    };
    // A failed run starts the next one afresh (a rotated secret is read again).
    let source = source.filter(|_| report.outcome != Outcome::Failed);
    (finish_run(config, name, report, metrics).await, source)
}

/// Metrics and the log line of a finished run.
async fn finish_run(
    config: &Config,
    name: &str,
    report: RunReport,
    metrics: &Metrics,
) -> RunResult {
    crate::notify::after_run(config, &crate::notify::RunEnd::from_report(&report));
    let learners = learner_counts(config, name).await;
    let held = State::open_read_only(&config.sync.state_db)
        .ok()
        .flatten()
        .and_then(|st| st.held(name).ok())
        .map(|h| h.len() as u64);
    metrics.observe_run(&RunObservation {
        directory: name,
        store: config.store_named_for(name).0,
        outcome: report.outcome,
        counts: &report.counts,
        requests: report.requests,
        retries: report.retries,
        schedule_period_seconds: schedule_period(config, name),
        duration_seconds: report.duration.as_secs_f64(),
        learners,
        held,
        finished_at_unix: chrono::Utc::now().timestamp_millis() as f64 / 1000.0,
        groups: report.groups.as_ref(),
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

/// `(active, inactive)` learners of the directory in the store (kept counts: an idle
/// poll does not read every learner).
async fn learner_counts(config: &Config, name: &str) -> Option<(u64, u64)> {
    let mut store = Store::open(config.store_for(name), &config.sync, true)
        .await
        .ok()?;
    let (total, active) = store.counts(name).await.ok()?;
    Some((active as u64, (total - active) as u64))
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
