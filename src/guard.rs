//! Safety guards: a pure decision on what of a run's plan may be applied now and what
//! is held for `approve`: deactivations over the per-run or per-day limits, mass
//! changes of one field, and every create of a directory that looks renamed.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Field, LearnerFields, FIELD_NAMES};
use crate::plan::{FieldChange, Operation, Plan};

/// The rolling window of `max_deactivation_percent_per_day`.
pub const WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Below this many learners a directory is too small for a percentage of updates to
/// mean anything (3 of 4 people moving department is normal), so the mass-update
/// guard does not apply.
pub const MASS_UPDATE_MIN_LEARNERS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_deactivations: u64,
    pub max_deactivation_percent: f64,
    /// Of the learners active at the start of the window (see `Context`).
    pub max_deactivation_percent_per_day: f64,
    /// Learners changing one field in one run, as a percentage of the directory's.
    pub max_update_percent: f64,
}

/// What the guards know about the directory besides the plan.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Context {
    /// Active learners of the directory before the run.
    pub active: usize,
    /// Learners of the directory in the store before the run, active or not.
    pub learners: usize,
    /// A complete listing returned nobody.
    pub empty_read: bool,
    /// Deactivations that reached the store in the last `WINDOW` (sync runs and
    /// `approve` alike), from the action log.
    pub deactivated_in_window: usize,
}

/// The start of the window that ends at `now`, as the action log writes times.
pub fn window_start(now: chrono::DateTime<chrono::Utc>) -> String {
    (now - WINDOW).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
    /// This run's and the window's deactivations together, of the learners active at
    /// the window's start (those active now plus those the window deactivated).
    OverDailyPercent {
        deactivations: usize,
        earlier: usize,
        active_at_start: usize,
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
            HoldReason::OverDailyPercent {
                deactivations,
                earlier,
                active_at_start,
                max_percent,
            } => write!(
                f,
                "{deactivations} deactivations after {earlier} in the last 24 h would deactivate {} of the {active_at_start} learners active 24 h ago, more than max_deactivation_percent_per_day = {max_percent}",
                deactivations + earlier
            ),
        }
    }
}

/// One field whose changes were held: too many learners would change it at once.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateHold {
    pub field: String,
    pub updates: usize,
    pub learners: usize,
    pub max_percent: f64,
}

impl std::fmt::Display for UpdateHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} learners would change {}, more than max_update_percent = {}",
            self.updates, self.learners, self.field, self.max_percent
        )
    }
}

/// A directory with no learners whose users are learners of a directory that is no
/// longer configured: most likely the same directory under a new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenameSuspect {
    /// The directory being run.
    pub directory: String,
    /// The unconfigured directory that holds the same users.
    pub old: String,
    /// How many of this run's creates are users of `old`.
    pub shared: usize,
    pub creates: usize,
}

impl std::fmt::Display for RenameSuspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (new, old) = (&self.directory, &self.old);
        write!(
            f,
            "`{new}` has no learners yet, but {} of its {} users are learners of `{old}`, a directory no longer in the config; if `{old}` was renamed to `{new}`, run `learner-sync rename-directory {old} {new}`; if `{new}` is a new directory, run `learner-sync approve {new}`",
            self.shared, self.creates
        )
    }
}

/// Whether the creates of a directory that has no learners look like a renamed one:
/// more than half of them are users of an unconfigured directory. `shared` is, per
/// unconfigured directory, how many of the creates it holds.
pub fn rename_suspect(
    directory: &str,
    ctx: &Context,
    creates: usize,
    shared: &BTreeMap<String, usize>,
) -> Option<RenameSuspect> {
    if ctx.learners > 0 || creates == 0 {
        return None;
    }
    // The most shared wins; ties go to the first name, for a deterministic hint.
    let (old, n) = shared
        .iter()
        .fold(None::<(&String, usize)>, |best, (d, n)| match best {
            Some((_, m)) if m >= *n => best,
            _ => Some((d, *n)),
        })?;
    (n * 2 > creates).then(|| RenameSuspect {
        directory: directory.to_string(),
        old: old.clone(),
        shared: n,
        creates,
    })
}

/// A plan after the guards: what may be applied now, and what is held for `approve`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Guarded {
    pub apply: Plan,
    /// Deactivations held back (their field changes, if any, are applied as updates).
    pub held: Vec<Operation>,
    pub hold_reason: Option<HoldReason>,
    /// Field changes held back: per learner an `Update` that carries only the held
    /// changes (its `fields` are the learner's current values). The rest of that
    /// learner's operation still applies.
    pub held_updates: Vec<Operation>,
    /// The fields whose changes are held, in schema order.
    pub update_holds: Vec<UpdateHold>,
    /// Creates held because the directory looks renamed.
    pub held_creates: Vec<Operation>,
    pub rename: Option<RenameSuspect>,
}

