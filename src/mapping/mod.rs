//! From what a directory says about a user to what the learner store should hold.
//!
//! Without `[directory.mapping]` expressions each learner field is what the source
//! read; an expression replaces a field's value (`expr`), extra SCIM attributes are
//! computed the same way, and scoping filters (`filter`) take users out after the
//! directory's scope. The source attributes they read (`attr`) travel in
//! `DirectoryUser::extra`.

pub mod attr;
pub mod expr;
pub mod filter;

use std::collections::BTreeMap;

use crate::model::{AccountState, DeactivationReason, DirectoryUser, Field, LearnerFields};

pub use attr::Attributes;
pub use expr::Expr;
pub use filter::Filter;

/// A mapping expression and the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub text: String,
    pub expr: Expr,
}

/// The extra SCIM attribute that carries a mapped `externalId` (`[store] external_id`
/// naming a directory attribute, such as Entra push's `mailNickname`).
pub const EXTERNAL_ID: &str = "externalId";

/// Per-directory mapping policy (`exclude_guests`, `[directory.mapping]` and
/// `[directory.filter]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MappingPolicy {
    pub exclude_guests: bool,
    pub default_department: Option<String>,
    /// Learner fields computed by an expression instead of read as the source has them.
    pub fields: BTreeMap<Field, Mapped>,
    /// Extra SCIM attributes (full attribute names) and their expressions.
    pub scim: BTreeMap<String, Mapped>,
    pub filter: Filter,
    /// The source attributes the expressions and the filter read.
    pub attributes: Attributes,
}

impl MappingPolicy {
    /// What identifies the expressions and filters: empty without any, so that state
    /// recorded before they existed stays bound. A change of it is a full read and plan.
    pub fn fingerprint(&self) -> String {
        if self.fields.is_empty() && self.scim.is_empty() && self.filter.is_empty() {
            return String::new();
        }
        use sha2::Digest;
        let mut text = format!(
            "exclude_guests {} default_department {:?}\n",
            self.exclude_guests, self.default_department
        );
        for (f, m) in &self.fields {
            text.push_str(&format!("field {} = {}\n", f.name(), m.text));
        }
        for (a, m) in &self.scim {
            text.push_str(&format!("scim {a} = {}\n", m.text));
        }
        text.push_str(&self.filter.describe());
        let digest = sha2::Sha256::digest(text.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
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
    let source = |path: &str| attr::read(&user.extra, path);
    for (&field, mapped) in &policy.fields {
        let value = mapped.expr.eval(&source);
        // A learner always has a user name: an expression that yields none keeps the
        // directory's own.
        if field == Field::UserName && value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            continue;
        }
        fields.set(field, value);
    }
    fields.scim = policy
        .scim
        .iter()
        .filter_map(|(name, mapped)| {
            let v = mapped.expr.eval(&source)?;
            let v = v.trim();
            (!v.is_empty()).then(|| (name.clone(), v.to_string()))
        })
        .collect();
    let mut fields = fields.normalized();
    if fields.department.is_none() {
        fields.department = policy.default_department.clone();
    }
    let passes = || {
        policy.filter.passes(&|s| match s {
            filter::Subject::Field(f) => fields.get(*f).map(str::to_string),
            filter::Subject::Attribute(a) => source(a),
        })
    };
    let inactive = match user.state {
        AccountState::Disabled => Some(DeactivationReason::DisabledInDirectory),
        AccountState::Suspended => Some(DeactivationReason::SuspendedInDirectory),
        AccountState::Archived => Some(DeactivationReason::ArchivedInDirectory),
        AccountState::Enabled if !in_scope => Some(DeactivationReason::OutOfScope),
        AccountState::Enabled if user.guest && policy.exclude_guests => {
            Some(DeactivationReason::GuestExcluded)
        }
        AccountState::Enabled if !passes() => Some(DeactivationReason::OutOfScopeFilter),
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

    fn mapped(text: &str) -> Mapped {
        Mapped {
            text: text.into(),
            expr: expr::parse(text).unwrap(),
        }
    }

    #[test]
    fn expressions_replace_fields_fill_scim_attributes_and_filters_deactivate() {
        let mut u = user(AccountState::Enabled);
        u.extra
            .insert(format!("{}companyName", attr::PREFIX), "Contoso".into());
        u.extra.insert(
            format!(
                "{}onPremisesExtensionAttributes.extensionAttribute3",
                attr::PREFIX
            ),
            " R&D ".into(),
        );
        let ext = "urn:ietf:params:scim:schemas:extension:knowbe4:kmsat:2.0:User:customField1";
        let mut p = MappingPolicy {
            default_department: Some("Staff".into()),
            fields: BTreeMap::from([
                (
                    Field::Department,
                    mapped("onPremisesExtensionAttributes.extensionAttribute3"),
                ),
                (Field::JobTitle, mapped("coalesce(jobTitle, 'Employee')")),
                (Field::UserName, mapped("missing")),
            ]),
            scim: BTreeMap::from([
                (ext.to_string(), mapped("upper(companyName)")),
                ("nickName".to_string(), mapped("missing")),
            ]),
            ..Default::default()
        };
        let d = desired(u.clone(), true, &p);
        assert_eq!(d.fields.department.as_deref(), Some("R&D"));
        assert_eq!(d.fields.job_title.as_deref(), Some("Employee"));
        assert_eq!(d.fields.user_name, "ada@example.com", "no empty user name");
        assert_eq!(
            d.fields.scim,
            BTreeMap::from([(ext.to_string(), "CONTOSO".to_string())])
        );
        assert_eq!(d.inactive, None);
        p.filter = Filter {
            include: vec![],
            exclude: vec![filter::Clause {
                rules: vec![filter::Rule {
                    subject: filter::Subject::Field(Field::Department),
                    test: filter::Test::Equals("r&d".into()),
                    case_sensitive: false,
                }],
            }],
        };
        assert_eq!(
            desired(u.clone(), true, &p).inactive,
            Some(DeactivationReason::OutOfScopeFilter)
        );
        assert_eq!(
            desired(u, false, &p).inactive,
            Some(DeactivationReason::OutOfScope),
            "the scope comes first"
        );
        assert_ne!(p.fingerprint(), "");
        assert_eq!(MappingPolicy::default().fingerprint(), "");
    }
}
