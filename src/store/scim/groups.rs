//! The SCIM store's groups (`[store] groups = true`), the way Entra's provisioning
//! pushes them: `POST /Groups` with `displayName` and `externalId` and no members, then
//! member PATCHes in the store's dialect. A group not linked yet is first looked up by
//! `displayName eq` (excluding members) and adopted, so a crash between the POST and
//! the mirror's row never makes a second group; an adopted group's members are read
//! once and set to what the directory wants. A group gone from the provider (404) is
//! created again with its members.
//!
//! Each request that succeeds is recorded in the mirror at once (with the step's run
//! key), so a step stopped anywhere is completed by the next plan.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::Value;

use super::client::ScimError;
use super::resource::{self, filter_eq};
use super::ScimStore;
use crate::groups::{Group, GroupOp, Groups};
use crate::store::StoreError;

/// Members per PATCH request (Entra sends them in batches too).
const MEMBERS_PER_PATCH: usize = 100;

impl ScimStore {
    pub fn takes_groups(&self) -> bool {
        self.groups
    }

    /// `check` with `[store] groups = true`: a lookup of a group that cannot exist, as
    /// the group step's adoption asks, must answer an empty ListResponse.
    pub(super) async fn check_groups(&self, base: &str) -> crate::check::CheckLine {
        use crate::check::CheckLine;
        let probe = filter_eq("displayName", &uuid::Uuid::new_v4().to_string());
        match self
            .client
            .get(
                "Groups",
                &[("filter", probe.as_str()), ("excludedAttributes", "members")],
            )
            .await
        {
            Ok(v) if v.get("Resources").and_then(Value::as_array).is_none_or(Vec::is_empty) => {
                CheckLine::ok(format!("scim store {base}: /Groups answers (groups = true)"))
            }
            Ok(_) => CheckLine::failed(
                format!("scim store {base}: GET /Groups?filter=displayName eq \"<random guid>\" answered groups; it must answer none"),
                "the provider ignores filters on /Groups: learner-sync would adopt another group; ask the platform to support `displayName eq`",
            ),
            Err(e) => CheckLine::failed(
                format!("scim store {base}: groups = true, but GET /Groups failed: {e}"),
                match e.status() {
                    Some(404 | 405 | 501) => "the provider does not take SCIM groups: set [store] groups = false (the learners are synced either way), or ask the platform to turn them on",
                    _ => "check the provider and the token's permissions for /Groups",
                },
            ),
        }
    }

    pub fn groups(&self, directory: &str) -> Result<Groups, StoreError> {
        Ok(self
            .mirror
            .groups(directory)?
            .into_iter()
            .map(|(id, (g, _))| (id, g))
            .collect())
    }

    pub async fn apply_groups(
        &mut self,
        directory: &str,
        run_key: &str,
        ops: &[GroupOp],
    ) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.mirror.begin_run(directory, run_key)?;
        let mut step = Step {
            store: self,
            directory,
            run_key,
            linked: BTreeMap::new(),
            adopted: BTreeMap::new(),
            scim_ids: None,
        };
        step.linked = step.store.mirror.groups(directory)?;
        for op in ops {
            step.apply(op).await?;
        }
        Ok(())
    }
}

struct Step<'a> {
    store: &'a mut ScimStore,
    directory: &'a str,
    run_key: &'a str,
    /// The mirror's groups (as this step changes them) and their SCIM ids.
    linked: BTreeMap<String, (Group, String)>,
    /// Groups this step adopted, with the learners the provider already had in them.
    adopted: BTreeMap<String, BTreeSet<String>>,
    /// The directory's learners' SCIM ids, read once per step.
    scim_ids: Option<std::collections::HashMap<String, String>>,
}

fn refused(e: ScimError) -> StoreError {
    match e.status() {
        Some(404 | 405 | 501) => StoreError::Other(format!(
            "the SCIM provider does not take groups ({e}); set [store] groups = false, or ask the platform to turn on SCIM groups"
        )),
        _ => StoreError::Other(e.to_string()),
    }
}

