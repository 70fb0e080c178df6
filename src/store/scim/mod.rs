//! The SCIM 2.0 learner store: the plan is pushed to a SCIM service provider
//! (RFC 7643/7644), with `concurrency` requests in flight.
//!
//! - The plan diffs against a local mirror (see `mirror.rs`) that links each learner
//!   to its SCIM resource id; a row is written right after each successful request.
//! - Adopt, never duplicate: before a create the user is looked up by `externalId`,
//!   then by `userName`; a found resource is linked and overwritten with the desired
//!   values. A `409 uniqueness` on create is resolved the same way.
//! - A `404` on an update (deleted on the provider side) recreates and relinks.
//! - A 4xx for one user fails that user (reported with the provider's `detail`; the
//!   mirror is unchanged, so the next run retries it). A refused token, exhausted
//!   retries or an unreachable provider stop the sending: the requests in flight are
//!   recorded, and they and every operation not sent are reported failed.

pub mod client;
pub mod mirror;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};
use tokio::task::JoinSet;

use self::client::{ScimClient, ScimError};
use self::mirror::{Linked, Mirror};
use super::{ApplyReport, StoreError};
use crate::check::CheckLine;
use crate::config::{ScimDeactivate, Secret};
use crate::model::{Learner, LearnerFields};
use crate::plan::Operation;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

pub struct ScimStore {
    client: ScimClient,
    mirror: Mirror,
    concurrency: usize,
    deactivate: ScimDeactivate,
}

/// What the provider announces, fetched once per apply.
#[derive(Debug, Clone, Copy)]
struct Features {
    enterprise: bool,
    patch: bool,
}

/// Everything a request task needs.
#[derive(Clone)]
struct Ctx {
    client: ScimClient,
    features: Features,
    deactivate: ScimDeactivate,
    index: Option<Arc<Index>>,
}

/// A run creating at least this many users lists the provider's users once instead
/// of looking each one up with two filtered requests.
const INDEX_THRESHOLD: usize = 50;
/// Page size asked for when listing (providers may cap it lower).
const PAGE: usize = 1000;

/// The provider's users by externalId and by userName (case-insensitive), listed once.
#[derive(Debug, Default)]
struct Index {
    by_external_id: HashMap<String, String>,
    by_user_name: HashMap<String, String>,
}

impl Index {
    fn find(&self, ext: &str, user_name: &str) -> Option<String> {
        self.by_external_id
            .get(ext)
            .or_else(|| self.by_user_name.get(&user_name.to_lowercase()))
            .cloned()
    }
}

impl ScimStore {
    pub fn open(
        url: &reqwest::Url,
        token: Secret,
        request_timeout: Duration,
        concurrency: usize,
        deactivate: ScimDeactivate,
        state_db: &Path,
        read_only: bool,
    ) -> Result<ScimStore, StoreError> {
        let mirror = Mirror::open(&mirror::mirror_path(state_db), read_only)?;
        let client =
            ScimClient::new(url.clone(), token, request_timeout).map_err(StoreError::Other)?;
        Ok(ScimStore {
            client,
            mirror,
            concurrency: concurrency.max(1),
            deactivate,
        })
    }

    pub fn for_each_learner(
        &mut self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        self.mirror.for_each(directory, visit)
    }

    async fn features(&self) -> Result<Features, ScimError> {
        let spc = self.client.get("ServiceProviderConfig", &[]).await?;
        let patch = spc
            .pointer("/patch/supported")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        // Some providers do not serve /ResourceTypes; then send no extension.
        let enterprise = match self.client.get("ResourceTypes", &[]).await {
            Ok(v) => announces_enterprise(&v),
            Err(e) if e.status() == Some(404) => false,
            Err(e) => return Err(e),
        };
        Ok(Features { enterprise, patch })
    }

    /// Whether the apply of a run started; a crashed run that never got here sent nothing.
    pub fn was_applied(&self, run_key: &str) -> Result<bool, StoreError> {
        self.mirror.run_started(run_key)
    }

