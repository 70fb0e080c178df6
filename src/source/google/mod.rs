//! The `google` source: Google Workspace users through the Admin SDK Directory API,
//! read as a service account with domain-wide delegation.
//!
//! Google has no delta listing for users, so every run is a complete, paged,
//! field-masked listing of the customer (or domain), suspended and archived users
//! included. Org-unit scope is evaluated here from each user's `orgUnitPath` (an OU
//! includes every OU below it), so one listing serves both the snapshot and the
//! scope; group scope asks `members.list` with `includeDerivedMembership=true`.

pub mod auth;
pub mod directory;
mod one;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::check::CheckLine;
use crate::config::{GoogleConfig, GoogleScope};
use crate::model::{AccountState, DirectoryUser, LearnerFields};
use crate::source::{Listing, ReadRequest, Scope, SourceError, SourceRead};

use auth::{ServiceAccount, Tokens, GROUP_MEMBER_SCOPE, GROUP_SCOPE, USER_SCOPE};
use directory::{ApiUser, Directory, RetryPolicy, Tenant};

/// What went wrong talking to Google. Messages never carry the key or a token.
#[derive(Debug, thiserror::Error)]
pub enum GoogleError {
    #[error("service-account key from {from}: {message}")]
    Key { from: String, message: String },
    #[error("token endpoint: unauthorized_client: domain-wide delegation is not set up for client id {client_id} with scopes {scopes} ({description})")]
    UnauthorizedClient {
        client_id: String,
        scopes: String,
        description: String,
    },
    #[error("token endpoint: invalid_grant for admin_email {admin_email} ({description})")]
    InvalidGrant {
        admin_email: String,
        description: String,
    },
    #[error("{message}")]
    Token { message: String, transient: bool },
    #[error("{what}: HTTP {status} {reason} {message}")]
    Api {
        what: String,
        status: u16,
        reason: String,
        message: String,
    },
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Malformed(String),
    /// Well-formed answers that must not be acted on (a user without a sign-in
    /// name, a listing that loops or never ends). Permanent: retrying reads the same.
    #[error("{0}")]
    Refused(String),
    #[error("{what}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        what: String,
        attempts: usize,
        last: Box<GoogleError>,
    },
}

impl GoogleError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GoogleError::Token {
                transient: true,
                ..
            } | GoogleError::Transport(_)
                | GoogleError::Malformed(_)
        )
    }

    /// The innermost error (through `GaveUp`).
    fn root(&self) -> &GoogleError {
        match self {
            GoogleError::GaveUp { last, .. } => last.root(),
            other => other,
        }
    }

    /// What an admin should do about it, for `check`.
    pub fn hint(&self, admin_email: &str) -> String {
        match self.root() {
            GoogleError::Key { .. } => "give the JSON key of a service account (IAM & Admin > Service accounts > Keys > Add key > JSON) via { file = ... } or { env = ... }".to_string(),
            GoogleError::UnauthorizedClient { client_id, scopes, .. } => format!(
                "in the Admin console (Security > Access and data control > API controls > Manage domain-wide delegation) add client ID {client_id} with exactly these OAuth scopes: {scopes}"
            ),
            GoogleError::InvalidGrant { .. } => format!(
                "admin_email {admin_email} must be an existing, active user of the Workspace domain (a super admin); also check the key is not deleted and the clock is right"
            ),
            GoogleError::Api { status: 403, .. } => format!(
                "{admin_email} is not allowed to read the directory: impersonate a super admin, or an admin whose role grants Users > Read (and Groups > Read for group scope)"
            ),
            GoogleError::Api { status: 404, .. } => "check the customer/domain and the scope's group keys".to_string(),
            GoogleError::Api { status: 400, .. } => "check customer/domain and the scope's org unit paths".to_string(),
            GoogleError::Refused(_) => "fix the user in the Admin console (Directory > Users), or, for a listing that loops or never ends, check what answers at directory_url".to_string(),
            _ => "transient or network problem: check connectivity to the token URL and directory_url, then retry".to_string(),
        }
    }
}

impl From<GoogleError> for SourceError {
    fn from(e: GoogleError) -> Self {
        SourceError::Other(e.to_string())
    }
}