impl Step<'_> {
    async fn apply(&mut self, op: &GroupOp) -> Result<(), StoreError> {
        match op {
            GroupOp::Create { group } => self.create(group).await,
            GroupOp::Rename {
                external_id,
                display_name,
                email,
                ..
            } => {
                let Some((mut group, id)) = self.linked.get(external_id).cloned() else {
                    return Ok(());
                };
                group.display_name = display_name.clone();
                group.email = email.clone();
                let body = resource::group_rename(display_name, self.store.protocol.dialect);
                match self
                    .store
                    .client
                    .send_group(Method::PATCH, &id, Some(&body))
                    .await
                {
                    Ok(_) => self.link(&group, &id, None),
                    Err(e) if e.status() == Some(404) => self.recreate(&group).await,
                    Err(e) => Err(StoreError::Other(e.to_string())),
                }
            }
            GroupOp::AddMembers {
                external_id,
                members,
                ..
            } => {
                let mut add: Vec<String> = members.clone();
                if let Some(present) = self.adopted.remove(external_id) {
                    // An adopted group: only what it lacks, and off with what it has
                    // that the directory does not want.
                    let wanted: BTreeSet<&String> = members.iter().collect();
                    let extra: Vec<String> = present
                        .iter()
                        .filter(|m| !wanted.contains(m))
                        .cloned()
                        .collect();
                    add.retain(|m| !present.contains(m));
                    self.members(external_id, &extra, false).await?;
                }
                self.members(external_id, &add, true).await
            }
            GroupOp::RemoveMembers {
                external_id,
                members,
                ..
            } => self.members(external_id, members, false).await,
            GroupOp::Remove { external_id, .. } => {
                let Some((_, id)) = self.linked.remove(external_id) else {
                    return Ok(());
                };
                match self
                    .store
                    .client
                    .send_group(Method::DELETE, &id, None)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => return Err(StoreError::Other(e.to_string())),
                }
                self.store
                    .mirror
                    .unlink_group(self.directory, external_id, self.run_key)
            }
        }
    }

    fn link(
        &mut self,
        group: &Group,
        id: &str,
        members: Option<&BTreeSet<String>>,
    ) -> Result<(), StoreError> {
        self.store
            .mirror
            .link_group(self.directory, group, id, members, self.run_key)?;
        let entry = self
            .linked
            .entry(group.external_id.clone())
            .or_insert_with(|| (group.clone(), id.to_string()));
        entry.0.display_name = group.display_name.clone();
        entry.0.email = group.email.clone();
        entry.1 = id.to_string();
        if let Some(m) = members {
            entry.0.members = m.clone();
        }
        Ok(())
    }

    /// Adopt the provider's group of this name, or create it (without members).
    async fn create(&mut self, group: &Group) -> Result<(), StoreError> {
        let filter = filter_eq("displayName", &group.display_name);
        let found = self
            .store
            .client
            .get(
                "Groups",
                &[
                    ("filter", filter.as_str()),
                    ("excludedAttributes", "members"),
                ],
            )
            .await
            .map_err(refused)?;
        let existing = found
            .get("Resources")
            .and_then(Value::as_array)
            .and_then(|r| {
                r.iter().find(|g| {
                    g.get("displayName").and_then(Value::as_str) == Some(&group.display_name)
                })
            })
            .and_then(|g| g.get("id").and_then(Value::as_str))
            .map(str::to_string);
        match existing {
            Some(id) => {
                let present = self.members_on_provider(&id).await?;
                self.link(group, &id, Some(&present))?;
                self.adopted.insert(group.external_id.clone(), present);
                Ok(())
            }
            None => {
                let id = self.post(group).await?;
                crate::faults::point("after-group-post");
                self.link(group, &id, Some(&BTreeSet::new()))
            }
        }
    }

    async fn post(&mut self, group: &Group) -> Result<String, StoreError> {
        let body = resource::group_body(&group.display_name, &group.external_id);
        let created = self
            .store
            .client
            .send(Method::POST, "Groups", &[], Some(&body))
            .await
            .map_err(refused)?;
        created
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                StoreError::Other(
                    "the SCIM provider created a group but sent no id for it".to_string(),
                )
            })
    }

    fn scim_ids(&mut self) -> Result<&std::collections::HashMap<String, String>, StoreError> {
        if self.scim_ids.is_none() {
            self.scim_ids = Some(self.store.mirror.scim_ids(self.directory)?);
        }
        Ok(self.scim_ids.get_or_insert_with(Default::default))
    }

    /// The learners of this directory among a provider group's members.
    async fn members_on_provider(&mut self, id: &str) -> Result<BTreeSet<String>, StoreError> {
        let v = self
            .store
            .client
            .send_group(Method::GET, id, None)
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?
            .unwrap_or(Value::Null);
        let ids: BTreeSet<&str> = v
            .get("members")
            .and_then(Value::as_array)
            .map(|m| {
                m.iter()
                    .filter_map(|m| m.get("value").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        Ok(self
            .scim_ids()?
            .iter()
            .filter(|(_, scim_id)| ids.contains(scim_id.as_str()))
            .map(|(external_id, _)| external_id.clone())
            .collect())
    }

    /// Add or remove members (learner external ids); a group gone on the provider is
    /// created again with everyone it should have.
    async fn members(
        &mut self,
        group: &str,
        members: &[String],
        add: bool,
    ) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let Some((g, id)) = self.linked.get(group).cloned() else {
            return Ok(());
        };
        match self.patch_members(group, &id, members, add).await {
            Err(e) if e.status() == Some(404) => {
                let mut wanted = g.members.clone();
                for m in members {
                    if add {
                        wanted.insert(m.clone());
                    } else {
                        wanted.remove(m);
                    }
                }
                self.recreate(&Group {
                    members: wanted,
                    ..g
                })
                .await
            }
            other => other.map_err(|e| StoreError::Other(e.to_string())),
        }
    }

    /// The group vanished on the provider: create it again with its members.
    async fn recreate(&mut self, group: &Group) -> Result<(), StoreError> {
        tracing::warn!(
            directory = self.directory,
            group = %group.display_name,
            "the group is gone on the SCIM provider; creating it again"
        );
        let members: Vec<String> = group.members.iter().cloned().collect();
        let id = self.post(group).await?;
        self.link(group, &id, Some(&BTreeSet::new()))?;
        self.patch_members(&group.external_id, &id, &members, true)
            .await
            .map_err(|e| StoreError::Other(e.to_string()))
    }

    /// PATCH members in batches, each recorded in the mirror as it lands. A learner the
    /// mirror has no SCIM id for (its create failed) waits for the next run.
    async fn patch_members(
        &mut self,
        group: &str,
        id: &str,
        members: &[String],
        add: bool,
    ) -> Result<(), ScimError> {
        let scim_ids = self.scim_ids().map_err(stored)?;
        let linked: Vec<(String, String)> = members
            .iter()
            .filter_map(|m| scim_ids.get(m).map(|s| (m.clone(), s.clone())))
            .collect();
        for batch in linked.chunks(MEMBERS_PER_PATCH) {
            let ids: Vec<&str> = batch.iter().map(|(_, s)| s.as_str()).collect();
            let body = resource::group_members(&ids, add, self.store.protocol.dialect);
            self.store
                .client
                .send_group(Method::PATCH, id, Some(&body))
                .await?;
            let done: Vec<String> = batch.iter().map(|(m, _)| m.clone()).collect();
            self.store
                .mirror
                .group_members(self.directory, group, &done, add, self.run_key)
                .map_err(stored)?;
            if let Some((g, _)) = self.linked.get_mut(group) {
                for m in &done {
                    if add {
                        g.members.insert(m.clone());
                    } else {
                        g.members.remove(m);
                    }
                }
            }
            crate::faults::point("after-group-members");
        }
        Ok(())
    }
}

/// A mirror error where a request's error is expected.
fn stored(e: StoreError) -> ScimError {
    ScimError::Refused {
        detail: e.to_string(),
    }
}
