//! The domain types that flow through a run: what a directory says about a user,
//! and what the learner store holds.

use serde::{Deserialize, Serialize};

/// The learner columns a sync manages (everything but identity, state and timestamps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerFields {
    pub user_name: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub employee_id: Option<String>,
    pub manager_email: Option<String>,
    /// Extra SCIM attributes from `[directory.mapping.scim]`, by full attribute name.
    /// Only SCIM stores hold them (the SQLite schema is fixed).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scim: std::collections::BTreeMap<String, String>,
}

/// A managed learner column. The one list of them: the store columns, the plan's
/// diff, the CSV header and the SCIM attributes all follow `Field::ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    UserName,
    Email,
    GivenName,
    FamilyName,
    DisplayName,
    Department,
    JobTitle,
    EmployeeId,
    ManagerEmail,
}

/// Where a column lives in a SCIM User resource (RFC 7643 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimPath {
    /// A core attribute: `userName`, or a sub-attribute such as `name.givenName`.
    Core(&'static str),
    /// An attribute of the enterprise extension, sent only when the provider announces it.
    Enterprise(&'static str),
}

impl Field {
    /// Every managed column, in schema order.
    pub const ALL: [Field; 9] = [
        Field::UserName,
        Field::Email,
        Field::GivenName,
        Field::FamilyName,
        Field::DisplayName,
        Field::Department,
        Field::JobTitle,
        Field::EmployeeId,
        Field::ManagerEmail,
    ];

    /// The column's name: in the stores, the CSV header and a plan's changes.
    pub const fn name(self) -> &'static str {
        match self {
            Field::UserName => "user_name",
            Field::Email => "email",
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::DisplayName => "display_name",
            Field::Department => "department",
            Field::JobTitle => "job_title",
            Field::EmployeeId => "employee_id",
            Field::ManagerEmail => "manager_email",
        }
    }

    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Where the column goes in a SCIM User. `emails` carries the address as the
    /// primary work entry; `manager` is a reference to the manager's SCIM id.
    pub const fn scim(self) -> ScimPath {
        match self {
            Field::UserName => ScimPath::Core("userName"),
            Field::Email => ScimPath::Core("emails"),
            Field::GivenName => ScimPath::Core("name.givenName"),
            Field::FamilyName => ScimPath::Core("name.familyName"),
            Field::DisplayName => ScimPath::Core("displayName"),
            Field::Department => ScimPath::Enterprise("department"),
            Field::JobTitle => ScimPath::Core("title"),
            Field::EmployeeId => ScimPath::Enterprise("employeeNumber"),
            Field::ManagerEmail => ScimPath::Enterprise("manager"),
        }
    }

    /// Whether values compare case-insensitively (email addresses do).
    pub const fn case_insensitive(self) -> bool {
        matches!(self, Field::Email | Field::ManagerEmail)
    }

    /// `before`, the column names and `after`, comma-separated: a SQL column list.
    pub fn column_list(before: &[&str], after: &[&str]) -> String {
        let names = Field::ALL.map(Field::name);
        [before, &names[..], after].concat().join(", ")
    }
}

/// Names of the managed columns, in schema order.
pub const FIELD_NAMES: [&str; 9] = {
    let mut names = [""; 9];
    let mut i = 0;
    while i < names.len() {
        names[i] = Field::ALL[i].name();
        i += 1;
    }
    names
};

impl LearnerFields {
    /// The value of a managed column (`user_name` is never null).
    pub fn get(&self, field: Field) -> Option<&str> {
        match field {
            Field::UserName => Some(self.user_name.as_str()),
            Field::Email => self.email.as_deref(),
            Field::GivenName => self.given_name.as_deref(),
            Field::FamilyName => self.family_name.as_deref(),
            Field::DisplayName => self.display_name.as_deref(),
            Field::Department => self.department.as_deref(),
            Field::JobTitle => self.job_title.as_deref(),
            Field::EmployeeId => self.employee_id.as_deref(),
            Field::ManagerEmail => self.manager_email.as_deref(),
        }
    }

    /// The slot of a nullable column (`None` for `user_name`, which is never null).
    fn optional_mut(&mut self, field: Field) -> Option<&mut Option<String>> {
        match field {
            Field::UserName => None,
            Field::Email => Some(&mut self.email),
            Field::GivenName => Some(&mut self.given_name),
            Field::FamilyName => Some(&mut self.family_name),
            Field::DisplayName => Some(&mut self.display_name),
            Field::Department => Some(&mut self.department),
            Field::JobTitle => Some(&mut self.job_title),
            Field::EmployeeId => Some(&mut self.employee_id),
            Field::ManagerEmail => Some(&mut self.manager_email),
        }
    }

    /// Set a column (a null `user_name` is the empty string).
    pub fn set(&mut self, field: Field, value: Option<String>) {
        match self.optional_mut(field) {
            Some(slot) => *slot = value,
            None => self.user_name = value.unwrap_or_default(),
        }
    }

    /// Built from the columns given in `Field::ALL` order, e.g. a store row's.
    pub fn try_from_columns<E>(
        mut column: impl FnMut(usize, Field) -> Result<Option<String>, E>,
    ) -> Result<LearnerFields, E> {
        let mut fields = LearnerFields::default();
        for (i, field) in Field::ALL.into_iter().enumerate() {
            fields.set(field, column(i, field)?);
        }
        Ok(fields)
    }