pub struct GoogleSource {
    config: GoogleConfig,
    retry: RetryPolicy,
    request_timeout: Duration,
    /// Built on first use, then reused so tokens are cached across calls.
    tokens: Option<Tokens>,
    account_email: Option<String>,
    retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// What the mappings and filters read, beyond the default fields.
    attributes: crate::mapping::Attributes,
    /// The directory's `groups`: asks for the group scopes when set.
    groups: crate::groups::GroupSelection,
}

impl GoogleSource {
    pub fn new(config: GoogleConfig, request_timeout: Duration) -> GoogleSource {
        GoogleSource::with_retry(config, RetryPolicy::from_env(), request_timeout)
    }

    pub fn with_retry(
        config: GoogleConfig,
        retry: RetryPolicy,
        request_timeout: Duration,
    ) -> GoogleSource {
        GoogleSource {
            config,
            retry,
            request_timeout,
            tokens: None,
            account_email: None,
            retries: Default::default(),
            attributes: Default::default(),
            groups: Default::default(),
        }
    }

    /// The directory selects these groups (the token asks for the group scopes).
    pub fn with_groups(mut self, groups: crate::groups::GroupSelection) -> Self {
        self.groups = groups;
        self
    }

    /// The groups `selection` names with their user members, nested groups included.
    pub async fn read_groups(
        &mut self,
        selection: &crate::groups::GroupSelection,
    ) -> Result<crate::groups::Groups, SourceError> {
        use crate::groups::{Group, GroupSelection};
        let mut dir = self.directory()?;
        self.ensure_tokens().await?;
        let tokens = self.built_tokens()?;
        let keys = match selection {
            GroupSelection::None => return Ok(Default::default()),
            GroupSelection::Scoped => match &self.config.scope {
                GoogleScope::Groups(keys) => keys.clone(),
                _ => vec![],
            },
            GroupSelection::Ids(keys) => keys.clone(),
            GroupSelection::Names(_) | GroupSelection::Prefix(_) => vec![],
        };
        let found = if keys.is_empty() {
            dir.list_groups(tokens)
                .await?
                .into_iter()
                .filter(|g| {
                    selection.picks(
                        g.id.as_deref().unwrap_or(""),
                        g.name.as_deref().unwrap_or(""),
                        g.email.as_deref(),
                    )
                })
                .collect()
        } else {
            let mut found = Vec::new();
            for k in &keys {
                found.push(dir.get_group(tokens, k).await?);
            }
            found
        };
        let mut groups = crate::groups::Groups::new();
        for g in found {
            let Some(id) = g.id.filter(|id| !id.trim().is_empty()) else {
                return Err(GoogleError::Refused(
                    "a group without an id; refusing the listing (nothing was changed)".to_string(),
                )
                .into());
            };
            if groups.contains_key(&id) {
                continue;
            }
            let key = g.email.clone().unwrap_or_else(|| id.clone());
            let members = dir.group_user_ids(tokens, &key, None).await?;
            groups.insert(
                id.clone(),
                Group {
                    display_name: g.name.or(g.email.clone()).unwrap_or_else(|| id.clone()),
                    email: g.email,
                    external_id: id,
                    members: members.into_iter().collect(),
                },
            );
        }
        Ok(groups)
    }

    /// Also read the attributes the directory's mappings and filters name.
    pub fn with_attributes(mut self, attributes: crate::mapping::Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    fn scopes(&self) -> Vec<&'static str> {
        let mut scopes = match self.config.scope {
            GoogleScope::Groups(_) => vec![USER_SCOPE, GROUP_MEMBER_SCOPE],
            _ => vec![USER_SCOPE],
        };
        if !self.groups.is_none() {
            scopes.retain(|s| *s != GROUP_MEMBER_SCOPE);
            scopes.extend([GROUP_SCOPE, GROUP_MEMBER_SCOPE]);
        }
        scopes
    }

    /// The token source, built on first use (the key is read then, not at startup).
    async fn ensure_tokens(&mut self) -> Result<(), GoogleError> {
        if self.tokens.is_none() {
            let account = ServiceAccount::load(
                &self.config.service_account_key,
                self.config.token_url.as_ref(),
                &self.config.directory_url,
            )?;
            self.account_email = Some(account.client_email().to_string());
            let tokens = Tokens::new(
                &account,
                &self.config.admin_email,
                self.scopes(),
                self.request_timeout,
            )
            .await?;
            self.tokens = Some(tokens);
        }
        Ok(())
    }

