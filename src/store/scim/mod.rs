//! The SCIM 2.0 learner store: the plan is pushed to a SCIM service provider
//! (RFC 7643/7644), with `concurrency` requests in flight.
//!
//! - The plan diffs against a local mirror (see `mirror.rs`) that links each learner
//!   to its SCIM resource id; a row is written right after each successful request.
//! - Adopt, never duplicate, never take another learner's resource: before a create
//!   the user is looked up by `externalId`, then by `userName`. A resource is adopted
//!   (linked and overwritten with the desired values) when its externalId is ours, or
//!   when it has none and no other learner is linked to it (a user the platform made
//!   before us). A userName held by another learner's resource fails this learner
//!   only, with the holder named. A `409 uniqueness` on create is resolved the same way.
//!   Identity is the directory's immutable id: a userName never ties two learners.
//! - One resource, one learner: the request tasks claim a resource in a map shared by
//!   the whole apply (seeded from the mirror) before writing to it, and the mirror
//!   refuses a second learner linked to one SCIM id.
//! - A `404` on an update (deleted on the provider side) recreates and relinks.
//! - A 4xx for one user fails that user (reported with the provider's `detail`; the
//!   mirror is unchanged, so the next run retries it). A refused token, exhausted
//!   retries or an unreachable provider stop the sending: the requests in flight are
//!   recorded, and they and every operation not sent are reported failed.

mod apply;
mod claims;
pub mod client;
mod groups;
pub mod mirror;
mod rate;
mod resource;
mod takeover;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use self::client::{ScimClient, ScimError};
use self::mirror::Mirror;
use self::resource::{announces_enterprise, lists_user_type};
use super::StoreError;
use crate::check::CheckLine;
use crate::config::{ScimDeactivate, ScimDialect, ScimExternalId, ScimMatch, Secret};
use crate::mapping::EXTERNAL_ID;
use crate::model::Learner;

pub use self::resource::{ENTERPRISE_SCHEMA, USER_SCHEMA};

pub struct ScimStore {
    client: ScimClient,
    mirror: Mirror,
    concurrency: usize,
    deactivate: ScimDeactivate,
    protocol: Protocol,
    /// Whether directories' groups are written to `/Groups` (`[store] groups`).
    groups: bool,
}

/// How the store speaks to its provider: the request shapes, the attribute an
/// existing user is found by, and what is written as `externalId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    pub dialect: ScimDialect,
    pub match_by: ScimMatch,
    pub external_id: ScimExternalId,
}

impl Protocol {
    /// The `externalId` written for a learner: the directory's id, or a column's
    /// value (the directory's id when that column is empty).
    pub fn external_id_of(&self, directory_id: &str, f: &crate::model::LearnerFields) -> String {
        match self.external_id {
            ScimExternalId::DirectoryId => directory_id.to_string(),
            ScimExternalId::Field(field) => f
                .get(field)
                .filter(|v| !v.is_empty())
                .unwrap_or(directory_id)
                .to_string(),
            // A directory without the attribute's value falls back to its own id.
            ScimExternalId::Mapped => f
                .scim
                .get(EXTERNAL_ID)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
                .unwrap_or(directory_id)
                .to_string(),
        }
    }

    fn entra(&self) -> bool {
        self.dialect != ScimDialect::Rfc
    }
}

impl Default for Protocol {
    /// What the store did before these were configurable.
    fn default() -> Self {
        Protocol {
            dialect: ScimDialect::Rfc,
            match_by: ScimMatch::ExternalIdThenUserName,
            external_id: ScimExternalId::DirectoryId,
        }
    }
}

/// What the provider announces, fetched once per apply.
#[derive(Debug, Clone, Copy)]
struct Features {
    enterprise: bool,
    patch: bool,
}

impl ScimStore {
    pub fn open(
        url: &reqwest::Url,
        token: Secret,
        request_timeout: Duration,
        concurrency: usize,
        deactivate: ScimDeactivate,
        mirror_file: &Path,
        read_only: bool,
    ) -> Result<ScimStore, StoreError> {
        let mirror = Mirror::open(mirror_file, read_only, &mirror::provider_key(url))?;
        let client =
            ScimClient::new(url.clone(), token, request_timeout).map_err(StoreError::Other)?;
        Ok(ScimStore {
            client,
            mirror,
            concurrency: concurrency.max(1),
            deactivate,
            protocol: Protocol::default(),
            groups: false,
        })
    }

