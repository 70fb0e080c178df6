//! Directory groups in the learner store (issue 16): which groups a directory selects,
//! what the store has, and the operations from one to the other.
//!
//! Pure: the group step of a run (`run::groups`) reads the directory's groups, limits
//! their members to the learners in scope, asks the store for what it has, and applies
//! what `plan` and `guard` return.

use std::collections::{BTreeMap, BTreeSet};

/// `groups = ...` of a directory: which of its groups reach the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GroupSelection {
    /// No groups (the default).
    #[default]
    None,
    /// The groups the directory's scope names (for an app scope: the groups assigned
    /// to the app).
    Scoped,
    /// Groups by display name (Entra) or name / email (Google, CSV).
    Names(Vec<String>),
    /// Groups by object id (Entra), id or email (Google), name (CSV).
    Ids(Vec<String>),
    /// Every group whose display name starts with this.
    Prefix(String),
}

impl GroupSelection {
    pub fn is_none(&self) -> bool {
        matches!(self, GroupSelection::None)
    }

    /// Whether a group of this name and id is selected (for sources that list every
    /// group and pick).
    pub fn picks(&self, id: &str, name: &str, email: Option<&str>) -> bool {
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match self {
            GroupSelection::None | GroupSelection::Scoped => false,
            GroupSelection::Names(names) => names
                .iter()
                .any(|n| same(n, name) || email.is_some_and(|e| same(n, e))),
            GroupSelection::Ids(ids) => ids
                .iter()
                .any(|i| i == id || email.is_some_and(|e| same(i, e))),
            GroupSelection::Prefix(p) => name
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        }
    }
}

/// A group as the directory has it, or as the store holds it. `members` are learner
/// external ids; nested groups are already flattened.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub external_id: String,
    pub display_name: String,
    pub email: Option<String>,
    pub members: BTreeSet<String>,
}

/// Groups by external id.
pub type Groups = BTreeMap<String, Group>;

/// One change to the store's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// A new group; the store creates it without members, then adds `group.members`.
    Create { group: Group },
    /// The display name or email changed.
    Rename {
        external_id: String,
        display_name: String,
        email: Option<String>,
        before: String,
    },
    AddMembers {
        external_id: String,
        display_name: String,
        members: Vec<String>,
    },
    RemoveMembers {
        external_id: String,
        display_name: String,
        members: Vec<String>,
    },
    /// Gone from the directory or no longer selected: removed from the store (a group
    /// is not training history).
    Remove {
        external_id: String,
        display_name: String,
    },
}

impl GroupOp {
    pub fn external_id(&self) -> &str {
        match self {
            GroupOp::Create { group } => &group.external_id,
            GroupOp::Rename { external_id, .. }
            | GroupOp::AddMembers { external_id, .. }
            | GroupOp::RemoveMembers { external_id, .. }
            | GroupOp::Remove { external_id, .. } => external_id,
        }
    }

    pub fn display_name(&self) -> &str {
        match self {
            GroupOp::Create { group } => &group.display_name,
            GroupOp::Rename { display_name, .. }
            | GroupOp::AddMembers { display_name, .. }
            | GroupOp::RemoveMembers { display_name, .. }
            | GroupOp::Remove { display_name, .. } => display_name,
        }
    }

    /// The metric label and action-log verb of the operation.
    pub fn kind(&self) -> &'static str {
        match self {
            GroupOp::Create { .. } => "group_created",
            GroupOp::Rename { .. } => "group_renamed",
            GroupOp::AddMembers { .. } => "member_added",
            GroupOp::RemoveMembers { .. } => "member_removed",
            GroupOp::Remove { .. } => "group_removed",
        }
    }

    /// Memberships the operation adds (a create adds all of its members).
    pub fn added(&self) -> &[String] {
        match self {
            GroupOp::AddMembers { members, .. } => members,
            _ => &[],
        }
    }
}

/// What a group step would do, by kind, for the run line, `status` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupCounts {
    pub created: usize,
    pub renamed: usize,
    pub removed: usize,
    pub members_added: usize,
    pub members_removed: usize,
    /// Removals held by the guard.
    #[serde(default)]
    pub held: usize,
    /// Groups and memberships in the store after the step.
    #[serde(default)]
    pub groups: usize,
    #[serde(default)]
    pub memberships: usize,
}

impl GroupCounts {
    pub fn of(ops: &[GroupOp]) -> GroupCounts {
        let mut c = GroupCounts::default();
        for op in ops {
            match op {
                GroupOp::Create { group } => {
                    c.created += 1;
                    c.members_added += group.members.len();
                }
                GroupOp::Rename { .. } => c.renamed += 1,
                GroupOp::AddMembers { members, .. } => c.members_added += members.len(),
                GroupOp::RemoveMembers { members, .. } => c.members_removed += members.len(),
                GroupOp::Remove { .. } => c.removed += 1,
            }
        }
        c
    }

    /// Whether the step changes nothing (totals aside).
    pub fn is_empty(&self) -> bool {
        GroupCounts {
            groups: 0,
            memberships: 0,
            ..*self
        } == GroupCounts::default()
    }