    fn built_tokens(&self) -> Result<&Tokens, GoogleError> {
        self.tokens
            .as_ref()
            .ok_or_else(|| GoogleError::Transport("no token source".to_string()))
    }

    fn directory(&self) -> Result<Directory, GoogleError> {
        let tenant = match &self.config.domain {
            Some(d) => Tenant::Domain(d.clone()),
            None => Tenant::Customer(self.config.customer.clone()),
        };
        let mut dir = Directory::new(
            self.config.directory_url.clone(),
            tenant,
            self.retry,
            self.request_timeout,
        )?;
        dir.retries = self.retries.clone();
        dir.attributes = self.attributes.clone();
        Ok(dir)
    }

    /// Directory API calls repeated after throttling or a server error, over this
    /// source's life.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn read(&mut self, _req: ReadRequest<'_>) -> Result<SourceRead, SourceError> {
        let mut dir = self.directory()?;
        self.ensure_tokens().await?;
        let tokens = self.built_tokens()?;
        // Deduplicate by id (the last page wins, for the values and for the org-unit
        // scope alike), in a stable order.
        let users: BTreeMap<String, DirectoryUser> = dir
            .list_users(tokens, map_user)
            .await?
            .into_iter()
            .map(|u| (u.external_id.clone(), u))
            .collect();
        let scope = match &self.config.scope {
            GoogleScope::All => Scope::All,
            GoogleScope::OrgUnits(ous) => Scope::Only(
                users
                    .values()
                    .filter(|u| {
                        u.extra
                            .get(ORG_UNIT_PATH)
                            .is_some_and(|p| ous.iter().any(|ou| ou_contains(ou, p)))
                    })
                    .map(|u| u.external_id.clone())
                    .collect(),
            ),
            GoogleScope::Groups(groups) => {
                let mut ids = BTreeSet::new();
                for g in groups {
                    ids.extend(dir.group_user_ids(tokens, g, None).await?);
                }
                Scope::Only(ids)
            }
        };
        Ok(SourceRead {
            listing: Listing::Complete(users.into_values().collect()),
            scope,
            next_cursor: None,
            requests: dir.requests(),
        })
    }

    pub async fn check(&mut self) -> Vec<CheckLine> {
        let admin = self.config.admin_email.clone();
        let mut lines = Vec::new();
        let mut dir = match self.directory() {
            Ok(d) => d,
            Err(e) => return vec![CheckLine::failed(e.to_string(), e.hint(&admin))],
        };
        if let Err(e) = self.ensure_tokens().await {
            return vec![CheckLine::failed(e.to_string(), e.hint(&admin))];
        }
        let tokens = match self.built_tokens() {
            Ok(t) => t,
            Err(e) => return vec![CheckLine::failed(e.to_string(), e.hint(&admin))],
        };
        match tokens.token().await {
            Ok(_) => lines.push(CheckLine::ok(format!(
                "token for {} acting as {admin} (scopes {})",
                self.account_email.as_deref().unwrap_or("?"),
                tokens.scopes_for_console()
            ))),
            Err(e) => {
                lines.push(CheckLine::failed(e.to_string(), e.hint(&admin)));
                return lines;
            }
        }
        match dir.sample_users(tokens, 1, None).await {
            Ok(users) => lines.push(CheckLine::ok(match users.first() {
                Some(u) => format!("users.list works (first user {})", u.primary_email),
                None => "users.list works but the directory has no users".to_string(),
            })),
            Err(e) => {
                lines.push(CheckLine::failed(e.to_string(), e.hint(&admin)));
                return lines;
            }
        }
        match &self.config.scope {
            GoogleScope::All => {}
            GoogleScope::OrgUnits(ous) => {
                for ou in ous {
                    let query = format!("orgUnitPath='{}'", ou.replace('\'', "\\'"));
                    lines.push(match dir.sample_users(tokens, 1, Some(&query)).await {
                        Ok(u) if !u.is_empty() => CheckLine::ok(format!("org unit {ou} has users")),
                        Ok(_) => CheckLine::failed(
                            format!("org unit {ou}: no users in it or below it"),
                            "check the path in the Admin console (Directory > Organizational units); it starts with '/'",
                        ),
                        Err(e) => CheckLine::failed(format!("org unit {ou}: {e}"), e.hint(&admin)),
                    });
                }
            }
            GoogleScope::Groups(groups) => {
                for g in groups {
                    lines.push(match dir.group_user_ids(tokens, g, Some(1)).await {
                        Ok(_) => CheckLine::ok(format!("group {g} readable")),
                        Err(e) => CheckLine::failed(format!("group {g}: {e}"), e.hint(&admin)),
                    });
                }
            }
        }
        lines
    }
}

