//! The grace period for leavers (`deactivate_after`): a deactivation waits until the
//! learner has been gone that long, so a user who comes back in time keeps everything.
//!
//! `defer` is pure (the pending rows and `now` in, the plan the guards see and the row
//! changes out); `step` reads and records the rows around it. It runs before the
//! guards, so they count only the deactivations that are due.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::error::RunError;
use crate::plan::{Operation, Plan};
use crate::state::pending::{PendingChanges, PendingRow};
use crate::state::State;

/// The time the grace period is measured against. Test builds (the `faults` feature)
/// take `LEARNER_SYNC_TEST_NOW` (RFC 3339) so the tests do not wait for wall time.
pub fn now() -> DateTime<Utc> {
    #[cfg(feature = "faults")]
    if let Some(t) = std::env::var("LEARNER_SYNC_TEST_NOW")
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
    {
        return t.with_timezone(&Utc);
    }
    Utc::now()
}

/// What `defer` needs besides the plan.
pub struct Grace<'a> {
    pub after: Duration,
    pub now: DateTime<Utc>,
    /// The directory's pending learners, by external id.
    pub pending: &'a BTreeMap<String, PendingRow>,
    /// The learners the plan looked at (a delta run), or `None` for all.
    pub evaluated: Option<&'a BTreeSet<String>>,
}

/// What `defer` decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deferred {
    pub plan: Plan,
    pub changes: PendingChanges,
    /// Deactivations kept back this run.
    pub waiting: usize,
    /// Deactivations whose period has passed (they stay in the plan).
    pub due: usize,
}

/// Keep back the deactivations of learners gone for less than `after`. A kept-back
/// deactivation's field changes still apply (as an update). A learner the plan looked
/// at who is no longer being deactivated (back, or already inactive) stops pending.
pub fn defer(plan: Plan, g: Grace<'_>) -> Deferred {
    let stamp = g.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out = Deferred {
        plan: Plan {
            operations: Vec::with_capacity(plan.operations.len()),
            unchanged: plan.unchanged,
        },
        ..Deferred::default()
    };
    let mut leaving = BTreeSet::new();
    for op in plan.operations {
        let Operation::Deactivate {
            external_id,
            fields,
            changes,
            reason,
        } = op
        else {
            out.plan.operations.push(op);
            continue;
        };
        leaving.insert(external_id.clone());
        let since = g.pending.get(&external_id).map(|p| p.since.as_str());
        if g.after.is_zero() || since.is_some_and(|s| gone_for(s, g.now) >= g.after) {
            out.due += usize::from(!g.after.is_zero());
            out.plan.operations.push(Operation::Deactivate {
                external_id,
                fields,
                changes,
                reason,
            });
            continue;
        }
        out.waiting += 1;
        if since.is_none() {
            out.changes.add.push(PendingRow {
                external_id: external_id.clone(),
                user_name: fields.user_name.clone(),
                since: stamp.clone(),
                reason: reason.as_str().to_string(),
            });
        }
        if changes.is_empty() {
            out.plan.unchanged += 1;
        } else {
            out.plan.operations.push(Operation::Update {
                external_id,
                fields,
                changes,
            });
        }
    }
    out.changes.remove = g
        .pending
        .keys()
        .filter(|id| g.evaluated.is_none_or(|e| e.contains(*id)) && !leaving.contains(*id))
        .cloned()
        .collect();
    out
}

/// How long ago `since` (RFC 3339) was; a time that does not parse counts as now, so
/// a damaged row waits a whole period rather than deactivating at once.
fn gone_for(since: &str, now: DateTime<Utc>) -> Duration {
    DateTime::parse_from_rfc3339(since)
        .ok()
        .and_then(|t| now.signed_duration_since(t).to_std().ok())
        .unwrap_or_default()
}

