//! A run's counts and outcome. Pure: the guarded plan before the store, then the
//! store's report after it.

use std::collections::BTreeSet;

use crate::guard::{Guarded, RenameSuspect, UpdateHold};
use crate::plan::{ActionKind, Operation};
use crate::state::{Counts, Outcome};
use crate::store::ApplyReport;

/// What the guarded plan will do, before anything reaches the store.
pub fn planned(guarded: &Guarded) -> (Counts, Outcome) {
    let apply = &guarded.apply;
    let mut counts = Counts {
        created: apply.count(ActionKind::Created),
        updated: apply.count(ActionKind::Updated),
        deactivated: apply.count(ActionKind::Deactivated),
        reactivated: apply.count(ActionKind::Reactivated),
        held: guarded.held_learners(),
        unchanged: apply.unchanged,
        failed: 0,
        adopted: 0,
    };
    // A held deactivation that still applies its field changes counts once, as held.
    counts.updated -= apply
        .operations
        .iter()
        .filter(|o| {
            matches!(o, Operation::Update { .. })
                && guarded
                    .held
                    .iter()
                    .any(|h| h.external_id() == o.external_id())
        })
        .count();
    let outcome = if guarded.holds() {
        Outcome::Held
    } else {
        Outcome::Ok
    };
    (counts, outcome)
}

/// The lines that explain held field changes and held creates, each with what to do.
pub fn other_holds(
    directory: &str,
    updates: &[UpdateHold],
    rename: Option<&RenameSuspect>,
) -> Vec<String> {
    updates
        .iter()
        .map(|h| {
            format!(
                "{} changes held: {h}; review with `learner-sync status`, release with `learner-sync approve {directory}`",
                h.field
            )
        })
        .chain(rename.map(|r| format!("creates held: {r}")))
        .collect()
}

/// Add the holds a delta run carries over from earlier runs (learners it did not look
/// at): they count as held, and the run is held until they are approved.
pub fn carry_holds(planned: (Counts, Outcome), carried: usize) -> (Counts, Outcome) {
    let (mut counts, outcome) = planned;
    counts.held += carried;
    let outcome = match outcome {
        Outcome::Ok if carried > 0 => Outcome::Held,
        o => o,
    };
    (counts, outcome)
}

/// The counts and outcome once the store reported: a learner the store refused was
/// not created, updated, ...: it counts as failed only, and fails the run.
pub fn applied(
    operations: &[Operation],
    planned: (Counts, Outcome),
    report: &ApplyReport,
) -> (Counts, Outcome) {
    let (mut counts, outcome) = planned;
    counts.failed = report.failed.len();
    counts.adopted = report.adopted;
    let failed: BTreeSet<&str> = report.failed.iter().map(|(id, _)| id.as_str()).collect();
    for op in operations
        .iter()
        .filter(|o| failed.contains(o.external_id()))
    {
        let counter = match op.kind() {
            ActionKind::Created => &mut counts.created,
            ActionKind::Updated => &mut counts.updated,
            ActionKind::Deactivated => &mut counts.deactivated,
            ActionKind::Reactivated => &mut counts.reactivated,
            _ => continue,
        };
        *counter = counter.saturating_sub(1);
    }
    let outcome = if counts.failed > 0 {
        Outcome::Failed
    } else {
        outcome
    };
    (counts, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::HoldReason;
    use crate::model::{DeactivationReason, LearnerFields};
    use crate::plan::Plan;

    fn fields(name: &str) -> LearnerFields {
        LearnerFields {
            user_name: name.into(),
            ..Default::default()
        }
    }

    fn create(id: &str) -> Operation {
        Operation::Create {
            external_id: id.into(),
            fields: fields(id),
        }
    }

    fn deactivate(id: &str) -> Operation {
        Operation::Deactivate {
            external_id: id.into(),
            fields: fields(id),
            changes: vec![],
            reason: DeactivationReason::DeletedInDirectory,
        }
    }

    fn update(id: &str) -> Operation {
        Operation::Update {
            external_id: id.into(),
            fields: fields(id),
            changes: vec![],
        }
    }

    #[test]
    fn a_held_deactivation_with_field_changes_counts_once_as_held() {
        let guarded = Guarded {
            apply: Plan {
                operations: vec![create("1"), update("2"), update("3")],
                unchanged: 4,
            },
            held: vec![deactivate("2")],
            hold_reason: Some(HoldReason::EmptyRead { active: 1 }),
            ..Default::default()
        };
        let (counts, outcome) = planned(&guarded);
        assert_eq!(outcome, Outcome::Held);
        assert_eq!(
            counts,
            Counts {
                created: 1,
                updated: 1,
                held: 1,
                unchanged: 4,
                ..Default::default()
            }
        );
    }

    #[test]
    fn carried_holds_count_as_held_and_hold_the_run() {
        let (counts, outcome) = carry_holds((Counts::default(), Outcome::Ok), 2);
        assert_eq!((counts.held, outcome), (2, Outcome::Held));
        let (_, outcome) = carry_holds((Counts::default(), Outcome::Ok), 0);
        assert_eq!(outcome, Outcome::Ok);
    }

    #[test]
    fn a_refused_learner_counts_as_failed_only_and_fails_the_run() {
        let ops = vec![create("1"), create("2"), deactivate("3")];
        let guarded = Guarded {
            apply: Plan {
                operations: ops.clone(),
                unchanged: 0,
            },
            ..Default::default()
        };
        let report = ApplyReport {
            failed: vec![("2".into(), "409 uniqueness".into())],
            ..Default::default()
        };
        let (counts, outcome) = applied(&ops, planned(&guarded), &report);
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(
            (counts.created, counts.deactivated, counts.failed),
            (1, 1, 1)
        );
        let (_, ok) = applied(&ops, planned(&guarded), &ApplyReport::default());
        assert_eq!(ok, Outcome::Ok);
    }
}