/// `DirectoryUser::extra` key of the user's org unit, for OU scope.
pub const ORG_UNIT_PATH: &str = "org_unit_path";

/// Whether org unit `ou` holds path `path` (itself or any OU below it).
/// Org unit paths compare case-insensitively, as the Admin console treats them.
pub fn ou_contains(ou: &str, path: &str) -> bool {
    let ou = ou.trim_end_matches('/').to_lowercase();
    let path = path.to_lowercase();
    ou.is_empty()
        || path == ou
        || path
            .strip_prefix(&ou)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A Directory API user as a `DirectoryUser`.
pub fn map_user(u: ApiUser) -> DirectoryUser {
    let name = u.name.unwrap_or(directory::ApiName {
        given_name: None,
        family_name: None,
        full_name: None,
    });
    let org = u
        .organizations
        .iter()
        .find(|o| o.primary)
        .or_else(|| u.organizations.first());
    let manager_email = u
        .relations
        .iter()
        .find(|r| r.kind.as_deref() == Some("manager"))
        .and_then(|r| r.value.clone());
    let employee_id = u
        .external_ids
        .iter()
        .find(|e| e.kind.as_deref() == Some("organization"))
        .or_else(|| u.external_ids.first())
        .and_then(|e| e.value.clone());
    let state = if u.archived {
        AccountState::Archived
    } else if u.suspended {
        AccountState::Suspended
    } else {
        AccountState::Enabled
    };
    // The attributes the mappings and filters read (see `Directory::attributes`).
    let mut extra = u.attributes;
    if let Some(p) = &u.org_unit_path {
        extra.insert(ORG_UNIT_PATH.to_string(), p.clone());
    }
    DirectoryUser {
        external_id: u.id,
        fields: LearnerFields {
            user_name: u.primary_email.clone(),
            email: Some(u.primary_email),
            given_name: name.given_name,
            family_name: name.family_name,
            display_name: name.full_name,
            department: org.and_then(|o| o.department.clone()),
            job_title: org.and_then(|o| o.title.clone()),
            employee_id,
            manager_email,
            scim: BTreeMap::new(),
        }
        .normalized(),
        state,
        guest: false,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_unit_includes_itself_and_sub_units_only() {
        assert!(ou_contains("/Staff", "/Staff"));
        assert!(ou_contains("/Staff", "/Staff/Sales"));
        assert!(ou_contains("/staff/", "/Staff/Sales/EU"));
        assert!(!ou_contains("/Staff", "/StaffAlumni"));
        assert!(!ou_contains("/Staff", "/"));
        assert!(ou_contains("/", "/Anything"));
    }

    #[test]
    fn archived_outranks_suspended_and_primary_organization_wins() {
        let u: ApiUser = serde_json::from_value(serde_json::json!({
            "id": "1", "primaryEmail": "a@x.example", "suspended": true, "archived": true,
            "organizations": [{"department": "Old", "title": "T0"}, {"department": "Sales", "title": "Rep", "primary": true}],
            "externalIds": [{"value": "acct-1", "type": "account"}, {"value": "E7", "type": "organization"}],
            "relations": [{"value": "boss@x.example", "type": "manager"}]
        }))
        .unwrap();
        let d = map_user(u);
        assert_eq!(d.state, AccountState::Archived);
        assert_eq!(d.fields.department.as_deref(), Some("Sales"));
        assert_eq!(d.fields.job_title.as_deref(), Some("Rep"));
        assert_eq!(d.fields.employee_id.as_deref(), Some("E7"));
        assert_eq!(d.fields.manager_email.as_deref(), Some("boss@x.example"));
    }
}