    /// Move a directory's learners to a new name in the mirror (see `Mirror`).
    pub fn rename_directory(&mut self, old: &str, new: &str) -> Result<usize, StoreError> {
        self.mirror.rename_directory(old, new)
    }

    /// Speak this dialect, match and write externalId so (RFC 7644 unless told).
    pub fn with_protocol(self, protocol: Protocol) -> ScimStore {
        ScimStore { protocol, ..self }
    }

    /// Write the directories' groups to `/Groups` too.
    pub fn with_groups(self, groups: bool) -> ScimStore {
        ScimStore { groups, ..self }
    }

    /// Send at most `per_second` requests a second (all concurrent requests together).
    pub fn with_rate_limit(self, per_second: f64) -> ScimStore {
        ScimStore {
            client: self.client.clone().with_rate_limit(per_second),
            ..self
        }
    }

    /// Set when the SCIM `url` changed since the mirror's links were made: none of them
    /// is used, every learner is resolved again on the configured provider. For the
    /// run's summary.
    pub fn provider_change(&self) -> Option<&mirror::ProviderChange> {
        self.mirror.provider_change()
    }

    pub fn for_each_learner(
        &mut self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        self.mirror.for_each(directory, visit)
    }

    async fn features(&self) -> Result<Features, ScimError> {
        // Entra reads neither endpoint: a provider built for it may serve neither,
        // and takes PATCH and the enterprise extension.
        let entra = self.protocol.entra();
        let absent = |e: &ScimError| entra && matches!(e.status(), Some(404 | 501));
        let patch = match self.client.get("ServiceProviderConfig", &[]).await {
            Ok(spc) => spc
                .pointer("/patch/supported")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            Err(e) if absent(&e) => true,
            Err(e) => return Err(e),
        };
        // Some providers do not serve /ResourceTypes; then send no extension (RFC).
        let enterprise = match self.client.get("ResourceTypes", &[]).await {
            Ok(v) => announces_enterprise(&v) || (entra && !lists_user_type(&v)),
            Err(e) if e.status() == Some(404) || absent(&e) => entra,
            Err(e) => return Err(e),
        };
        Ok(Features { enterprise, patch })
    }

    /// The learners whose operation of a run landed on the provider (`None`: the run
    /// never began to apply, so nothing was sent).
    pub fn landed(&self, run_key: &str) -> Result<Option<BTreeSet<String>>, StoreError> {
        if !self.mirror.run_started(run_key)? {
            return Ok(None);
        }
        self.mirror.landed(run_key).map(Some)
    }

    /// The state DB closed the run: what landed in it need not be kept.
    pub fn forget_run(&self, run_key: &str) -> Result<(), StoreError> {
        self.mirror.forget_run(run_key)
    }

