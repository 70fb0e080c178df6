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
}

/// Names of the managed columns, in schema order.
pub const FIELD_NAMES: [&str; 9] = [
    "user_name",
    "email",
    "given_name",
    "family_name",
    "display_name",
    "department",
    "job_title",
    "employee_id",
    "manager_email",
];

impl LearnerFields {
    /// The value of a managed column by name (`user_name` is never null).
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "user_name" => Some(self.user_name.as_str()),
            "email" => self.email.as_deref(),
            "given_name" => self.given_name.as_deref(),
            "family_name" => self.family_name.as_deref(),
            "display_name" => self.display_name.as_deref(),
            "department" => self.department.as_deref(),
            "job_title" => self.job_title.as_deref(),
            "employee_id" => self.employee_id.as_deref(),
            "manager_email" => self.manager_email.as_deref(),
            _ => None,
        }
    }

    /// Trim every value and turn blanks into nulls, so that `" x "` and `"x"` (or `""`
    /// and a missing value) never count as a change.
    pub fn normalized(mut self) -> Self {
        self.user_name = self.user_name.trim().to_string();
        for slot in [
            &mut self.email,
            &mut self.given_name,
            &mut self.family_name,
            &mut self.display_name,
            &mut self.department,
            &mut self.job_title,
            &mut self.employee_id,
            &mut self.manager_email,
        ] {
            *slot = slot
                .take()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty());
        }
        self
    }
}

/// Whether a column compares case-insensitively (email addresses do).
pub fn case_insensitive(field: &str) -> bool {
    matches!(field, "email" | "manager_email")
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
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, String>,
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