impl Guarded {
    /// Every held operation, for the action log.
    pub fn all_held(&self) -> impl Iterator<Item = &Operation> {
        self.held
            .iter()
            .chain(&self.held_updates)
            .chain(&self.held_creates)
    }

    /// How many learners have something held (a learner whose deactivation and
    /// email change are both held counts once).
    pub fn held_learners(&self) -> usize {
        self.all_held()
            .map(Operation::external_id)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Whether anything is held.
    pub fn holds(&self) -> bool {
        self.all_held().next().is_some()
    }
}

/// Set a managed column by name (`user_name` is never null); an unknown name is ignored.
pub fn set_field(fields: &mut LearnerFields, name: &str, value: Option<String>) {
    match (Field::parse(name), value) {
        (Some(field), value) => fields.set(field, value),
        // An extra SCIM attribute (`[directory.mapping.scim]`).
        (None, Some(v)) => {
            fields.scim.insert(name.to_string(), v);
        }
        (None, None) => {
            fields.scim.remove(name);
        }
    }
}

/// Whether a held change still applies: the learner's value is still the one the
/// change was planned from.
pub fn still_before(fields: &LearnerFields, change: &FieldChange) -> bool {
    let Some(field) = Field::parse(&change.field) else {
        return fields.scim.get(&change.field).map(String::as_str) == change.before.as_deref();
    };
    match (fields.get(field), change.before.as_deref()) {
        (Some(now), Some(before)) if field.case_insensitive() => now.eq_ignore_ascii_case(before),
        (now, before) => now == before,
    }
}

/// Decide. `rename` is what `rename_suspect` found, if anything.
pub fn guard(plan: Plan, ctx: Context, limits: Limits, rename: Option<RenameSuspect>) -> Guarded {
    let mut out = Guarded {
        apply: Plan {
            operations: Vec::new(),
            unchanged: plan.unchanged,
        },
        held: vec![],
        hold_reason: None,
        held_updates: vec![],
        update_holds: mass_updates(&plan, &ctx, &limits),
        held_creates: vec![],
        rename,
    };
    let held_fields: BTreeSet<&str> = out.update_holds.iter().map(|h| h.field.as_str()).collect();
    // The operations move through the plan's own vector (an in-place collect), so an
    // initial sync of 100,000 creates holds one vector of them, not three.
    let remaining: Vec<Operation> = plan
        .operations
        .into_iter()
        .filter_map(|op| {
            if out.rename.is_some() && matches!(op, Operation::Create { .. }) {
                out.held_creates.push(op);
                return None;
            }
            match hold_fields(op, &held_fields) {
                (kept, None) => kept,
                (kept, Some(held)) => {
                    out.held_updates.push(held);
                    kept
                }
            }
        })
        .collect();

    let deactivations = remaining
        .iter()
        .filter(|o| matches!(o, Operation::Deactivate { .. }))
        .count();
    out.hold_reason = deactivation_hold(deactivations, &ctx, &limits);
    if out.hold_reason.is_none() {
        out.apply.operations = remaining;
        return out;
    }
    let held = &mut out.held;
    out.apply.operations = remaining
        .into_iter()
        .filter_map(|op| match op {
            Operation::Deactivate {
                external_id,
                fields,
                changes,
                reason,
            } => {
                let update = (!changes.is_empty()).then(|| Operation::Update {
                    external_id: external_id.clone(),
                    fields: fields.clone(),
                    changes: changes.clone(),
                });
                held.push(Operation::Deactivate {
                    external_id,
                    fields,
                    changes,
                    reason,
                });
                update
            }
            other => Some(other),
        })
        .collect();
    out
}

fn deactivation_hold(deactivations: usize, ctx: &Context, limits: &Limits) -> Option<HoldReason> {
    let active = ctx.active;
    let earlier = ctx.deactivated_in_window;
    let active_at_start = active + earlier;
    if deactivations == 0 {
        None
    } else if ctx.empty_read && active > 0 {
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
    } else if (deactivations + earlier) as f64 * 100.0
        > limits.max_deactivation_percent_per_day * active_at_start as f64
    {
        Some(HoldReason::OverDailyPercent {
            deactivations,
            earlier,
            active_at_start,
            max_percent: limits.max_deactivation_percent_per_day,
        })
    } else {
        None
    }
}

/// The fields that more than `max_update_percent` of the directory's learners would
/// change in this run (creates do not count: nobody had a value before).
fn mass_updates(plan: &Plan, ctx: &Context, limits: &Limits) -> Vec<UpdateHold> {
    if ctx.learners < MASS_UPDATE_MIN_LEARNERS {
        return vec![];
    }
    let mut per_field: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &plan.operations {
        for c in op.changes() {
            *per_field.entry(c.field.as_str()).or_default() += 1;
        }
    }
    // The columns in schema order, then the extra SCIM attributes by name.
    let extras = per_field.keys().filter(|f| !FIELD_NAMES.contains(*f));
    FIELD_NAMES
        .iter()
        .chain(extras)
        .filter_map(|field| {
            let updates = per_field.get(field).copied().unwrap_or(0);
            (updates as f64 * 100.0 > limits.max_update_percent * ctx.learners as f64).then(|| {
                UpdateHold {
                    field: field.to_string(),
                    updates,
                    learners: ctx.learners,
                    max_percent: limits.max_update_percent,
                }
            })
        })
        .collect()
}

/// Split the changes of held fields off an operation: `(what still applies, the held
/// changes as an Update)`. An update left with no change applies nothing.
fn hold_fields(op: Operation, held: &BTreeSet<&str>) -> (Option<Operation>, Option<Operation>) {
    if held.is_empty() || !op.changes().iter().any(|c| held.contains(c.field.as_str())) {
        return (Some(op), None);
    }
    let external_id = op.external_id().to_string();
    let (mut fields, changes) = match op.clone() {
        Operation::Create { .. } => return (Some(op), None),
        Operation::Update {
            fields, changes, ..
        }
        | Operation::Deactivate {
            fields, changes, ..
        }
        | Operation::Reactivate {
            fields, changes, ..
        } => (fields, changes),
    };
    let (held_changes, kept): (Vec<FieldChange>, Vec<FieldChange>) = changes
        .into_iter()
        .partition(|c| held.contains(c.field.as_str()));
    // The store keeps the value it has until `approve`.
    for c in &held_changes {
        set_field(&mut fields, &c.field, c.before.clone());
    }
    let held_op = Operation::Update {
        external_id: external_id.clone(),
        fields: fields.clone(),
        changes: held_changes,
    };
    let kept = match op {
        Operation::Update { .. } if kept.is_empty() => None,
        Operation::Update { .. } => Some(Operation::Update {
            external_id,
            fields,
            changes: kept,
        }),
        Operation::Deactivate { reason, .. } => Some(Operation::Deactivate {
            external_id,
            fields,
            changes: kept,
            reason,
        }),
        Operation::Reactivate { .. } => Some(Operation::Reactivate {
            external_id,
            fields,
            changes: kept,
        }),
        Operation::Create { .. } => None,
    };
    (kept, Some(held_op))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeactivationReason;

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
        max_deactivation_percent_per_day: 20.0,
        max_update_percent: 50.0,
    };
    fn ctx(active: usize) -> Context {
        Context {
            active,
            learners: active,
            ..Context::default()
        }
    }
    fn g(plan: Plan, ctx: Context) -> Guarded {
        guard(plan, ctx, LIMITS, None)
    }

