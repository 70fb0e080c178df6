//! From what a directory says about a user to what the learner store should hold.

use crate::model::{AccountState, DeactivationReason, DirectoryUser, LearnerFields};

/// Per-directory mapping policy (`exclude_guests` and `[directory.mapping]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingPolicy {
    pub exclude_guests: bool,
    pub default_department: Option<String>,
}

/// What the learner store should say about one directory user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub fields: LearnerFields,
    /// `None`: an active learner; `Some(reason)`: a deactivated one.
    pub inactive: Option<DeactivationReason>,
}

/// Map a directory user to the learner it should be. `in_scope` is whether the
/// directory's configured scope (groups, org units, app assignment) includes the user.
pub fn desired(user: DirectoryUser, in_scope: bool, policy: &MappingPolicy) -> Desired {
    let mut fields = user.fields.normalized();
    if fields.department.is_none() {
        fields.department = policy.default_department.clone();
    }
    let inactive = match user.state {
        AccountState::Disabled => Some(DeactivationReason::DisabledInDirectory),
        AccountState::Suspended => Some(DeactivationReason::SuspendedInDirectory),
        AccountState::Archived => Some(DeactivationReason::ArchivedInDirectory),
        AccountState::Enabled if !in_scope => Some(DeactivationReason::OutOfScope),
        AccountState::Enabled if user.guest && policy.exclude_guests => {
            Some(DeactivationReason::GuestExcluded)
        }
        AccountState::Enabled => None,
    };
    Desired { fields, inactive }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(state: AccountState) -> DirectoryUser {
        DirectoryUser {
            external_id: "1".into(),
            fields: LearnerFields {
                user_name: " ada@example.com ".into(),
                department: Some("  ".into()),
                ..Default::default()
            },
            state,
            guest: false,
            extra: Default::default(),
        }
    }

    #[test]
    fn blank_department_takes_the_configured_default_and_values_are_trimmed() {
        let policy = MappingPolicy {
            default_department: Some("Staff".into()),
            ..Default::default()
        };
        let d = desired(user(AccountState::Enabled), true, &policy);
        assert_eq!(d.fields.user_name, "ada@example.com");
        assert_eq!(d.fields.department.as_deref(), Some("Staff"));
        assert_eq!(d.inactive, None);
    }

    #[test]
    fn directory_state_and_scope_decide_the_deactivation_reason() {
        let p = MappingPolicy {
            exclude_guests: true,
            ..Default::default()
        };
        let reason = |u: &DirectoryUser, scope| desired(u.clone(), scope, &p).inactive;
        assert_eq!(
            reason(&user(AccountState::Suspended), true),
            Some(DeactivationReason::SuspendedInDirectory)
        );
        assert_eq!(
            reason(&user(AccountState::Enabled), false),
            Some(DeactivationReason::OutOfScope)
        );
        let mut guest = user(AccountState::Enabled);
        guest.guest = true;
        assert_eq!(
            reason(&guest, true),
            Some(DeactivationReason::GuestExcluded)
        );
    }
}
