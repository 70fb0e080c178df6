//! Directory sources: each reads users from one kind of directory.
//!
//! A source returns either a complete listing (everyone the directory has) or the
//! changes since a cursor; the engine merges either into the snapshot.

pub mod csv;
pub mod entra;
pub mod google;
pub mod one;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::{DirectoryConfig, DirectoryKind};
use crate::model::DirectoryUser;

/// The snapshot of a directory: what its source said last time, by external id.
pub type Snapshot = BTreeMap<String, DirectoryUser>;

/// What one read of a directory returned.
#[derive(Debug)]
pub struct SourceRead {
    pub listing: Listing,
    /// Which users the configured scope includes.
    pub scope: Scope,
    /// The cursor to store once this run has been applied (Entra's deltaLink).
    pub next_cursor: Option<String>,
    /// Requests made to the directory, for reports and metrics.
    pub requests: u64,
}

#[derive(Debug)]
pub enum Listing {
    /// Every user the directory has; a snapshot user absent here is gone.
    Complete(Vec<DirectoryUser>),
    /// Only what changed since the cursor.
    Changes(Vec<Change>),
}

#[derive(Debug)]
pub enum Change {
    /// A new or changed user, complete after merging with the snapshot.
    Upsert(Box<DirectoryUser>),
    /// Deleted in the directory (soft or permanently).
    Removed { external_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Only these external ids are in scope.
    Only(BTreeSet<String>),
}

impl Scope {
    pub fn includes(&self, external_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(ids) => ids.contains(external_id),
        }
    }
}

/// The users a directory had at the last run, for sources that merge partial changes.
/// The engine backs it with the state DB, so a run that changed little reads little.
pub trait PreviousUsers: Sync {
    fn get(&self, external_id: &str) -> Option<DirectoryUser>;
    /// Every previous user: a full scan, for when a change can affect others.
    fn for_each(&self, visit: &mut dyn FnMut(DirectoryUser));
}

impl PreviousUsers for Snapshot {
    fn get(&self, external_id: &str) -> Option<DirectoryUser> {
        BTreeMap::get(self, external_id).cloned()
    }

    fn for_each(&self, visit: &mut dyn FnMut(DirectoryUser)) {
        for u in self.values() {
            visit(u.clone());
        }
    }
}

/// What one read of a directory's groups returned.
#[derive(Debug, Default)]
pub struct GroupRead {
    /// The selected groups with their members; `None`: no group changed since the
    /// cursor (Entra's group delta), so the last read's groups stand.
    pub groups: Option<crate::groups::Groups>,
    /// Where the next read asks for changes from, for sources that can.
    pub cursor: Option<String>,
}

/// What the engine hands a source for one read.
pub struct ReadRequest<'a> {
    /// Only filled when `Source::needs_snapshot` said so.
    pub snapshot: &'a dyn PreviousUsers,
    /// The stored cursor, unless the run is a full read.
    pub cursor: Option<&'a str>,
}

/// Why a read failed. Every variant fails this directory's run and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    // Every message passes through `redact::scrub`: it is printed and stored in the
    // state DB, and may quote what a remote sent.
    #[error("{path}:{line}: {}", crate::redact::scrub(message))]
    BadFile {
        path: String,
        line: u64,
        message: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", crate::redact::scrub(.0))]
    Other(String),
}

impl SourceError {
    /// Whether trying again later could help (the error policy of every boundary).
    pub fn is_permanent(&self) -> bool {
        matches!(self, SourceError::BadFile { .. })
    }
}

/// A source of any configured kind.
pub enum Source {
    Csv(csv::CsvSource),
    Entra(Box<entra::EntraSource>),
    Google(Box<google::GoogleSource>),
}

impl Source {
    /// The source of `dir`; every request it sends may take `request_timeout`.
    pub fn for_directory(
        dir: &DirectoryConfig,
        request_timeout: Duration,
    ) -> Result<Source, SourceError> {
        // The source attributes the mappings and filters read (a small hook per source).
        let attributes = dir.mapping.attributes.clone();
        match &dir.kind {
            DirectoryKind::Csv { path, format } => Ok(Source::Csv(
                csv::CsvSource::new(path.clone(), *format).with_attributes(attributes),
            )),
            DirectoryKind::Entra(cfg) => Ok(Source::Entra(Box::new(
                entra::EntraSource::new(cfg, request_timeout)?.with_attributes(attributes),
            ))),
            DirectoryKind::Google(cfg) => Ok(Source::Google(Box::new(
                google::GoogleSource::new(cfg.clone(), request_timeout)
                    .with_attributes(attributes)
                    .with_groups(dir.groups.clone()),
            ))),
        }
    }

