//! One user read by id, user name or email, for provision on demand: the user as a
//! full read would have them, how they were found, and the scope's verdict.

use crate::model::DirectoryUser;

/// What a source found for one identifier.
#[derive(Debug)]
pub struct OneUser {
    pub user: DirectoryUser,
    /// The attribute that matched the identifier given (`id`, `userPrincipalName`,
    /// `mail`, `primaryEmail`, ...).
    pub matched_by: &'static str,
    /// Whether the directory's configured scope includes the user, and why.
    pub in_scope: bool,
    pub scope: String,
    pub requests: u64,
}
