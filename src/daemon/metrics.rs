//! Prometheus metrics of the daemon; every per-directory series carries
//! `directory="NAME"`. Encoded in the OpenMetrics text format, which Prometheus scrapes.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::state::{Counts, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectoryLabel {
    directory: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    directory: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LearnerLabels {
    directory: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    directory: String,
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    directory: String,
    kind: String,
}

type HistogramFamily = Family<DirectoryLabel, Histogram, fn() -> Histogram>;

fn run_duration_histogram() -> Histogram {
    // 0.1s .. ~55 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 16))
}

/// What the daemon exposes on `/metrics`.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    last_success: Family<DirectoryLabel, Gauge<f64, AtomicU64>>,
    learners: Family<LearnerLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
    held: Family<DirectoryLabel, Gauge>,
    source_requests: Family<DirectoryLabel, Counter>,
    source_retries: Family<DirectoryLabel, Counter>,
    schedule_period: Family<DirectoryLabel, Gauge<f64, AtomicU64>>,
    consecutive_failures: Family<DirectoryLabel, Gauge>,
    run_duration: HistogramFamily,
    group_operations: Family<ActionLabels, Counter>,
    groups: Family<DirectoryLabel, Gauge>,
    group_failures: Family<DirectoryLabel, Counter>,
    info: Family<InfoLabels, Gauge>,
}