    /// Count what `groups` holds.
    pub fn with_totals(self, groups: &Groups) -> GroupCounts {
        GroupCounts {
            groups: groups.len(),
            memberships: groups.values().map(|g| g.members.len()).sum(),
            ..self
        }
    }
}

impl std::fmt::Display for GroupCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "groups: created {}, renamed {}, removed {}, members added {}, members removed {} ({} groups, {} memberships)",
            self.created,
            self.renamed,
            self.removed,
            self.members_added,
            self.members_removed,
            self.groups,
            self.memberships
        )?;
        if self.held > 0 {
            write!(f, ", held {} removals", self.held)?;
        }
        Ok(())
    }
}

/// Keep only the members that are learners in scope (active in the store after this
/// run's user changes).
pub fn limit_members(groups: &mut Groups, in_scope: &BTreeSet<String>) {
    for g in groups.values_mut() {
        g.members.retain(|m| in_scope.contains(m));
    }
}

/// The operations that make the store's groups (`current`) what the directory wants.
/// Renames come before member changes, creates before everything else of theirs.
pub fn plan(wanted: &Groups, current: &Groups) -> Vec<GroupOp> {
    let mut ops = Vec::new();
    for (id, want) in wanted {
        let Some(have) = current.get(id) else {
            ops.push(GroupOp::Create {
                group: Group {
                    members: BTreeSet::new(),
                    ..want.clone()
                },
            });
            if !want.members.is_empty() {
                ops.push(GroupOp::AddMembers {
                    external_id: id.clone(),
                    display_name: want.display_name.clone(),
                    members: want.members.iter().cloned().collect(),
                });
            }
            continue;
        };
        if have.display_name != want.display_name || have.email != want.email {
            ops.push(GroupOp::Rename {
                external_id: id.clone(),
                display_name: want.display_name.clone(),
                email: want.email.clone(),
                before: have.display_name.clone(),
            });
        }
        let added: Vec<String> = want.members.difference(&have.members).cloned().collect();
        let removed: Vec<String> = have.members.difference(&want.members).cloned().collect();
        if !added.is_empty() {
            ops.push(GroupOp::AddMembers {
                external_id: id.clone(),
                display_name: want.display_name.clone(),
                members: added,
            });
        }
        if !removed.is_empty() {
            ops.push(GroupOp::RemoveMembers {
                external_id: id.clone(),
                display_name: want.display_name.clone(),
                members: removed,
            });
        }
    }
    for (id, have) in current {
        if !wanted.contains_key(id) {
            ops.push(GroupOp::Remove {
                external_id: id.clone(),
                display_name: have.display_name.clone(),
            });
        }
    }
    ops
}

/// What `op` does to a store's groups: how every store's result is defined (the
/// SQLite store's tables, the SCIM mirror).
pub fn apply_to(groups: &mut Groups, op: &GroupOp) {
    match op {
        GroupOp::Create { group } => {
            groups.insert(group.external_id.clone(), group.clone());
        }
        GroupOp::Rename {
            external_id,
            display_name,
            email,
            ..
        } => {
            if let Some(g) = groups.get_mut(external_id) {
                g.display_name = display_name.clone();
                g.email = email.clone();
            }
        }
        GroupOp::AddMembers {
            external_id,
            members,
            ..
        } => {
            if let Some(g) = groups.get_mut(external_id) {
                g.members.extend(members.iter().cloned());
            }
        }
        GroupOp::RemoveMembers {
            external_id,
            members,
            ..
        } => {
            if let Some(g) = groups.get_mut(external_id) {
                for m in members {
                    g.members.remove(m);
                }
            }
        }
        GroupOp::Remove { external_id, .. } => {
            groups.remove(external_id);
        }
    }
}

/// The group removals a run may apply: like deactivations, many groups disappearing
/// at once (more than `max_deactivations`, or more than `max_deactivation_percent` of
/// the store's groups, or all of them) is held until `approve`.
#[derive(Debug, Clone, Copy)]
pub struct RemovalLimits {
    pub max: u64,
    pub max_percent: f64,
}

/// The operations to apply, the removals held, and why.
#[derive(Debug, Default)]
pub struct Guarded {
    pub apply: Vec<GroupOp>,
    pub held: Vec<GroupOp>,
    pub hold_reason: Option<String>,
}