/// The step of a run: read the directory's pending learners, defer, and record the
/// changes unless the state DB is open read-only (a dry run). Recorded before the run
/// commits: a crash after it only means the same learners are found pending again.
pub fn step(
    config: &Config,
    name: &str,
    state: Option<&State>,
    plan: Plan,
    evaluated: Option<&BTreeSet<String>>,
) -> Result<Plan, RunError> {
    let after = config
        .directory(name)
        .map(|d| d.grace(&config.sync))
        .unwrap_or(config.sync.deactivate_after);
    let pending = match state {
        Some(st) => st.pending(name)?,
        None => BTreeMap::new(),
    };
    let d = defer(
        plan,
        Grace {
            after,
            now: now(),
            pending: &pending,
            evaluated,
        },
    );
    if let Some(st) = state.filter(|st| st.writable()) {
        st.apply_pending(name, &d.changes)?;
    }
    // A delta run looks only at the users in the delta: a leaver still gone is in none
    // of them, so their due deactivation waits for the next full read.
    if let Some(seen) = evaluated {
        let waiting_for_full = pending
            .values()
            .filter(|p| !seen.contains(&p.external_id) && gone_for(&p.since, now()) >= after)
            .count();
        if waiting_for_full > 0 {
            tracing::info!(
                directory = name,
                due = waiting_for_full,
                "leavers past their grace period are deactivated at the next full read"
            );
        }
    }
    if d.waiting > 0 || d.due > 0 {
        tracing::info!(
            directory = name,
            waiting = d.waiting,
            due = d.due,
            grace_seconds = after.as_secs(),
            "leavers in their grace period"
        );
    }
    Ok(d.plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeactivationReason, LearnerFields};
    use crate::plan::FieldChange;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn gone(id: &str, changes: Vec<FieldChange>) -> Operation {
        Operation::Deactivate {
            external_id: id.to_string(),
            fields: LearnerFields {
                user_name: format!("{id}@x.io"),
                ..Default::default()
            },
            changes,
            reason: DeactivationReason::DeletedInDirectory,
        }
    }

    fn pending(id: &str, since: &str) -> (String, PendingRow) {
        (
            id.to_string(),
            PendingRow {
                external_id: id.to_string(),
                user_name: format!("{id}@x.io"),
                since: since.to_string(),
                reason: "deleted in directory".to_string(),
            },
        )
    }

    const H72: Duration = Duration::from_secs(72 * 3600);

    fn run(ops: Vec<Operation>, rows: &BTreeMap<String, PendingRow>, now: &str) -> Deferred {
        defer(
            Plan {
                operations: ops,
                unchanged: 0,
            },
            Grace {
                after: H72,
                now: at(now),
                pending: rows,
                evaluated: None,
            },
        )
    }

    #[test]
    fn zero_grace_keeps_every_deactivation_and_records_nothing() {
        let d = defer(
            Plan {
                operations: vec![gone("a", vec![])],
                unchanged: 0,
            },
            Grace {
                after: Duration::ZERO,
                now: at("2026-01-01T00:00:00Z"),
                pending: &BTreeMap::new(),
                evaluated: None,
            },
        );
        assert_eq!(d.plan.operations.len(), 1);
        assert!(d.changes.is_empty());
    }

    #[test]
    fn a_new_leaver_waits_and_is_recorded_from_now() {
        let d = run(
            vec![gone("a", vec![])],
            &BTreeMap::new(),
            "2026-01-01T00:00:00Z",
        );
        assert!(d.plan.operations.is_empty());
        assert_eq!(d.plan.unchanged, 1);
        assert_eq!(d.waiting, 1);
        assert_eq!(d.changes.add.len(), 1);
        assert_eq!(d.changes.add[0].since, "2026-01-01T00:00:00Z");
    }

    #[test]
    fn still_gone_inside_the_period_waits_without_a_new_row() {
        let rows = BTreeMap::from([pending("a", "2026-01-01T00:00:00Z")]);
        let d = run(vec![gone("a", vec![])], &rows, "2026-01-03T23:59:59Z");
        assert!(d.plan.operations.is_empty());
        assert!(d.changes.is_empty(), "{:?}", d.changes);
    }

    #[test]
    fn gone_past_the_period_the_deactivation_is_due_and_the_row_stays_until_applied() {
        let rows = BTreeMap::from([pending("a", "2026-01-01T00:00:00Z")]);
        let d = run(vec![gone("a", vec![])], &rows, "2026-01-04T00:00:00Z");
        assert!(matches!(
            d.plan.operations[..],
            [Operation::Deactivate { .. }]
        ));
        assert_eq!(d.due, 1);
        // A guard may hold it: the row keeps its time so the period does not restart.
        assert!(d.changes.is_empty());
    }

    #[test]
    fn back_inside_the_period_stops_pending() {
        let rows = BTreeMap::from([pending("a", "2026-01-01T00:00:00Z")]);
        let d = run(vec![], &rows, "2026-01-02T00:00:00Z");
        assert_eq!(d.changes.remove, vec!["a".to_string()]);
    }

    #[test]
    fn a_delta_run_leaves_the_rows_of_learners_it_did_not_look_at() {
        let rows = BTreeMap::from([pending("a", "2026-01-01T00:00:00Z")]);
        let evaluated = BTreeSet::from(["b".to_string()]);
        let d = defer(
            Plan::default(),
            Grace {
                after: H72,
                now: at("2026-01-02T00:00:00Z"),
                pending: &rows,
                evaluated: Some(&evaluated),
            },
        );
        assert!(d.changes.remove.is_empty());
    }

    #[test]
    fn a_waiting_leavers_field_changes_still_apply_as_an_update() {
        let change = FieldChange {
            field: "department".to_string(),
            before: Some("Sales".to_string()),
            after: Some("Ops".to_string()),
        };
        let d = run(
            vec![gone("a", vec![change])],
            &BTreeMap::new(),
            "2026-01-01T00:00:00Z",
        );
        assert!(matches!(d.plan.operations[..], [Operation::Update { .. }]));
    }

    #[test]
    fn an_unreadable_time_waits_a_whole_period() {
        let rows = BTreeMap::from([pending("a", "yesterday")]);
        let d = run(vec![gone("a", vec![])], &rows, "2030-01-01T00:00:00Z");
        assert!(d.plan.operations.is_empty());
    }
}