/// What one finished (or abandoned) run contributes to the metrics.
pub struct RunObservation<'a> {
    pub directory: &'a str,
    /// The store the directory writes to (`learner_sync_directory_info`).
    pub store: &'a str,
    pub outcome: Outcome,
    pub counts: &'a Counts,
    pub requests: u64,
    /// Requests the source repeated after throttling or a server error.
    pub retries: u64,
    /// Seconds between two scheduled runs of the directory, when known.
    pub schedule_period_seconds: Option<f64>,
    pub duration_seconds: f64,
    /// `(active, inactive)` learners in the store after the run, when known.
    pub learners: Option<(u64, u64)>,
    /// Deactivations held for approval after the run, when known.
    pub held: Option<u64>,
    pub finished_at_unix: f64,
    /// The run's group step, when the directory selects groups.
    pub groups: Option<&'a crate::run::groups::GroupReport>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("learner_sync");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Sync runs by directory and outcome (ok, held, failed)",
            runs.clone(),
        );
        let last_success = Family::<DirectoryLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the directory's last run that applied its changes (ok or held)",
            last_success.clone(),
        );
        let learners = Family::<LearnerLabels, Gauge>::default();
        registry.register(
            "learners",
            "Learners in the store by directory and state (active, inactive)",
            learners.clone(),
        );
        let actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "actions",
            "Actions applied by directory and kind (created, updated, deactivated, reactivated, held)",
            actions.clone(),
        );
        let held = Family::<DirectoryLabel, Gauge>::default();
        registry.register(
            "held_deactivations",
            "Deactivations held back by a safety guard, waiting for `learner-sync approve`",
            held.clone(),
        );
        let source_requests = Family::<DirectoryLabel, Counter>::default();
        registry.register(
            "source_requests",
            "Requests made to the directory's source",
            source_requests.clone(),
        );
        let source_retries = Family::<DirectoryLabel, Counter>::default();
        registry.register(
            "source_retries",
            "Requests to the directory's source repeated after throttling or a server error",
            source_retries.clone(),
        );
        let schedule_period = Family::<DirectoryLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "schedule_period",
            "Time between two scheduled runs of the directory",
            Unit::Seconds,
            schedule_period.clone(),
        );
        let consecutive_failures = Family::<DirectoryLabel, Gauge>::default();
        registry.register(
            "consecutive_failures",
            "Failed runs of the directory in a row",
            consecutive_failures.clone(),
        );
        let run_duration: HistogramFamily = Family::new_with_constructor(run_duration_histogram);
        registry.register_with_unit(
            "run_duration",
            "Duration of a directory's sync run",
            Unit::Seconds,
            run_duration.clone(),
        );
        let group_operations = Family::<ActionLabels, Counter>::default();
        registry.register(
            "group_operations",
            "Group operations applied by directory and kind (group_created, group_renamed, group_removed, member_added, member_removed, removal_held)",
            group_operations.clone(),
        );
        let groups = Family::<DirectoryLabel, Gauge>::default();
        registry.register(
            "groups",
            "Groups of the directory in the store after its last group step",
            groups.clone(),
        );
        let group_failures = Family::<DirectoryLabel, Counter>::default();
        registry.register(
            "group_step_failures",
            "Group steps that failed (the learners are not affected)",
            group_failures.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "directory_info",
            "1 for each directory, labelled with the store it writes to",
            info.clone(),
        );
        Metrics {
            registry,
            runs,
            last_success,
            learners,
            actions,
            held,
            source_requests,
            source_retries,
            schedule_period,
            consecutive_failures,
            run_duration,
            group_operations,
            groups,
            group_failures,
            info,
        }
    }

    pub fn observe_run(&self, o: &RunObservation<'_>) {
        let directory = o.directory.to_string();
        let dir = DirectoryLabel {
            directory: directory.clone(),
        };
        self.info
            .get_or_create(&InfoLabels {
                directory: directory.clone(),
                store: o.store.to_string(),
            })
            .set(1);
        self.runs
            .get_or_create(&RunLabels {
                directory: directory.clone(),
                outcome: o.outcome.as_str().to_string(),
            })
            .inc();
        if o.outcome != Outcome::Failed {
            self.last_success
                .get_or_create(&dir)
                .set(o.finished_at_unix);
        }
        let c = o.counts;
        for (kind, n) in [
            ("created", c.created),
            ("updated", c.updated),
            ("deactivated", c.deactivated),
            ("reactivated", c.reactivated),
            ("held", c.held),
        ] {
            self.actions
                .get_or_create(&ActionLabels {
                    directory: directory.clone(),
                    kind: kind.to_string(),
                })
                .inc_by(n as u64);
        }
        self.source_requests.get_or_create(&dir).inc_by(o.requests);
        self.source_retries.get_or_create(&dir).inc_by(o.retries);
        if let Some(period) = o.schedule_period_seconds {
            self.schedule_period.get_or_create(&dir).set(period);
        }
        self.run_duration
            .get_or_create(&dir)
            .observe(o.duration_seconds);
        if let Some((active, inactive)) = o.learners {
            for (state, n) in [("active", active), ("inactive", inactive)] {
                self.learners
                    .get_or_create(&LearnerLabels {
                        directory: directory.clone(),
                        state: state.to_string(),
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        if let Some(held) = o.held {
            self.held
                .get_or_create(&dir)
                .set(i64::try_from(held).unwrap_or(i64::MAX));
        }
        if let Some(g) = o.groups {
            if g.error.is_some() {
                self.group_failures.get_or_create(&dir).inc();
            } else {
                let c = &g.counts;
                for (kind, n) in [
                    ("group_created", c.created),
                    ("group_renamed", c.renamed),
                    ("group_removed", c.removed),
                    ("member_added", c.members_added),
                    ("member_removed", c.members_removed),
                    ("removal_held", c.held),
                ] {
                    self.group_operations
                        .get_or_create(&ActionLabels {
                            directory: directory.clone(),
                            kind: kind.to_string(),
                        })
                        .inc_by(n as u64);
                }
                self.groups
                    .get_or_create(&dir)
                    .set(i64::try_from(c.groups).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn set_consecutive_failures(&self, directory: &str, n: u32) {
        self.consecutive_failures
            .get_or_create(&DirectoryLabel {
                directory: directory.to_string(),
            })
            .set(i64::from(n));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_of_a_run_carries_the_directory_label() {
        let m = Metrics::new();
        let counts = Counts {
            created: 3,
            ..Counts::default()
        };
        m.observe_run(&RunObservation {
            directory: "hr",
            store: "default",
            outcome: Outcome::Ok,
            counts: &counts,
            requests: 1,
            retries: 2,
            schedule_period_seconds: Some(2400.0),
            duration_seconds: 0.5,
            learners: Some((3, 0)),
            held: Some(0),
            finished_at_unix: 1_700_000_000.0,
            groups: Some(&crate::run::groups::GroupReport {
                counts: crate::groups::GroupCounts {
                    created: 2,
                    members_added: 5,
                    groups: 2,
                    ..Default::default()
                },
                ..Default::default()
            }),
        });
        m.set_consecutive_failures("hr", 0);
        let text = m.encode();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert!(!samples.is_empty());
        for s in samples {
            assert!(s.contains("directory=\"hr\""), "{s}");
        }
        assert!(text.contains("learner_sync_runs_total{directory=\"hr\",outcome=\"ok\"} 1"));
        assert!(text.contains("learner_sync_source_retries_total{directory=\"hr\"} 2"));
        assert!(text.contains("learner_sync_schedule_period_seconds{directory=\"hr\"} 2400"));
        assert!(text.contains(
            "learner_sync_group_operations_total{directory=\"hr\",kind=\"member_added\"} 5"
        ));
        assert!(text.contains("learner_sync_groups{directory=\"hr\"} 2"));
        assert!(text.contains("learner_sync_directory_info{directory=\"hr\",store=\"default\"} 1"));
    }
}