    /// Probe the provider the way Entra's Test Connection does: a lookup of a user that
    /// cannot exist (`filter=<matching attribute> eq "<random guid>"`), expecting an
    /// empty ListResponse; then what `/ServiceProviderConfig` announces, if it is there
    /// (providers built for Entra need not serve it). Writes nothing.
    pub async fn check(&self) -> Vec<CheckLine> {
        let base = self.client.base().to_string();
        let mut lines = Vec::new();
        let attribute = match self.protocol.match_by {
            ScimMatch::ExternalId => "externalId",
            ScimMatch::Emails => "emails.value",
            ScimMatch::UserName | ScimMatch::ExternalIdThenUserName => "userName",
        };
        let probe = self::resource::filter_eq(attribute, &uuid::Uuid::new_v4().to_string());
        match self
            .client
            .get("Users", &[("filter", probe.as_str())])
            .await
        {
            Ok(v) => {
                let total = v.get("totalResults").and_then(Value::as_i64);
                let listed = v
                    .get("Resources")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                if total.is_some_and(|t| t > 0) || listed > 0 {
                    lines.push(CheckLine::failed(
                        format!("scim store {base}: GET /Users?filter={attribute} eq \"<random guid>\" answered users ({listed} listed); it must answer none"),
                        "the provider ignores or misreads filters: learner-sync would take a user it finds for another; ask the platform to support `eq` filters on this attribute",
                    ));
                } else if total.is_none() {
                    lines.push(CheckLine::failed(
                        format!("scim store {base}: GET /Users?filter=... answered without totalResults: not a SCIM ListResponse"),
                        "[store] url must be the SCIM base that /Users hangs off, e.g. https://lms.example.com/scim/v2",
                    ));
                } else {
                    lines.push(CheckLine::ok(format!(
                        "scim store {base}: Test Connection passed (GET /Users?filter={attribute} eq \"<random guid>\" answered an empty ListResponse); dialect {}, lookups by {}",
                        dialect_name(self.protocol.dialect),
                        match self.protocol.match_by {
                            ScimMatch::ExternalIdThenUserName => "externalId, then userName",
                            _ => attribute,
                        }
                    )));
                }
            }
            Err(e) => {
                lines.push(failed_line(&base, "GET /Users?filter=...", &e));
                if e.status().is_none() {
                    return lines;
                }
            }
        }
        match self.client.get("ServiceProviderConfig", &[]).await {
            Ok(v) => {
                let said = |key: &str| match v.pointer(&format!("/{key}/supported")) {
                    Some(Value::Bool(true)) => "supported",
                    Some(Value::Bool(false)) => "not supported",
                    _ => "not said",
                };
                let patch = said("patch");
                let note = match (patch, self.protocol.dialect) {
                    ("not supported", _) => "; updates are sent as PUT of the whole user",
                    (_, ScimDialect::Rfc) => "",
                    _ => "; whether it takes this dialect's PATCH shapes shows on the first update (a 400 names the shape refused)",
                };
                lines.push(CheckLine::ok(format!(
                    "scim store {base}: ServiceProviderConfig: PATCH {patch}, filter {}, bulk {}, changePassword {}{note}",
                    said("filter"),
                    said("bulk"),
                    said("changePassword"),
                )));
            }
            Err(e) if matches!(e.status(), Some(404 | 501)) => {
                let what = if self.protocol.entra() {
                    "fine for the Entra dialects: PATCH and the enterprise extension are assumed, as Entra does"
                } else {
                    "the rfc dialect assumes PATCH and sends no enterprise extension"
                };
                lines.push(CheckLine::ok(format!(
                    "scim store {base}: no /ServiceProviderConfig ({}); {what}",
                    e.status().unwrap_or_default()
                )));
            }
            Err(e) => lines.push(failed_line(&base, "GET /ServiceProviderConfig", &e)),
        }
        if let Some(change) = self.mirror.provider_change() {
            lines.push(CheckLine::ok(format!(
                "scim store mirror {}: its {} links were made on {}, not on {}: the next sync looks every learner up on {} (adopting by externalId or userName) or creates it",
                self.mirror.path().display(),
                change.unlinked,
                change.from,
                change.to,
                change.to
            )));
        }
        match self.mirror.count() {
            Ok(n) => lines.push(CheckLine::ok(format!(
                "scim store mirror {}: {n} linked learners",
                self.mirror.path().display()
            ))),
            Err(e) => lines.push(CheckLine::failed(
                e.to_string(),
                "check the mirror file's permissions (it sits next to the state DB)",
            )),
        }
        if self.groups {
            lines.push(self.check_groups(&base).await);
        }
        lines
    }
}

fn dialect_name(d: ScimDialect) -> &'static str {
    match d {
        ScimDialect::Rfc => "rfc",
        ScimDialect::Entra => "entra",
        ScimDialect::Entra2020 => "entra-2020",
    }
}

fn failed_line(base: &str, what: &str, e: &ScimError) -> CheckLine {
    let hint = match e.status() {
        Some(401 | 403) => "the provider refused the token: check [store] token (a bearer token issued for provisioning, allowed to read and write Users); it may have expired or been revoked",
        Some(404) => "nothing SCIM at this address: [store] url must be the SCIM base that /Users and /ServiceProviderConfig hang off, e.g. https://lms.example.com/scim/v2",
        Some(429 | 500..=599) => "the provider is throttling or failing; try again later",
        Some(_) => "the provider refused the request; see its detail above",
        None => "cannot reach the provider: check [store] url, DNS, proxies and firewalls, and that its TLS certificate is valid and trusted by this machine",
    };
    CheckLine::failed(format!("scim store {base}: {what}: {e}"), hint)
}