    /// Trim every value and turn blanks into nulls, so that `" x "` and `"x"` (or `""`
    /// and a missing value) never count as a change.
    pub fn normalized(mut self) -> Self {
        self.user_name = trimmed(std::mem::take(&mut self.user_name));
        for field in Field::ALL {
            if let Some(slot) = self.optional_mut(field) {
                *slot = slot.take().map(trimmed).filter(|v| !v.is_empty());
            }
        }
        self
    }
}

/// `value` without surrounding whitespace; the same allocation when it has none (the
/// usual case: a sync normalises every field of every user, twice).
fn trimmed(value: String) -> String {
    let trimmed = value.trim();
    if trimmed.len() == value.len() {
        value
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod field_tests {
    use super::*;

    #[test]
    fn every_field_is_read_and_written_by_its_own_slot() {
        let mut f = LearnerFields::default();
        for field in Field::ALL {
            f.set(field, Some(field.name().to_string()));
        }
        for field in Field::ALL {
            assert_eq!(f.get(field), Some(field.name()));
            assert_eq!(Field::parse(field.name()), Some(field));
        }
        assert_eq!(FIELD_NAMES, Field::ALL.map(Field::name));
    }

    #[test]
    fn the_filter_reason_reads_back_from_its_text() {
        let r = DeactivationReason::OutOfScopeFilter;
        assert_eq!(r.as_str(), "out of scope: filter");
        assert_eq!(DeactivationReason::parse(r.as_str()), Some(r));
    }
}

/// Why a directory says a user should not be an active learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    Enabled,
    Disabled,
    Suspended,
    Archived,
}

/// One user as the directory describes it, after source-specific mapping.
/// This is what the snapshot keeps per directory between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    /// The directory's immutable id: the identity of the learner.
    pub external_id: String,
    pub fields: LearnerFields,
    pub state: AccountState,
    /// A guest account (Entra `userType = Guest`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
    /// Source-specific attributes a source needs to merge later partial updates
    /// (for example Entra's `mail`, which falls back to the UPN). Not a learner column.
    #[serde(default, skip_serializing_if = "Extra::is_empty")]
    pub extra: Extra,
}

/// The source attributes kept beside a user, by key. A user has a handful at most (a
/// manager id, a mapped attribute or two), so they are a vector sorted by key: one
/// allocation, where a `BTreeMap` allocates a whole ~540-byte leaf for a single entry,
/// and an initial read holds one of these per user. It (de)serialises as a map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra(Vec<(String, String)>);

impl Extra {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Set `key`, returning the value it had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(String, String)> for Extra {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut extra = Extra::default();
        for (k, v) in pairs {
            extra.insert(k, v);
        }
        extra
    }
}

impl Serialize for Extra {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Extra {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Extra(map.into_iter().collect()))
    }
}

/// A row of the learner store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learner {
    pub external_id: String,
    pub fields: LearnerFields,
    pub active: bool,
}

/// Why a learner is (to be) deactivated. The text is what the action log and `status` show.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeactivationReason {
    DisabledInDirectory,
    SuspendedInDirectory,
    ArchivedInDirectory,
    DeletedInDirectory,
    OutOfScope,
    GuestExcluded,
    /// In the directory's scope, but taken out by its scoping filter.
    OutOfScopeFilter,
}

impl DeactivationReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::DisabledInDirectory => "disabled in directory",
            Self::SuspendedInDirectory => "suspended in directory",
            Self::ArchivedInDirectory => "archived in directory",
            Self::DeletedInDirectory => "deleted in directory",
            Self::OutOfScope => "out of scope",
            Self::GuestExcluded => "guest excluded",
            Self::OutOfScopeFilter => "out of scope: filter",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::DisabledInDirectory,
            Self::SuspendedInDirectory,
            Self::ArchivedInDirectory,
            Self::DeletedInDirectory,
            Self::OutOfScope,
            Self::GuestExcluded,
            Self::OutOfScopeFilter,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

impl std::fmt::Display for DeactivationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keeps_one_value_per_key_and_serialises_as_the_map_it_replaced() {
        let mut e = Extra::default();
        assert_eq!(e.insert("b".into(), "2".into()), None);
        assert_eq!(e.insert("a".into(), "1".into()), None);
        assert_eq!(e.insert("b".into(), "3".into()), Some("2".into()));
        assert_eq!(e.get("b").map(String::as_str), Some("3"));
        assert!(e.contains_key("a") && !e.contains_key("c"));
        let json = serde_json::to_string(&e).unwrap();
        // The snapshot's stored form is unchanged: a JSON object in key order.
        let map: std::collections::BTreeMap<String, String> = [("a", "1"), ("b", "3")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(json, serde_json::to_string(&map).unwrap());
        assert_eq!(serde_json::from_str::<Extra>(&json).unwrap(), e);
        assert_eq!(e.remove("a"), Some("1".into()));
        assert_eq!(e.remove("a"), None);
        assert_eq!(
            e.iter().collect::<Vec<_>>(),
            vec![(&"b".to_string(), &"3".to_string())]
        );
    }
}
