//! Safety guards: a pure decision on whether a run's deactivations may be applied.

use crate::plan::{Operation, Plan};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_deactivations: u64,
    pub max_deactivation_percent: f64,
}

/// Why a run's deactivations were held back.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldReason {
    /// The directory returned no users while the store has active learners.
    EmptyRead {
        active: usize,
    },
    OverCount {
        deactivations: usize,
        max: u64,
    },
    OverPercent {
        deactivations: usize,
        active: usize,
        max_percent: f64,
    },
}

impl std::fmt::Display for HoldReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldReason::EmptyRead { active } => write!(
                f,
                "the directory returned no users while {active} learners are active"
            ),
            HoldReason::OverCount { deactivations, max } => write!(
                f,
                "{deactivations} deactivations exceed max_deactivations = {max}"
            ),
            HoldReason::OverPercent {
                deactivations,
                active,
                max_percent,
            } => write!(
                f,
                "{deactivations} deactivations of {active} active learners exceed max_deactivation_percent = {max_percent}"
            ),
        }
    }
}

/// A plan after the guards: what may be applied now, and what is held for `approve`.
#[derive(Debug, Clone, PartialEq)]
pub struct Guarded {
    pub apply: Plan,
    /// Deactivations held back (their field changes, if any, are applied as updates).
    pub held: Vec<Operation>,
    pub hold_reason: Option<HoldReason>,
}

/// Decide. `active` is the number of the directory's active learners before the run;
/// `empty_read` is true when a complete listing returned nobody.
pub fn guard(plan: Plan, active: usize, empty_read: bool, limits: Limits) -> Guarded {
    let deactivations = plan
        .operations
        .iter()
        .filter(|o| matches!(o, Operation::Deactivate { .. }))
        .count();
    let hold_reason = if deactivations == 0 {
        None
    } else if empty_read && active > 0 {
        Some(HoldReason::EmptyRead { active })
    } else if deactivations as u64 > limits.max_deactivations {
        Some(HoldReason::OverCount {
            deactivations,
            max: limits.max_deactivations,
        })
    } else if deactivations as f64 * 100.0 > limits.max_deactivation_percent * active as f64 {
        // Exactly at the limit is allowed.
        Some(HoldReason::OverPercent {
            deactivations,
            active,
            max_percent: limits.max_deactivation_percent,
        })
    } else {
        None
    };
    if hold_reason.is_none() {
        return Guarded {
            apply: plan,
            held: vec![],
            hold_reason: None,
        };
    }
    let mut apply = Plan {
        operations: Vec::with_capacity(plan.operations.len()),
        unchanged: plan.unchanged,
    };
    let mut held = Vec::new();
    for op in plan.operations {
        match op {
            Operation::Deactivate {
                external_id,
                fields,
                changes,
                reason,
            } => {
                if !changes.is_empty() {
                    apply.operations.push(Operation::Update {
                        external_id: external_id.clone(),
                        fields: fields.clone(),
                        changes: changes.clone(),
                    });
                }
                held.push(Operation::Deactivate {
                    external_id,
                    fields,
                    changes,
                    reason,
                });
            }
            other => apply.operations.push(other),
        }
    }
    Guarded {
        apply,
        held,
        hold_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DeactivationReason, LearnerFields};

    fn deactivations(n: usize) -> Plan {
        Plan {
            operations: (0..n)
                .map(|i| Operation::Deactivate {
                    external_id: format!("{i:04}"),
                    fields: LearnerFields::default(),
                    changes: vec![],
                    reason: DeactivationReason::DeletedInDirectory,
                })
                .chain(std::iter::once(Operation::Create {
                    external_id: "new".into(),
                    fields: LearnerFields::default(),
                }))
                .collect(),
            unchanged: 0,
        }
    }
    const LIMITS: Limits = Limits {
        max_deactivations: 5,
        max_deactivation_percent: 10.0,
    };

    #[test]
    fn exactly_at_the_limits_is_allowed_one_more_is_held() {
        assert!(guard(deactivations(5), 50, false, LIMITS).held.is_empty());
        let g = guard(deactivations(6), 1000, false, LIMITS);
        assert_eq!(g.held.len(), 6);
        assert_eq!(g.apply.operations.len(), 1, "the create still applies");
        assert!(matches!(g.hold_reason, Some(HoldReason::OverCount { .. })));
        // 10% of 40 is 4: four pass, five are held.
        assert!(guard(deactivations(4), 40, false, LIMITS).held.is_empty());
        assert!(matches!(
            guard(deactivations(5), 40, false, LIMITS).hold_reason,
            Some(HoldReason::OverPercent { .. })
        ));
    }

    #[test]
    fn an_empty_read_holds_even_a_single_deactivation() {
        let g = guard(deactivations(1), 1, true, LIMITS);
        assert!(matches!(
            g.hold_reason,
            Some(HoldReason::EmptyRead { active: 1 })
        ));
    }
}