    #[test]
    fn exactly_at_the_limits_is_allowed_one_more_is_held() {
        assert!(g(deactivations(5), ctx(50)).held.is_empty());
        let out = g(deactivations(6), ctx(1000));
        assert_eq!(out.held.len(), 6);
        assert_eq!(out.apply.operations.len(), 1, "the create still applies");
        assert!(matches!(
            out.hold_reason,
            Some(HoldReason::OverCount { .. })
        ));
        // 10% of 40 is 4: four pass, five are held.
        assert!(g(deactivations(4), ctx(40)).held.is_empty());
        assert!(matches!(
            g(deactivations(5), ctx(40)).hold_reason,
            Some(HoldReason::OverPercent { .. })
        ));
    }

    #[test]
    fn an_empty_read_holds_even_a_single_deactivation() {
        let c = Context {
            empty_read: true,
            ..ctx(1)
        };
        assert!(matches!(
            g(deactivations(1), c).hold_reason,
            Some(HoldReason::EmptyRead { active: 1 })
        ));
    }

    #[test]
    fn the_day_counts_earlier_deactivations_against_the_learners_active_at_its_start() {
        // 100 were active 24 h ago; 15 left since, 85 are active. 20% of 100 is 20.
        let c = Context {
            deactivated_in_window: 15,
            ..ctx(85)
        };
        let limits = Limits {
            max_deactivations: 1000,
            ..LIMITS
        };
        assert!(
            guard(deactivations(5), c, limits, None).held.is_empty(),
            "15 + 5 = 20: at the limit"
        );
        let out = guard(deactivations(6), c, limits, None);
        assert_eq!(
            out.held.len(),
            6,
            "6 of 85 is under 10%, but 21 of 100 is over 20%"
        );
        assert_eq!(
            out.hold_reason,
            Some(HoldReason::OverDailyPercent {
                deactivations: 6,
                earlier: 15,
                active_at_start: 100,
                max_percent: 20.0
            })
        );
        assert!(out
            .hold_reason
            .map(|r| r.to_string())
            .unwrap_or_default()
            .contains("21 of the 100 learners active 24 h ago"));
    }

