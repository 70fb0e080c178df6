//! The plan: a pure, deterministic diff from what the store holds to what the
//! directory says it should hold. Identity is the external id, never the email.

use std::collections::BTreeMap;

use crate::mapping::Desired;
use crate::model::{DeactivationReason, Field, Learner, LearnerFields};

/// One changed column, with its old and new value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Create {
        external_id: String,
        fields: LearnerFields,
    },
    /// Only `changes` differ; `fields` is the complete new value.
    Update {
        external_id: String,
        fields: LearnerFields,
        changes: Vec<FieldChange>,
    },
    Deactivate {
        external_id: String,
        fields: LearnerFields,
        changes: Vec<FieldChange>,
        reason: DeactivationReason,
    },
    Reactivate {
        external_id: String,
        fields: LearnerFields,
        changes: Vec<FieldChange>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    Created,
    Updated,
    Deactivated,
    Reactivated,
    Held,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Created => "created",
            ActionKind::Updated => "updated",
            ActionKind::Deactivated => "deactivated",
            ActionKind::Reactivated => "reactivated",
            ActionKind::Held => "held",
        }
    }
}

impl Operation {
    pub fn external_id(&self) -> &str {
        match self {
            Operation::Create { external_id, .. }
            | Operation::Update { external_id, .. }
            | Operation::Deactivate { external_id, .. }
            | Operation::Reactivate { external_id, .. } => external_id,
        }
    }

    pub fn fields(&self) -> &LearnerFields {
        match self {
            Operation::Create { fields, .. }
            | Operation::Update { fields, .. }
            | Operation::Deactivate { fields, .. }
            | Operation::Reactivate { fields, .. } => fields,
        }
    }

    pub fn changes(&self) -> &[FieldChange] {
        match self {
            Operation::Create { .. } => &[],
            Operation::Update { changes, .. }
            | Operation::Deactivate { changes, .. }
            | Operation::Reactivate { changes, .. } => changes,
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            Operation::Create { .. } => ActionKind::Created,
            Operation::Update { .. } => ActionKind::Updated,
            Operation::Deactivate { .. } => ActionKind::Deactivated,
            Operation::Reactivate { .. } => ActionKind::Reactivated,
        }
    }

    /// The action log's explanation: `created`, `updated: department, job_title`,
    /// `deactivated: disabled in directory`.
    pub fn reason(&self) -> String {
        let names = || {
            self.changes()
                .iter()
                .map(|c| c.field.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Operation::Create { .. } => "new in directory".to_string(),
            Operation::Update { .. } => format!("changed: {}", names()),
            Operation::Deactivate { reason, .. } => reason.as_str().to_string(),
            Operation::Reactivate { .. } => "active in directory again".to_string(),
        }
    }
}

/// The operations of one run, ordered by external id, and how many learners needed nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub operations: Vec<Operation>,
    pub unchanged: usize,
}

impl Plan {
    pub fn count(&self, kind: ActionKind) -> usize {
        self.operations.iter().filter(|o| o.kind() == kind).count()
    }
}

/// Diff the store's learners of one directory against what the directory says now.
/// Learners absent from `desired` are gone from the directory.
pub fn plan(store: impl IntoIterator<Item = Learner>, desired: BTreeMap<String, Desired>) -> Plan {
    let mut planner = Planner::new(desired);
    for learner in store {
        planner.visit(learner);
    }
    planner.finish()
}

/// The plan as a state machine fed one store row at a time, so that a large store
/// never has to be held in memory next to the directory.
pub struct Planner {
    desired: BTreeMap<String, Desired>,
    out: Plan,
    active: usize,
    visited: usize,
}

impl Planner {
    pub fn new(desired: BTreeMap<String, Desired>) -> Planner {
        Planner {
            desired,
            out: Plan::default(),
            active: 0,
            visited: 0,
        }
    }

    /// How many of the visited learners were active before the run.
    pub fn active_before(&self) -> usize {
        self.active
    }