pub fn guard(ops: Vec<GroupOp>, current: usize, limits: RemovalLimits, approved: bool) -> Guarded {
    let removals = ops
        .iter()
        .filter(|o| matches!(o, GroupOp::Remove { .. }))
        .count();
    let reason = if removals == 0 || approved {
        None
    } else if removals == current && current > 1 {
        Some(format!(
            "all {current} groups would be removed (the directory returned none of them)"
        ))
    } else if removals as u64 > limits.max {
        Some(format!(
            "{removals} group removals exceed max_deactivations = {}",
            limits.max
        ))
    } else if removals as f64 * 100.0 > limits.max_percent * current as f64 && removals > 1 {
        Some(format!(
            "{removals} group removals of {current} groups exceed max_deactivation_percent = {}",
            limits.max_percent
        ))
    } else {
        None
    };
    let Some(reason) = reason else {
        return Guarded {
            apply: ops,
            ..Guarded::default()
        };
    };
    let (held, apply) = ops
        .into_iter()
        .partition(|o| matches!(o, GroupOp::Remove { .. }));
    Guarded {
        apply,
        held,
        hold_reason: Some(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: &str, name: &str, members: &[&str]) -> Group {
        Group {
            external_id: id.to_string(),
            display_name: name.to_string(),
            email: None,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn groups(list: &[Group]) -> Groups {
        list.iter()
            .map(|g| (g.external_id.clone(), g.clone()))
            .collect()
    }

    const LIMITS: RemovalLimits = RemovalLimits {
        max: 5,
        max_percent: 20.0,
    };

    #[test]
    fn a_new_group_is_created_empty_then_given_its_members() {
        let ops = plan(
            &groups(&[group("g1", "Sales", &["u1", "u2"])]),
            &Groups::new(),
        );
        assert_eq!(
            ops,
            vec![
                GroupOp::Create {
                    group: group("g1", "Sales", &[])
                },
                GroupOp::AddMembers {
                    external_id: "g1".into(),
                    display_name: "Sales".into(),
                    members: vec!["u1".into(), "u2".into()],
                },
            ]
        );
        assert_eq!(GroupCounts::of(&ops).members_added, 2);
    }

    #[test]
    fn a_renamed_group_with_changed_members_gets_one_rename_and_the_member_differences() {
        let ops = plan(
            &groups(&[group("g1", "Sales EMEA", &["u1", "u3"])]),
            &groups(&[group("g1", "Sales", &["u1", "u2"])]),
        );
        assert_eq!(ops.len(), 3);
        assert!(
            matches!(&ops[0], GroupOp::Rename { before, display_name, .. } if before == "Sales" && display_name == "Sales EMEA")
        );
        assert_eq!(ops[1].added(), ["u3".to_string()]);
        assert!(
            matches!(&ops[2], GroupOp::RemoveMembers { members, .. } if members == &["u2".to_string()])
        );
    }

    #[test]
    fn an_unchanged_group_plans_nothing_and_a_vanished_one_is_removed() {
        let g = group("g1", "Sales", &["u1"]);
        let one = groups(std::slice::from_ref(&g));
        assert!(plan(&one, &one).is_empty());
        let ops = plan(&Groups::new(), &groups(&[g]));
        assert!(matches!(&ops[..], [GroupOp::Remove { external_id, .. }] if external_id == "g1"));
    }

    #[test]
    fn members_outside_the_scope_are_dropped() {
        let mut wanted = groups(&[group("g1", "Sales", &["u1", "gone"])]);
        limit_members(&mut wanted, &["u1".to_string()].into());
        assert_eq!(wanted["g1"].members, ["u1".to_string()].into());
    }

    #[test]
    fn many_removals_at_once_are_held_and_the_rest_applies() {
        let current: Vec<Group> = (0..10).map(|i| group(&format!("g{i}"), "x", &[])).collect();
        let wanted = groups(&[current[0].clone(), group("new", "New", &[])]);
        let ops = plan(&wanted, &groups(&current));
        let g = guard(ops, 10, LIMITS, false);
        assert_eq!(g.held.len(), 9);
        assert!(g.hold_reason.unwrap().contains("max_deactivations = 5"));
        assert!(matches!(&g.apply[..], [GroupOp::Create { .. }]));
    }

    #[test]
    fn every_group_vanishing_is_held_even_under_the_limits_and_approval_releases_it() {
        let current = groups(&[group("a", "A", &[]), group("b", "B", &[])]);
        let lax = RemovalLimits {
            max: 100,
            max_percent: 100.0,
        };
        let g = guard(plan(&Groups::new(), &current), 2, lax, false);
        assert_eq!(g.held.len(), 2);
        assert!(g.hold_reason.unwrap().starts_with("all 2 groups"));
        let g = guard(plan(&Groups::new(), &current), 2, lax, true);
        assert_eq!(g.apply.len(), 2);
        assert!(g.held.is_empty());
    }

    #[test]
    fn one_removal_among_few_groups_passes() {
        let current = groups(&[group("a", "A", &[]), group("b", "B", &[])]);
        let wanted = groups(&[group("a", "A", &[])]);
        let g = guard(plan(&wanted, &current), 2, LIMITS, false);
        assert!(g.hold_reason.is_none());
        assert_eq!(g.apply.len(), 1);
    }

    #[test]
    fn a_selection_picks_by_name_email_id_or_prefix_ignoring_case() {
        let names = GroupSelection::Names(vec!["sales".into(), "hr@x.example".into()]);
        assert!(names.picks("1", "Sales", None));
        assert!(names.picks("2", "Human resources", Some("HR@x.example")));
        assert!(!names.picks("3", "Salesforce", None));
        assert!(GroupSelection::Prefix("Train-".into()).picks("4", "train-2026", None));
        assert!(!GroupSelection::Prefix("Train-".into()).picks("5", "Tra", None));
        assert!(GroupSelection::Ids(vec!["4".into()]).picks("4", "x", None));
    }
}