    /// Whether a read from `cursor` merges partial changes, and so needs the previous
    /// users in `ReadRequest::snapshot`.
    pub fn needs_snapshot(&self, cursor: Option<&str>) -> bool {
        match self {
            Source::Csv(_) => false,
            // A delta round merges partial updates; a full round lists everyone.
            Source::Entra(_) => cursor.is_some(),
            // No delta for users: every run lists everyone.
            Source::Google(_) => false,
        }
    }

    /// Requests repeated after throttling or a server error, over this source's life.
    pub fn retries(&self) -> u64 {
        match self {
            Source::Csv(_) => 0,
            Source::Entra(s) => s.retries(),
            Source::Google(s) => s.retries(),
        }
    }

    pub async fn read(&mut self, req: ReadRequest<'_>) -> Result<SourceRead, SourceError> {
        match self {
            Source::Csv(s) => s.read(req).await,
            Source::Entra(s) => s.read(req).await,
            Source::Google(s) => s.read(req).await,
        }
    }

    /// The groups `selection` names, with their members (user external ids, nested
    /// groups flattened). Called after `read`, in the same run.
    /// `cursor` (from the last read's `GroupRead`) lets a source that can say that
    /// nothing changed.
    pub async fn read_groups(
        &mut self,
        selection: &crate::groups::GroupSelection,
        cursor: Option<&str>,
    ) -> Result<GroupRead, SourceError> {
        let whole = |groups| GroupRead {
            groups: Some(groups),
            cursor: None,
        };
        match self {
            Source::Csv(s) => s.read_groups(selection).map(whole),
            Source::Entra(s) => s.read_groups(selection, cursor).await,
            Source::Google(s) => s.read_groups(selection).await.map(whole),
        }
    }

    /// Provision on demand: the one user `who` names (an id, user name or email), or
    /// `None` when the directory has no such user.
    pub async fn read_one(&mut self, who: &str) -> Result<Option<one::OneUser>, SourceError> {
        match self {
            Source::Csv(s) => s.read_one(who).await,
            Source::Entra(s) => s.read_one(who).await,
            Source::Google(s) => s.read_one(who).await,
        }
    }

    /// `check` of a directory with `groups = ...`: read the selected groups once (a
    /// CSV file is read first) and say how many, or why not.
    pub async fn check_groups(
        &mut self,
        selection: &crate::groups::GroupSelection,
    ) -> crate::check::CheckLine {
        use crate::check::CheckLine;
        if let Source::Csv(_) = self {
            let none = Snapshot::new();
            let req = ReadRequest {
                snapshot: &none,
                cursor: None,
            };
            if let Err(e) = self.read(req).await {
                return CheckLine::failed(format!("cannot read the groups: {e}"), "fix the file");
            }
        }
        match self.read_groups(selection, None).await {
            Ok(read) => {
                let groups = read.groups.unwrap_or_default();
                let members: usize = groups.values().map(|g| g.members.len()).sum();
                let delta = if read.cursor.is_some() {
                    " (and the group delta)"
                } else {
                    ""
                };
                CheckLine::ok(format!(
                    "read the selected groups{delta}: {} groups, {members} memberships before the scope",
                    groups.len()
                ))
            }
            Err(e) => CheckLine::failed(
                format!("cannot read the groups: {e}"),
                match self {
                    Source::Entra(_) => "grant the Microsoft Graph application permission GroupMember.Read.All (and admin consent), and check the names, ids or prefix in `groups`",
                    Source::Google(_) => "add the scopes admin.directory.group.readonly and admin.directory.group.member.readonly to the domain-wide delegation, and check `groups`",
                    Source::Csv(_) => "add a `groups` column (group names separated by `;`)",
                },
            ),
        }
    }

    /// `check`: can this directory be read at all? One line per probe.
    pub async fn check(&mut self) -> Vec<crate::check::CheckLine> {
        match self {
            Source::Csv(s) => s.check().await,
            Source::Entra(s) => s.check().await,
            Source::Google(s) => s.check().await,
        }
    }
}