    /// How many store learners were visited.
    pub fn visited(&self) -> usize {
        self.visited
    }

    /// Compare one learner of the store with what the directory says about it.
    pub fn visit(&mut self, l: Learner) {
        self.visited += 1;
        self.active += usize::from(l.active);
        let Some(want) = self.desired.remove(&l.external_id) else {
            if l.active {
                self.out.operations.push(Operation::Deactivate {
                    external_id: l.external_id,
                    fields: l.fields,
                    changes: vec![],
                    reason: DeactivationReason::DeletedInDirectory,
                });
            } else {
                self.out.unchanged += 1;
            }
            return;
        };
        let id = l.external_id;
        let changes = diff(&l.fields, &want.fields);
        let op = match (l.active, want.inactive) {
            (false, None) => Some(Operation::Reactivate {
                external_id: id,
                changes,
                fields: want.fields,
            }),
            (true, Some(reason)) => Some(Operation::Deactivate {
                external_id: id,
                changes,
                fields: want.fields,
                reason,
            }),
            _ if changes.is_empty() => None,
            _ => Some(Operation::Update {
                external_id: id,
                fields: want.fields,
                changes,
            }),
        };
        match op {
            Some(op) => self.out.operations.push(op),
            None => self.out.unchanged += 1,
        }
    }

    /// Everyone the store did not have: active ones are created; someone the
    /// directory has but who was never a learner and is inactive stays absent.
    pub fn finish(mut self) -> Plan {
        for (n, (id, want)) in std::mem::take(&mut self.desired).into_iter().enumerate() {
            if n % TRIM_EVERY == TRIM_EVERY - 1 {
                release_freed_memory();
            }
            match want.inactive {
                None => self.out.operations.push(Operation::Create {
                    external_id: id,
                    fields: want.fields,
                }),
                Some(_) => self.out.unchanged += 1,
            }
        }
        self.out
            .operations
            .sort_unstable_by(|a, b| a.external_id().cmp(b.external_id()));
        self.out
    }
}

/// Creates between two [`release_freed_memory`] calls in [`Planner::finish`].
const TRIM_EVERY: usize = 32_768;