    #[test]
    fn the_window_starts_24_hours_before_now() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T18:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        assert_eq!(window_start(now), "2026-12-01T18:00:00Z");
    }

    fn email_changes(n: usize, also_department: bool) -> Plan {
        Plan {
            operations: (0..n)
                .map(|i| {
                    let mut changes = vec![FieldChange {
                        field: "email".into(),
                        before: Some(format!("u{i}@old.io")),
                        after: Some(format!("u{i}@new.io")),
                    }];
                    if also_department && i == 0 {
                        changes.push(FieldChange {
                            field: "department".into(),
                            before: None,
                            after: Some("Legal".into()),
                        });
                    }
                    Operation::Update {
                        external_id: format!("{i:04}"),
                        fields: LearnerFields {
                            user_name: format!("u{i}"),
                            email: Some(format!("u{i}@new.io")),
                            department: (also_department && i == 0).then(|| "Legal".into()),
                            ..Default::default()
                        },
                        changes,
                    }
                })
                .collect(),
            unchanged: 0,
        }
    }

    #[test]
    fn a_field_changed_for_more_than_the_limit_is_held_and_other_fields_still_apply() {
        // 50% of 20 is 10: ten pass.
        let out = g(email_changes(10, false), ctx(20));
        assert!(out.held_updates.is_empty() && out.update_holds.is_empty());
        assert_eq!(out.apply.operations.len(), 10);

        let out = g(email_changes(11, true), ctx(20));
        assert_eq!(
            out.update_holds,
            vec![UpdateHold {
                field: "email".into(),
                updates: 11,
                learners: 20,
                max_percent: 50.0
            }]
        );
        assert_eq!(out.held_updates.len(), 11);
        assert_eq!(out.held_learners(), 11);
        // Only learner 0 had another change: its department applies, its email stays.
        assert_eq!(out.apply.operations.len(), 1);
        let kept = &out.apply.operations[0];
        assert_eq!(kept.external_id(), "0000");
        assert_eq!(kept.fields().email.as_deref(), Some("u0@old.io"));
        assert_eq!(kept.fields().department.as_deref(), Some("Legal"));
        let fields: Vec<&str> = kept.changes().iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["department"]);
        let held = &out.held_updates[0];
        assert_eq!(held.changes()[0].after.as_deref(), Some("u0@new.io"));
    }

    #[test]
    fn a_small_directory_is_never_held_for_mass_updates() {
        let out = g(email_changes(9, false), ctx(9));
        assert!(out.held_updates.is_empty());
        assert_eq!(out.apply.operations.len(), 9);
    }

    #[test]
    fn a_held_change_still_applies_only_while_the_learner_has_the_old_value() {
        let change = FieldChange {
            field: "email".into(),
            before: Some("a@old.io".into()),
            after: Some("a@new.io".into()),
        };
        let mut f = LearnerFields {
            email: Some("A@OLD.IO".into()),
            ..Default::default()
        };
        assert!(still_before(&f, &change));
        set_field(&mut f, "email", Some("x@y.io".into()));
        assert!(!still_before(&f, &change));
    }

    #[test]
    fn a_directory_with_no_learners_sharing_most_users_with_an_unconfigured_one_holds_its_creates()
    {
        let empty = Context::default();
        let shared = BTreeMap::from([("gone".to_string(), 3), ("old".to_string(), 6)]);
        let s = rename_suspect("new", &empty, 10, &shared);
        assert_eq!(
            s,
            Some(RenameSuspect {
                directory: "new".into(),
                old: "old".into(),
                shared: 6,
                creates: 10
            })
        );
        assert!(s
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default()
            .contains("learner-sync rename-directory old new"));
        // Half is not more than half; a directory with learners is never suspect.
        assert_eq!(rename_suspect("new", &empty, 12, &shared), None);
        assert_eq!(rename_suspect("new", &ctx(1), 10, &shared), None);

        let out = guard(deactivations(0), empty, LIMITS, s);
        assert_eq!(out.held_creates.len(), 1);
        assert!(out.apply.operations.is_empty() && out.holds());
    }
}
