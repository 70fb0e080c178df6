//! What a read changes in the snapshot. Pure: the previous snapshot (as the state DB
//! holds it) and the listing in, the rows to stage, the ids to delete and, on a delta
//! run, the only learners that can have changed out.

use std::collections::{BTreeMap, BTreeSet};

use crate::source::{Change, Listing, Scope, Snapshot};

/// What of the previous snapshot the run needs, by the shape of the read (see
/// [`needed`]).
pub enum Previous {
    /// A complete listing: the digest of each stored row, to stage only changed rows.
    Digests(BTreeMap<String, u64>),
    /// A scoped delta: everyone, since a membership change can move anyone.
    Users(Snapshot),
    /// A delta of scope `all` (only the users in it can change), or no state yet.
    Nothing,
}

/// Which [`Previous`] a listing of this shape needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    Digests,
    Users,
    Nothing,
}

pub fn needed(listing: &Listing, scope: &Scope) -> Needed {
    match (listing, scope) {
        (Listing::Complete(_), _) => Needed::Digests,
        (Listing::Changes(_), Scope::All) => Needed::Nothing,
        (Listing::Changes(_), _) => Needed::Users,
    }
}

/// The snapshot after the run, as the plan and the state DB need it.
#[derive(Debug, Default)]
pub struct Staged {
    /// What the directory says now (on a delta of scope `all`, the upserted users).
    pub after: Snapshot,
    /// Digests of rows the state DB holds already: rows of `after` with the same digest
    /// are not written again.
    pub before: BTreeMap<String, u64>,
    /// Snapshot rows to remove.
    pub deletes: Vec<String>,
    /// On a delta of scope `all`: the only learners the plan needs to look at.
    pub only: Option<BTreeSet<String>>,
}

/// Merge what the source returned into the previous snapshot.
pub fn merge(previous: Snapshot, listing: Listing) -> Snapshot {
    match listing {
        Listing::Complete(users) => users
            .into_iter()
            .map(|u| (u.external_id.clone(), u))
            .collect(),
        Listing::Changes(changes) => {
            let mut next = previous;
            for change in changes {
                match change {
                    Change::Upsert(u) => {
                        next.insert(u.external_id.clone(), *u);
                    }
                    Change::Removed { external_id } => {
                        next.remove(&external_id);
                    }
                }
            }
            next
        }
    }
}

fn removed_from(before: &BTreeMap<String, u64>, after: &Snapshot) -> Vec<String> {
    before
        .keys()
        .filter(|id| !after.contains_key(*id))
        .cloned()
        .collect()
}

/// Stage a read against the previous snapshot.
pub fn stage(previous: Previous, listing: Listing, scope: &Scope) -> Staged {
    match listing {
        Listing::Complete(users) => {
            let after: Snapshot = users
                .into_iter()
                .map(|u| (u.external_id.clone(), u))
                .collect();
            let before = match previous {
                Previous::Digests(d) => d,
                Previous::Users(u) => crate::state::digests(&u),
                Previous::Nothing => BTreeMap::new(),
            };
            let deletes = removed_from(&before, &after);
            Staged {
                after,
                before,
                deletes,
                only: None,
            }
        }
        Listing::Changes(changes) if *scope == Scope::All => {
            // Only the users in the delta can change: plan just them.
            let mut upserts = Snapshot::new();
            let mut removed = Vec::new();
            for change in changes {
                match change {
                    Change::Upsert(u) => {
                        upserts.insert(u.external_id.clone(), *u);
                    }
                    Change::Removed { external_id } => {
                        upserts.remove(&external_id);
                        removed.push(external_id);
                    }
                }
            }
            removed.retain(|id| !upserts.contains_key(id));
            let only: BTreeSet<String> = upserts.keys().chain(&removed).cloned().collect();
            Staged {
                after: upserts,
                before: BTreeMap::new(),
                deletes: removed,
                only: Some(only),
            }
        }
        changes => {
            // Scoped: a membership change can move anyone, so evaluate everyone.
            let previous = match previous {
                Previous::Users(u) => u,
                Previous::Digests(_) | Previous::Nothing => Snapshot::new(),
            };
            let before = crate::state::digests(&previous);
            let after = merge(previous, changes);
            let deletes = removed_from(&before, &after);
            Staged {
                after,
                before,
                deletes,
                only: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountState, DirectoryUser, LearnerFields};

    fn user(id: &str, name: &str) -> DirectoryUser {
        DirectoryUser {
            external_id: id.into(),
            fields: LearnerFields {
                user_name: name.into(),
                ..Default::default()
            },
            state: AccountState::Enabled,
            guest: false,
            extra: Default::default(),
        }
    }

    fn snapshot(users: &[DirectoryUser]) -> Snapshot {
        users
            .iter()
            .map(|u| (u.external_id.clone(), u.clone()))
            .collect()
    }

    #[test]
    fn a_complete_listing_deletes_who_is_gone_and_keeps_the_digests_of_known_rows() {
        let before = snapshot(&[user("1", "a"), user("2", "b")]);
        let previous = Previous::Digests(crate::state::digests(&before));
        let staged = stage(
            previous,
            Listing::Complete(vec![user("1", "a"), user("3", "c")]),
            &Scope::All,
        );
        assert_eq!(staged.after.keys().collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(staged.deletes, ["2"]);
        assert_eq!(staged.before.len(), 2);
        assert!(staged.only.is_none());
    }

    #[test]
    fn a_delta_of_scope_all_plans_only_its_users() {
        let staged = stage(
            Previous::Nothing,
            Listing::Changes(vec![
                Change::Upsert(Box::new(user("1", "a"))),
                Change::Removed {
                    external_id: "2".into(),
                },
                // Removed, then back in the same delta: an upsert, not a delete.
                Change::Removed {
                    external_id: "3".into(),
                },
                Change::Upsert(Box::new(user("3", "c"))),
            ]),
            &Scope::All,
        );
        assert_eq!(staged.after.keys().collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(staged.deletes, ["2"]);
        let only: Vec<_> = staged.only.unwrap().into_iter().collect();
        assert_eq!(only, ["1", "2", "3"]);
    }

    #[test]
    fn a_scoped_delta_merges_into_the_whole_previous_snapshot() {
        let previous = snapshot(&[user("1", "a"), user("2", "b")]);
        let staged = stage(
            Previous::Users(previous),
            Listing::Changes(vec![
                Change::Upsert(Box::new(user("1", "a2"))),
                Change::Removed {
                    external_id: "2".into(),
                },
            ]),
            &Scope::Only(Default::default()),
        );
        assert_eq!(staged.after["1"].fields.user_name, "a2");
        assert_eq!(staged.deletes, ["2"]);
        assert!(staged.only.is_none());
    }
}