/// Hand the pages of what the plan has freed back to the kernel. `finish` moves every
/// create out of the desired map (whose nodes are freed as it goes) into one growing
/// vector, which glibc maps afresh and cannot place in those freed nodes: without this,
/// an initial sync's peak holds both (about 30 MB at 100,000 creates).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim(3) takes no pointers and only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The columns that differ, in schema order, then the extra SCIM attributes that
/// differ, by name. Emails compare case-insensitively.
pub fn diff(before: &LearnerFields, after: &LearnerFields) -> Vec<FieldChange> {
    let names: std::collections::BTreeSet<&String> =
        before.scim.keys().chain(after.scim.keys()).collect();
    let extra = names.into_iter().filter_map(|name| {
        let (b, a) = (before.scim.get(name), after.scim.get(name));
        (b != a).then(|| FieldChange {
            field: name.clone(),
            before: b.cloned(),
            after: a.cloned(),
        })
    });
    let columns: Vec<FieldChange> = Field::ALL
        .into_iter()
        .filter_map(|field| {
            let (b, a) = (before.get(field), after.get(field));
            let same = match (b, a) {
                (Some(b), Some(a)) if field.case_insensitive() => b.eq_ignore_ascii_case(a),
                _ => b == a,
            };
            (!same).then(|| FieldChange {
                field: field.name().to_string(),
                before: b.map(str::to_string),
                after: a.map(str::to_string),
            })
        })
        .collect();
    columns.into_iter().chain(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(user: &str, dept: Option<&str>) -> LearnerFields {
        LearnerFields {
            user_name: user.into(),
            email: Some(format!("{user}@x.io")),
            department: dept.map(Into::into),
            ..Default::default()
        }
    }
    fn learner(id: &str, f: LearnerFields, active: bool) -> (String, Learner) {
        (
            id.into(),
            Learner {
                external_id: id.into(),
                fields: f,
                active,
            },
        )
    }
    fn want(id: &str, f: LearnerFields, inactive: Option<DeactivationReason>) -> (String, Desired) {
        (
            id.into(),
            Desired {
                fields: f,
                inactive,
            },
        )
    }

    #[test]
    fn every_kind_of_change_is_planned_in_id_order() {
        let store = BTreeMap::from([
            learner("a", fields("ann", Some("Sales")), true),
            learner("b", fields("bob", None), true),
            learner("c", fields("cat", None), false),
            learner("d", fields("dan", None), true),
            learner("e", fields("eve", None), true),
        ]);
        let desired = BTreeMap::from([
            want("a", fields("ann", Some("Legal")), None),
            want("c", fields("cat", None), None),
            want(
                "d",
                fields("dan", None),
                Some(DeactivationReason::DisabledInDirectory),
            ),
            want("e", fields("eve", None), None),
            want("f", fields("fay", None), None),
        ]);
        let p = plan(store.into_values(), desired);
        let summary: Vec<(&str, ActionKind, String)> = p
            .operations
            .iter()
            .map(|o| (o.external_id(), o.kind(), o.reason()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a", ActionKind::Updated, "changed: department".to_string()),
                (
                    "b",
                    ActionKind::Deactivated,
                    "deleted in directory".to_string()
                ),
                (
                    "c",
                    ActionKind::Reactivated,
                    "active in directory again".to_string()
                ),
                (
                    "d",
                    ActionKind::Deactivated,
                    "disabled in directory".to_string()
                ),
                ("f", ActionKind::Created, "new in directory".to_string()),
            ]
        );
        assert_eq!(p.unchanged, 1);
    }

    #[test]
    fn a_renamed_email_is_an_update_of_the_same_learner() {
        let store = BTreeMap::from([learner("a", fields("ann", None), true)]);
        let mut renamed = fields("ann.smith", None);
        renamed.email = Some("ann.smith@x.io".into());
        let p = plan(
            store.into_values(),
            BTreeMap::from([want("a", renamed, None)]),
        );
        assert_eq!(p.operations.len(), 1);
        let changed: Vec<&str> = p.operations[0]
            .changes()
            .iter()
            .map(|c| c.field.as_str())
            .collect();
        assert_eq!(changed, ["user_name", "email"]);
    }

    #[test]
    fn email_case_alone_is_not_a_change_and_inactive_newcomers_are_not_created() {
        let store = BTreeMap::from([learner("a", fields("ann", None), true)]);
        let mut upper = fields("ann", None);
        upper.email = Some("ANN@X.IO".into());
        let desired = BTreeMap::from([
            want("a", upper, None),
            want(
                "z",
                fields("zed", None),
                Some(DeactivationReason::OutOfScope),
            ),
        ]);
        let p = plan(store.into_values(), desired);
        assert!(p.operations.is_empty());
        assert_eq!(p.unchanged, 2);
    }

    #[test]
    fn extra_scim_attributes_are_diffed_by_name_after_the_columns() {
        let ext = "urn:ietf:params:scim:schemas:extension:knowbe4:kmsat:2.0:User:customField1";
        let mut before = fields("ann", Some("Sales"));
        before.scim.insert("nickName".into(), "annie".into());
        let mut after = fields("ann", Some("Legal"));
        after.scim.insert(ext.into(), "R&D".into());
        let changes = diff(&before, &after);
        let got: Vec<(&str, Option<&str>, Option<&str>)> = changes
            .iter()
            .map(|c| (c.field.as_str(), c.before.as_deref(), c.after.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("department", Some("Sales"), Some("Legal")),
                ("nickName", Some("annie"), None),
                (ext, None, Some("R&D")),
            ]
        );
        assert!(diff(&after, &after.clone()).is_empty());
    }
}