    pub async fn apply(
        &mut self,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        self.mirror.begin_run(directory, run_key)?;
        if operations.is_empty() {
            return Ok(report);
        }
        let sent_before = self.client.requests();
        let features = self
            .features()
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let ctx = Ctx {
            client: self.client.clone(),
            features,
            deactivate: self.deactivate,
            index: None,
        };
        let creates = operations
            .iter()
            .filter(|o| matches!(o, Operation::Create { .. }))
            .count();
        let ctx = Ctx {
            index: if creates >= INDEX_THRESHOLD {
                index(&ctx.client, 2 * creates)
                    .await
                    .map_err(|e| StoreError::Other(e.to_string()))?
                    .map(Arc::new)
            } else {
                None
            },
            ..ctx
        };
        // The enterprise `manager` is a reference to the manager's SCIM id: learners
        // are found by email (else userName) among those already linked.
        let mut managers: HashMap<String, String> = HashMap::new();
        if features.enterprise {
            for (key, id) in self.mirror.links(directory)? {
                managers.insert(key.to_lowercase(), id);
            }
        }
        // Reports whose manager was linked only later in this run: set in a second pass.
        let mut unresolved: Vec<(String, String)> = Vec::new();
        let mut pending = operations.iter();
        let mut tasks: JoinSet<(String, Result<Linked, ScimError>)> = JoinSet::new();
        let mut fatal: Option<String> = None;
        loop {
            while fatal.is_none() && tasks.len() < self.concurrency {
                let Some(op) = pending.next() else { break };
                let linked = self.mirror.get(directory, op.external_id())?;
                let manager_email = op.fields().manager_email.as_deref().map(str::to_lowercase);
                let manager = manager_email
                    .as_ref()
                    .and_then(|m| managers.get(m))
                    .cloned();
                if let (Some(m), None, true) = (&manager_email, &manager, features.enterprise) {
                    unresolved.push((op.external_id().to_string(), m.clone()));
                }
                let ctx = ctx.clone();
                let op = op.clone();
                tasks.spawn(async move {
                    let id = op.external_id().to_string();
                    (id, perform(&ctx, &op, linked, manager.as_deref()).await)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (external_id, result) = joined
                .map_err(|e| StoreError::Other(format!("a SCIM request task failed: {e}")))?;
            match result {
                Ok(linked) => {
                    self.mirror.upsert(directory, &external_id, &linked)?;
                    if features.enterprise {
                        for key in [
                            Some(linked.fields.user_name.as_str()),
                            linked.fields.email.as_deref(),
                        ]
                        .into_iter()
                        .flatten()
                        {
                            managers.insert(key.to_lowercase(), linked.scim_id.clone());
                        }
                    }
                }
                Err(e) if e.is_per_user() => {
                    tracing::warn!(
                        directory,
                        external_id,
                        detail = e.detail(),
                        "the SCIM provider refused a learner"
                    );
                    report.failed.push((external_id, e.detail()));
                }
                Err(e) => {
                    // Stop sending; let the requests in flight finish and be recorded.
                    report.failed.push((external_id, e.detail()));
                    fatal.get_or_insert_with(|| e.to_string());
                }
            }
        }
        // What was never sent fails too: the action log keeps what did land, and the
        // next run (planned against the mirror) retries the rest.
        if let Some(error) = &fatal {
            tracing::warn!(directory, error, "stopped sending to the SCIM provider");
            for op in pending {
                report
                    .failed
                    .push((op.external_id().to_string(), format!("not sent: {error}")));
            }
        }
        if fatal.is_none() {
            self.link_managers(directory, &ctx, &managers, unresolved)
                .await?;
        }
        tracing::info!(
            directory,
            operations = operations.len(),
            failed = report.failed.len(),
            requests = self.client.requests() - sent_before,
            "applied to the SCIM provider"
        );
        Ok(report)
    }

    /// Second pass: set the manager of reports whose manager was created after them.
    /// A failure leaves the mirror's manager empty, so the next run sets it again.
    async fn link_managers(
        &mut self,
        directory: &str,
        ctx: &Ctx,
        managers: &HashMap<String, String>,
        unresolved: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        for (external_id, manager_email) in unresolved {
            let (Some(manager), Some(mut linked)) = (
                managers.get(&manager_email),
                self.mirror.get(directory, &external_id)?,
            ) else {
                continue;
            };
            let path = format!("Users/{}", linked.scim_id);
            let sent = if ctx.features.patch {
                let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [
                    {"op": "replace", "path": format!("{ENTERPRISE_SCHEMA}:manager"), "value": {"value": manager}}
                ]});
                ctx.client
                    .send(Method::PATCH, &path, &[], Some(&body))
                    .await
            } else {
                let mut body = user_resource(
                    &external_id,
                    &linked.fields,
                    linked.active,
                    true,
                    Some(manager),
                );
                body["id"] = json!(linked.scim_id);
                ctx.client.send(Method::PUT, &path, &[], Some(&body)).await
            };
            if let Err(e) = sent {
                tracing::warn!(
                    directory,
                    external_id,
                    detail = e.detail(),
                    "could not set the manager; the next run tries again"
                );
                linked.fields.manager_email = None;
                self.mirror.upsert(directory, &external_id, &linked)?;
            }
        }
        Ok(())
    }

    pub async fn check(&self) -> Vec<CheckLine> {
        let base = self.client.base().to_string();
        let mut lines = Vec::new();
        match self.client.get("ServiceProviderConfig", &[]).await {
            Ok(v) => {
                let patch = v
                    .pointer("/patch/supported")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                lines.push(CheckLine::ok(format!(
                    "scim store {base}: ServiceProviderConfig answered (PATCH {})",
                    if patch {
                        "supported"
                    } else {
                        "unsupported, PUT is used"
                    }
                )));
            }
            Err(e) => {
                lines.push(failed_line(&base, "GET /ServiceProviderConfig", &e));
                if e.status().is_none() {
                    return lines;
                }
            }
        }
        match self
            .client
            .get("Users", &[("startIndex", "1"), ("count", "1")])
            .await
        {
            Ok(v) => {
                let total = v.get("totalResults").and_then(Value::as_i64).unwrap_or(0);
                lines.push(CheckLine::ok(format!(
                    "scim store {base}: the token may list Users ({total} on the provider)"
                )));
            }
            Err(e) => lines.push(failed_line(&base, "GET /Users", &e)),
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
        lines
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

fn announces_enterprise(resource_types: &Value) -> bool {
    let list: Vec<&Value> = match resource_types.get("Resources") {
        Some(Value::Array(a)) => a.iter().collect(),
        _ => match resource_types {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        },
    };
    list.iter()
        .filter(|rt| {
            rt.get("endpoint").and_then(Value::as_str) == Some("/Users")
                || rt.get("schema").and_then(Value::as_str) == Some(USER_SCHEMA)
        })
        .any(|rt| {
            rt.get("schemaExtensions")
                .and_then(Value::as_array)
                .is_some_and(|exts| {
                    exts.iter()
                        .any(|x| x.get("schema").and_then(Value::as_str) == Some(ENTERPRISE_SCHEMA))
                })
        })
}

/// The full SCIM User resource for a learner (POST and PUT bodies).
pub fn user_resource(
    external_id: &str,
    f: &LearnerFields,
    active: bool,
    enterprise: bool,
    manager: Option<&str>,
) -> Value {
    let mut schemas = vec![USER_SCHEMA];
    let mut body = Map::new();
    body.insert("userName".into(), json!(f.user_name));
    body.insert("externalId".into(), json!(external_id));
    let mut name = Map::new();
    if let Some(v) = &f.given_name {
        name.insert("givenName".into(), json!(v));
    }
    if let Some(v) = &f.family_name {
        name.insert("familyName".into(), json!(v));
    }
    if !name.is_empty() {
        body.insert("name".into(), Value::Object(name));
    }
    if let Some(v) = &f.display_name {
        body.insert("displayName".into(), json!(v));
    }
    if let Some(v) = &f.email {
        body.insert("emails".into(), emails(v));
    }
    if let Some(v) = &f.job_title {
        body.insert("title".into(), json!(v));
    }
    body.insert("active".into(), json!(active));
    if enterprise {
        let mut ext = Map::new();
        if let Some(v) = &f.department {
            ext.insert("department".into(), json!(v));
        }
        if let Some(v) = &f.employee_id {
            ext.insert("employeeNumber".into(), json!(v));
        }
        if let Some(id) = manager {
            ext.insert("manager".into(), json!({ "value": id }));
        }
        if !ext.is_empty() {
            schemas.push(ENTERPRISE_SCHEMA);
            body.insert(ENTERPRISE_SCHEMA.into(), Value::Object(ext));
        }
    }
    body.insert("schemas".into(), json!(schemas));
    Value::Object(body)
}

fn emails(value: &str) -> Value {
    json!([{ "value": value, "type": "work", "primary": true }])
}

/// The SCIM attribute path of a learner column, and its value; `None` for a column
/// the provider is not sent (the extension when not announced, a manager not linked).
fn attribute(
    field: &str,
    value: Option<&str>,
    enterprise: bool,
    manager: Option<&str>,
) -> Option<(String, Option<Value>)> {
    if field == "manager_email" && enterprise {
        let path = format!("{ENTERPRISE_SCHEMA}:manager");
        return match (value, manager) {
            (None, _) => Some((path, None)),
            (Some(_), Some(id)) => Some((path, Some(json!({ "value": id })))),
            // Not linked yet: set by the second pass once the manager is.
            (Some(_), None) => None,
        };
    }
    let path = match field {
        "user_name" => "userName".to_string(),
        "email" => "emails".to_string(),
        "given_name" => "name.givenName".to_string(),
        "family_name" => "name.familyName".to_string(),
        "display_name" => "displayName".to_string(),
        "job_title" => "title".to_string(),
        "department" if enterprise => format!("{ENTERPRISE_SCHEMA}:department"),
        "employee_id" if enterprise => format!("{ENTERPRISE_SCHEMA}:employeeNumber"),
        _ => return None,
    };
    let value = value.map(|v| {
        if field == "email" {
            emails(v)
        } else {
            json!(v)
        }
    });
    Some((path, value))
}

/// A PatchOp setting the columns given (`remove` for a cleared one) and maybe `active`.
pub fn patch_body(
    f: &LearnerFields,
    fields: &[&str],
    active: Option<bool>,
    enterprise: bool,
    manager: Option<&str>,
) -> Option<Value> {
    let mut ops: Vec<Value> = fields
        .iter()
        .filter_map(|name| attribute(name, f.get(name), enterprise, manager))
        .map(|(path, value)| match value {
            Some(v) => json!({"op": "replace", "path": path, "value": v}),
            None => json!({"op": "remove", "path": path}),
        })
        .collect();
    if let Some(a) = active {
        ops.push(json!({"op": "replace", "path": "active", "value": a}));
    }
    (!ops.is_empty()).then(|| json!({"schemas": [PATCH_SCHEMA], "Operations": ops}))
}

/// A SCIM filter string literal: quotes and backslashes escaped.
pub fn filter_eq(attribute: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{attribute} eq \"{escaped}\"")
}

/// Carry out one operation; on success, what the mirror should now hold.
async fn perform(
    ctx: &Ctx,
    op: &Operation,
    linked: Option<Linked>,
    manager: Option<&str>,
) -> Result<Linked, ScimError> {
    let f = op.fields();
    let ext = op.external_id();
    let (active, changed): (bool, Vec<&str>) = match op {
        Operation::Create { .. } => (true, vec![]),
        Operation::Update { changes, .. } => (
            linked.as_ref().is_none_or(|l| l.active),
            changes.iter().map(|c| c.field.as_str()).collect(),
        ),
        Operation::Deactivate { changes, .. } => {
            (false, changes.iter().map(|c| c.field.as_str()).collect())
        }
        Operation::Reactivate { changes, .. } => {
            (true, changes.iter().map(|c| c.field.as_str()).collect())
        }
    };
    let done = |scim_id: String| Linked {
        scim_id,
        fields: f.clone(),
        active,
    };
    let Some(link) = linked else {
        // Not linked yet: adopt or create.
        return create_or_adopt(ctx, ext, f, active, manager)
            .await
            .map(done);
    };
    let path = format!("Users/{}", link.scim_id);
    if matches!(op, Operation::Deactivate { .. }) && ctx.deactivate == ScimDeactivate::Delete {
        return match ctx.client.send(Method::DELETE, &path, &[], None).await {
            Ok(_) => Ok(done(link.scim_id)),
            Err(e) if e.status() == Some(404) => Ok(done(link.scim_id)),
            Err(e) => Err(e),
        };
    }
    if matches!(op, Operation::Update { .. })
        && ctx.deactivate == ScimDeactivate::Delete
        && !link.active
    {
        // Deleted on deactivation: nothing to update; the values are sent on reactivation.
        return Ok(done(link.scim_id));
    }
    if matches!(op, Operation::Reactivate { .. }) && ctx.deactivate == ScimDeactivate::Delete {
        // The resource was deleted on deactivation: create it again.
        return create_or_adopt(ctx, ext, f, true, manager).await.map(done);
    }
    let sets_active = !matches!(op, Operation::Update { .. });
    let result = if ctx.features.patch {
        match patch_body(
            f,
            &changed,
            sets_active.then_some(active),
            ctx.features.enterprise,
            manager,
        ) {
            Some(body) => ctx
                .client
                .send(Method::PATCH, &path, &[], Some(&body))
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    } else {
        let mut body = user_resource(ext, f, active, ctx.features.enterprise, manager);
        body["id"] = json!(link.scim_id);
        ctx.client
            .send(Method::PUT, &path, &[], Some(&body))
            .await
            .map(|_| ())
    };
    match result {
        Ok(()) => Ok(done(link.scim_id)),
        Err(e) if e.status() == Some(404) => {
            tracing::info!(
                external_id = ext,
                "the learner was deleted on the SCIM provider; creating it again"
            );
            create_or_adopt(ctx, ext, f, active, manager)
                .await
                .map(done)
        }
        Err(e) => Err(e),
    }
}

/// Find the user by externalId, then by userName; link and overwrite it, or POST it.
async fn create_or_adopt(
    ctx: &Ctx,
    ext: &str,
    f: &LearnerFields,
    active: bool,
    manager: Option<&str>,
) -> Result<String, ScimError> {
    let found = match &ctx.index {
        Some(index) => index.find(ext, &f.user_name),
        None => lookup(ctx, ext, &f.user_name).await?,
    };
    if let Some(id) = found {
        adopt(ctx, &id, ext, f, active, manager).await?;
        return Ok(id);
    }
    let body = user_resource(ext, f, active, ctx.features.enterprise, manager);
    match ctx
        .client
        .send(Method::POST, "Users", &[], Some(&body))
        .await
    {
        Ok(Some(created)) => created
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ScimError::Malformed {
                path: "/Users".to_string(),
                detail: "the created resource has no id".to_string(),
            }),
        Ok(None) => Err(ScimError::Malformed {
            path: "/Users".to_string(),
            detail: "the provider returned no resource for a create".to_string(),
        }),
        Err(e) if e.status() == Some(409) => {
            // Someone holds the userName or externalId: find and link it.
            match lookup(ctx, ext, &f.user_name).await? {
                Some(id) => {
                    adopt(ctx, &id, ext, f, active, manager).await?;
                    Ok(id)
                }
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// List every user of the provider (`externalId` and `userName` only), unless that
/// takes more than `max_pages` requests; then `None` (look users up one by one).
async fn index(client: &ScimClient, max_pages: usize) -> Result<Option<Index>, ScimError> {
    let mut index = Index::default();
    let mut seen = 0usize;
    let mut pages = 0usize;
    loop {
        let start = (seen + 1).to_string();
        let count = PAGE.to_string();
        let page = client
            .get(
                "Users",
                &[
                    ("startIndex", start.as_str()),
                    ("count", count.as_str()),
                    ("attributes", "externalId,userName"),
                ],
            )
            .await?;
        pages += 1;
        let total = page
            .get("totalResults")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let resources = page
            .get("Resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if pages == 1 && !resources.is_empty() && total.div_ceil(resources.len()) > max_pages {
            return Ok(None);
        }
        seen += resources.len();
        for user in &resources {
            let Some(id) = user.get("id").and_then(Value::as_str) else {
                continue;
            };
            if let Some(ext) = user.get("externalId").and_then(Value::as_str) {
                index.by_external_id.insert(ext.to_string(), id.to_string());
            }
            if let Some(name) = user.get("userName").and_then(Value::as_str) {
                index
                    .by_user_name
                    .insert(name.to_lowercase(), id.to_string());
            }
        }
        if resources.is_empty() || seen >= total {
            return Ok(Some(index));
        }
    }
}

async fn lookup(ctx: &Ctx, ext: &str, user_name: &str) -> Result<Option<String>, ScimError> {
    for filter in [
        filter_eq("externalId", ext),
        filter_eq("userName", user_name),
    ] {
        let found = match ctx
            .client
            .get("Users", &[("filter", filter.as_str()), ("startIndex", "1")])
            .await
        {
            Ok(found) => found,
            // A provider that cannot filter on this attribute (`invalidFilter`): try the next.
            Err(e) if e.status() == Some(400) => continue,
            Err(e) => return Err(e),
        };
        let first = found
            .get("Resources")
            .and_then(Value::as_array)
            .and_then(|r| r.first())
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str);
        if let Some(id) = first {
            return Ok(Some(id.to_string()));
        }
    }
    Ok(None)
}

/// Overwrite an adopted resource with the desired values.
async fn adopt(
    ctx: &Ctx,
    id: &str,
    ext: &str,
    f: &LearnerFields,
    active: bool,
    manager: Option<&str>,
) -> Result<(), ScimError> {
    tracing::info!(
        external_id = ext,
        scim_id = id,
        "adopting an existing SCIM user"
    );
    let mut body = user_resource(ext, f, active, ctx.features.enterprise, manager);
    body["id"] = json!(id);
    ctx.client
        .send(Method::PUT, &format!("Users/{id}"), &[], Some(&body))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> LearnerFields {
        LearnerFields {
            user_name: "ann@example.org".into(),
            email: Some("ann@example.org".into()),
            given_name: Some("Ann".into()),
            family_name: None,
            display_name: Some("Ann".into()),
            department: Some("R&D".into()),
            job_title: None,
            employee_id: Some("42".into()),
            manager_email: None,
        }
    }

    #[test]
    fn filter_values_escape_quotes_and_backslashes() {
        assert_eq!(
            filter_eq("userName", r#"a"b\c"#),
            r#"userName eq "a\"b\\c""#
        );
    }

    #[test]
    fn create_body_has_the_enterprise_extension_only_when_announced() {
        let with = user_resource("e1", &fields(), true, true, Some("m1"));
        assert_eq!(with[ENTERPRISE_SCHEMA]["employeeNumber"], "42");
        assert_eq!(with[ENTERPRISE_SCHEMA]["manager"], json!({"value": "m1"}));
        assert_eq!(with["emails"][0]["type"], "work");
        assert_eq!(with["emails"][0]["primary"], true);
        assert_eq!(with["externalId"], "e1");
        let without = user_resource("e1", &fields(), true, false, Some("m1"));
        assert!(without.get(ENTERPRISE_SCHEMA).is_none());
        assert_eq!(without["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn patch_sends_only_changed_attributes_and_removes_cleared_ones() {
        let body = patch_body(&fields(), &["department", "family_name"], None, true, None)
            .unwrap_or_default();
        let ops = body["Operations"].as_array().cloned().unwrap_or_default();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["path"], format!("{ENTERPRISE_SCHEMA}:department"));
        assert_eq!(ops[1], json!({"op": "remove", "path": "name.familyName"}));
        assert!(patch_body(&fields(), &["manager_email"], None, false, None).is_none());
    }

    #[test]
    fn resource_types_announcing_the_enterprise_extension_are_recognised() {
        let v = json!({"Resources": [{"endpoint": "/Users", "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}]}]});
        assert!(announces_enterprise(&v));
        assert!(!announces_enterprise(
            &json!({"Resources": [{"endpoint": "/Users"}]})
        ));
    }
}
