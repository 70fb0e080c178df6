//! Applying a plan to the SCIM provider: the request tasks (one per operation, up to
//! `concurrency` in flight), settling each result in the mirror, and the second pass
//! that sets managers linked later in the run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::claims::{
    describe, resolve, Candidates, Claims, Found, Index, Resolution, INDEX_THRESHOLD, PAGE,
};
use super::client::{ScimClient, ScimError};
use super::mirror::{Linked, Owner};
use super::resource::{filter_eq, manager_patch, patch_body, user_resource, with_extras};
use super::takeover::{differences, Differences};
use super::{Features, Protocol, ScimStore};
use crate::config::{ScimDeactivate, ScimDialect, ScimMatch};
use crate::model::{Field, LearnerFields};
use crate::plan::{FieldChange, Operation};
use crate::store::{ApplyReport, StoreError};

/// What became of one operation.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Linked,
    /// Not linked because the resource found belongs to another learner.
    Refused(String),
    /// This learner failed.
    Failed(String),
    /// The provider failed as a whole (`error`): stop sending.
    Fatal {
        detail: String,
        error: String,
    },
}

/// Note a failed outcome in the report; whether it was a refusal.
fn record(
    report: &mut ApplyReport,
    fatal: &mut Option<String>,
    external_id: &str,
    outcome: Outcome,
) -> bool {
    let (detail, refused) = match outcome {
        Outcome::Linked => return false,
        Outcome::Refused(detail) => (detail, true),
        Outcome::Failed(detail) => (detail, false),
        Outcome::Fatal { detail, error } => {
            fatal.get_or_insert(error);
            (detail, false)
        }
    };
    report.failed.push((external_id.to_string(), detail));
    refused
}

/// Everything a request task needs.
#[derive(Clone)]
pub(super) struct Ctx {
    client: ScimClient,
    features: Features,
    deactivate: ScimDeactivate,
    protocol: Protocol,
    index: Option<Arc<Index>>,
    /// The directory being applied: with an external id, the learner a task works for.
    directory: Arc<str>,
    claims: Arc<Claims>,
    /// The users adopted in this apply, by SCIM id, with the manager id each had on
    /// the provider: the second pass leaves a manager that is already right alone.
    adopted: Arc<std::sync::Mutex<HashMap<String, Option<String>>>>,
    /// The learners (external ids) whose create adopted an existing SCIM user.
    adopters: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl Ctx {
    fn adopted(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        // Only inserts: consistent whatever a panicking holder did.
        self.adopted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ScimStore {
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
        let ctx = self.context(directory, operations).await?;
        let features = ctx.features;
        let creates = operations
            .iter()
            .filter(|o| matches!(o, Operation::Create { .. }))
            .count();
        // Listing every user is RFC 7644's; Entra only ever looks users up by filter,
        // and endpoints built for it may not list (or not by both attributes).
        let listable = self.protocol.match_by == ScimMatch::ExternalIdThenUserName
            && self.protocol.dialect == ScimDialect::Rfc;
        let ctx = Ctx {
            index: if listable && creates >= INDEX_THRESHOLD {
                index(&ctx.client, 2 * creates)
                    .await
                    .map_err(|e| StoreError::Other(e.to_string()))?
                    .map(Arc::new)
            } else {
                None
            },
            ..ctx
        };
        let mut managers = self.managers(directory, features)?;
        // Reports whose manager was linked only later in this run: set in a second pass.
        let mut unresolved: Vec<(String, String)> = Vec::new();
        let mut pending = operations.iter();
        let mut tasks: JoinSet<(Operation, Option<String>, Result<Linked, ScimError>)> =
            JoinSet::new();
        let mut fatal: Option<String> = None;
        // userNames (lowercase) that an operation of this run took off a resource, and
        // the creates refused because another learner's resource held their userName.
        let mut freed: HashSet<String> = HashSet::new();
        let mut refused: Vec<Operation> = Vec::new();
        loop {
            while fatal.is_none() && tasks.len() < self.concurrency {
                let Some(op) = pending.next() else { break };
                let linked = self.mirror.get(directory, op.external_id())?;
                let frees = linked.as_ref().and_then(|l| {
                    let old = l.fields.user_name.to_lowercase();
                    let deletes = matches!(op, Operation::Deactivate { .. })
                        && self.deactivate == ScimDeactivate::Delete;
                    (deletes || old != op.fields().user_name.to_lowercase()).then_some(old)
                });
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
                    let result = perform(&ctx, &op, linked, manager.as_deref()).await;
                    (op, frees, result)
                });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let (op, frees, result) = joined
                .map_err(|e| StoreError::Other(format!("a SCIM request task failed: {e}")))?;
            let outcome = self.settle(
                directory,
                run_key,
                features.enterprise,
                &mut managers,
                op.external_id(),
                result,
            )?;
            if outcome == Outcome::Linked {
                freed.extend(frees);
            } else if record(&mut report, &mut fatal, op.external_id(), outcome) {
                refused.push(op);
            }
        }
        // A userName can pass from one learner to another within a run (a leaver's
        // resource renamed or deleted, the name given to a new hire): a create refused
        // before the holder let go of it is tried once more, so that it lands now.
        for op in refused {
            if fatal.is_some() || !freed.contains(&op.fields().user_name.to_lowercase()) {
                continue;
            }
            let external_id = op.external_id();
            report.failed.retain(|(id, _)| id != external_id);
            let linked = self.mirror.get(directory, external_id)?;
            let manager = op
                .fields()
                .manager_email
                .as_deref()
                .and_then(|m| managers.get(&m.to_lowercase()))
                .cloned();
            let result = perform(&ctx, &op, linked, manager.as_deref()).await;
            let outcome = self.settle(
                directory,
                run_key,
                features.enterprise,
                &mut managers,
                external_id,
                result,
            )?;
            record(&mut report, &mut fatal, external_id, outcome);
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
        let adopters = ctx
            .adopters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let failed: HashSet<&str> = report.failed.iter().map(|(id, _)| id.as_str()).collect();
        report.adopted = adopters
            .iter()
            .filter(|ext| !failed.contains(ext.as_str()))
            .count();
        drop(adopters);
        tracing::info!(
            directory,
            operations = operations.len(),
            failed = report.failed.len(),
            requests = self.client.requests() - sent_before,
            "applied to the SCIM provider"
        );
        Ok(report)
    }

    /// What taking over the users of a first run would do, for `sync --dry-run`: for
    /// each create of a learner not linked yet, the user it adopts (and each value that
    /// changes on it), or that it is created, or refused. Only reads the provider: the
    /// lookups and decisions are the ones a run makes, so the run does what this says
    /// (bar users that change on the provider in between).
    pub async fn preview(
        &self,
        directory: &str,
        operations: &[Operation],
    ) -> Result<Vec<String>, StoreError> {
        use crate::report::printable;
        let creates: Vec<&Operation> = operations
            .iter()
            .filter(|o| matches!(o, Operation::Create { .. }))
            .collect();
        if creates.is_empty() {
            return Ok(vec![]);
        }
        let ctx = self.context(directory, operations).await?;
        let managers = self.managers(directory, ctx.features)?;
        let show = |v: &Option<String>| match v {
            Some(v) => format!("{:?}", printable(v)),
            None => "(none)".to_string(),
        };
        let mut planned = Vec::new();
        let mut managers = managers;
        for op in creates {
            let (ext, f) = (op.external_id(), op.fields());
            let manager = f
                .manager_email
                .as_deref()
                .and_then(|m| managers.get(&m.to_lowercase()))
                .cloned();
            let takeover = plan_takeover(&ctx, ext, f, true, manager.as_deref(), false)
                .await
                .map_err(|e| StoreError::Other(e.to_string()))?;
            if let Takeover::Adopt { id, .. } = &takeover {
                if ctx.features.enterprise {
                    for key in [Some(f.user_name.as_str()), f.email.as_deref()]
                        .into_iter()
                        .flatten()
                    {
                        managers.insert(key.to_lowercase(), id.clone());
                    }
                }
            }
            planned.push((op, manager.is_some(), takeover));
        }
        let mut lines = Vec::new();
        for (op, manager_known, takeover) in planned {
            let (ext, f) = (op.external_id(), op.fields());
            let who = format!(
                "{directory}: takeover    {} ({})",
                printable(&f.user_name),
                printable(ext)
            );
            match takeover {
                Takeover::Adopt {
                    id,
                    matched_by,
                    mut diff,
                    ..
                } => {
                    // A manager adopted later in the run: set by the second pass
                    // unless the user already has it.
                    let later = f
                        .manager_email
                        .as_deref()
                        .filter(|_| !manager_known)
                        .and_then(|m| managers.get(&m.to_lowercase()));
                    let had = ctx.adopted().get(&id).cloned().flatten();
                    if let Some(m) = later.filter(|m| had.as_ref() != Some(*m)) {
                        diff.shown.push(("manager".into(), had, Some(m.clone())));
                    }
                    if diff.shown.is_empty() {
                        lines.push(format!(
                            "{who}: adopts SCIM user {} (matched by {matched_by}); nothing to change",
                            printable(&id)
                        ));
                        continue;
                    }
                    lines.push(format!(
                        "{who}: adopts SCIM user {} (matched by {matched_by}); changes:",
                        printable(&id)
                    ));
                    for (attribute, before, after) in &diff.shown {
                        lines.push(format!(
                            "{directory}:     {attribute}: {} -> {}",
                            show(before),
                            show(after)
                        ));
                    }
                }
                Takeover::Create { looked_up_by } => lines.push(format!(
                    "{who}: no SCIM user matched by {looked_up_by}; created"
                )),
                Takeover::Refuse(why) => lines.push(format!("{who}: refused: {}", printable(&why))),
            }
        }
        Ok(lines)
    }

    /// What every request task of an apply (or a dry run's preview) shares.
    async fn context(&self, directory: &str, operations: &[Operation]) -> Result<Ctx, StoreError> {
        let features = self
            .features()
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(Ctx {
            client: self.client.clone(),
            features,
            deactivate: self.deactivate,
            protocol: self.protocol,
            index: None,
            directory: Arc::from(directory),
            claims: Arc::new(
                Claims::new(self.mirror.owners()?)
                    .with_learners(operations.iter().map(Operation::external_id)),
            ),
            adopted: Arc::default(),
            adopters: Arc::default(),
        })
    }

    /// The enterprise `manager` is a reference to the manager's SCIM id: learners are
    /// found by email (else userName) among those already linked.
    fn managers(
        &self,
        directory: &str,
        features: Features,
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut managers: HashMap<String, String> = HashMap::new();
        if features.enterprise {
            for (key, id) in self.mirror.links(directory)? {
                managers.insert(key.to_lowercase(), id);
            }
        }
        Ok(managers)
    }

    /// Settle the result of one operation: link it in the mirror (and as a manager),
    /// or say how it failed.
    fn settle(
        &self,
        directory: &str,
        run_key: &str,
        enterprise: bool,
        managers: &mut HashMap<String, String>,
        external_id: &str,
        result: Result<Linked, ScimError>,
    ) -> Result<Outcome, StoreError> {
        match result {
            Ok(linked) => {
                if let Some(owner) =
                    self.mirror
                        .upsert(directory, external_id, &linked, Some(run_key))?
                {
                    let detail = format!(
                        "not linked: the mirror links SCIM user {} to learner {}",
                        linked.scim_id,
                        describe(&owner, directory)
                    );
                    tracing::warn!(directory, external_id, detail, "refused a second link");
                    return Ok(Outcome::Failed(detail));
                }
                if enterprise {
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
                Ok(Outcome::Linked)
            }
            Err(e @ ScimError::Refused { .. }) => {
                tracing::warn!(
                    directory,
                    external_id,
                    detail = e.detail(),
                    "not linked: the SCIM user found belongs to another learner"
                );
                Ok(Outcome::Refused(e.detail()))
            }
            Err(e) if e.is_per_user() => {
                tracing::warn!(
                    directory,
                    external_id,
                    detail = e.detail(),
                    "the SCIM provider refused a learner"
                );
                Ok(Outcome::Failed(e.detail()))
            }
            Err(e) => {
                // Stop sending; let the requests in flight finish and be recorded.
                Ok(Outcome::Fatal {
                    detail: e.detail(),
                    error: e.to_string(),
                })
            }
        }
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
            let id = linked.scim_id.as_str();
            if ctx.adopted().get(id) == Some(&Some(manager.clone())) {
                // Adopted with this manager already set: nothing to write.
                continue;
            }
            let sent = if ctx.features.patch {
                let body = manager_patch(manager, ctx.protocol.dialect);
                ctx.client.send_user(Method::PATCH, id, Some(&body)).await
            } else {
                let mut body = user_resource(
                    &ctx.protocol.external_id_of(&external_id, &linked.fields),
                    &linked.fields,
                    linked.active,
                    true,
                    Some(manager),
                    ctx.protocol.dialect,
                );
                body["id"] = json!(linked.scim_id);
                ctx.client.send_user(Method::PUT, id, Some(&body)).await
            };
            if let Err(e) = sent {
                tracing::warn!(
                    directory,
                    external_id,
                    detail = e.detail(),
                    "could not set the manager; the next run tries again"
                );
                linked.fields.manager_email = None;
                if let Some(owner) = self.mirror.upsert(directory, &external_id, &linked, None)? {
                    tracing::warn!(
                        directory,
                        external_id,
                        owner = describe(&owner, directory),
                        "the mirror links this learner's SCIM user to another learner"
                    );
                }
            }
        }
        Ok(())
    }
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
    let fields_of = |changes: &[FieldChange]| -> Vec<Field> {
        changes
            .iter()
            .filter_map(|c| Field::parse(&c.field))
            .collect()
    };
    let (active, changed): (bool, Vec<Field>) = match op {
        Operation::Create { .. } => (true, vec![]),
        Operation::Update { changes, .. } => {
            (linked.as_ref().is_none_or(|l| l.active), fields_of(changes))
        }
        Operation::Deactivate { changes, .. } => (false, fields_of(changes)),
        Operation::Reactivate { changes, .. } => (true, fields_of(changes)),
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
    let id = link.scim_id.as_str();
    if matches!(op, Operation::Deactivate { .. }) && ctx.deactivate == ScimDeactivate::Delete {
        return match ctx.client.send_user(Method::DELETE, id, None).await {
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
        let body = patch_body(
            f,
            &changed,
            sets_active.then_some(active),
            ctx.features.enterprise,
            manager,
            ctx.protocol.dialect,
            None,
        );
        match with_extras(body, f, op.changes(), ctx.protocol.dialect) {
            Some(body) => ctx
                .client
                .send_user(Method::PATCH, id, Some(&body))
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    } else {
        let mut body = user_resource(
            &ctx.protocol.external_id_of(ext, f),
            f,
            active,
            ctx.features.enterprise,
            manager,
            ctx.protocol.dialect,
        );
        body["id"] = json!(link.scim_id);
        ctx.client
            .send_user(Method::PUT, id, Some(&body))
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

/// How a learner not linked yet is resolved on the provider: the user it takes over
/// and what that changes, a create, or a refusal. The same for a run and a dry run.
#[derive(Debug)]
pub(super) enum Takeover {
    Adopt {
        id: String,
        newly_claimed: bool,
        /// The attribute it was found by (`userName`, `externalId`, `emails`).
        matched_by: &'static str,
        diff: Differences,
    },
    Create {
        /// The attributes looked up by, for the dry run.
        looked_up_by: &'static str,
    },
    Refuse(String),
}

/// Look the learner up by the matching attribute and decide (see `resolve`); an
/// adopted user is claimed and compared with what learner-sync would write.
pub(super) async fn plan_takeover(
    ctx: &Ctx,
    ext: &str,
    f: &LearnerFields,
    active: bool,
    manager: Option<&str>,
    indexed: bool,
) -> Result<Takeover, ScimError> {
    let me: Owner = (ctx.directory.to_string(), ext.to_string());
    let found = match (&ctx.index, indexed) {
        (Some(index), true) => index.find(&ctx.protocol.external_id_of(ext, f), &f.user_name),
        _ => lookup(ctx, ext, f).await?,
    };
    let (id, newly_claimed) = match resolve(&ctx.claims, &me, &f.user_name, &found) {
        Resolution::Adopt { id, newly_claimed } => (id, newly_claimed),
        Resolution::Refuse(detail) => return Ok(Takeover::Refuse(detail)),
        Resolution::Create => {
            return Ok(Takeover::Create {
                looked_up_by: looked_up_by(ctx.protocol.match_by),
            })
        }
    };
    let by_external_id = found.by_external_id.as_ref().is_some_and(|u| u.id == id);
    let matched_by = match (by_external_id, ctx.protocol.match_by) {
        (true, _) => "externalId",
        (false, ScimMatch::Emails) => "emails",
        (false, _) => "userName",
    };
    let resource = [found.by_external_id, found.by_user_name]
        .into_iter()
        .flatten()
        .find(|u| u.id == id)
        .and_then(|u| u.resource);
    // Listed users carry only the attributes the index asked for: read the whole one.
    let resource = match resource {
        Some(r) => r,
        None => match ctx.client.send_user(Method::GET, &id, None).await {
            Ok(r) => r.unwrap_or(Value::Null),
            Err(e) => {
                if newly_claimed {
                    ctx.claims.release(&id, &me);
                }
                return Err(e);
            }
        },
    };
    ctx.adopted().insert(
        id.clone(),
        super::takeover::provider_value(&resource, Field::ManagerEmail),
    );
    let written = ctx.protocol.external_id_of(ext, f);
    let diff = differences(
        &resource,
        &written,
        f,
        active,
        ctx.features.enterprise,
        manager,
    );
    Ok(Takeover::Adopt {
        id,
        newly_claimed,
        matched_by,
        diff,
    })
}

fn looked_up_by(m: ScimMatch) -> &'static str {
    match m {
        ScimMatch::ExternalIdThenUserName => "externalId or userName",
        ScimMatch::UserName => "userName",
        ScimMatch::ExternalId => "externalId",
        ScimMatch::Emails => "emails",
    }
}

/// Find the user by the matching attribute; adopt it if the rule allows (see
/// `resolve`), writing only what differs, else POST it; a userName held by another
/// learner fails this one.
async fn create_or_adopt(
    ctx: &Ctx,
    ext: &str,
    f: &LearnerFields,
    active: bool,
    manager: Option<&str>,
) -> Result<String, ScimError> {
    let me: Owner = (ctx.directory.to_string(), ext.to_string());
    match plan_takeover(ctx, ext, f, active, manager, true).await? {
        Takeover::Adopt {
            id,
            newly_claimed,
            matched_by,
            diff,
        } => {
            let linked = adopt(
                ctx,
                &me,
                id,
                newly_claimed,
                matched_by,
                diff,
                f,
                active,
                manager,
            )
            .await?;
            ctx.adopters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(ext.to_string());
            return Ok(linked);
        }
        Takeover::Refuse(detail) => return Err(ScimError::Refused { detail }),
        Takeover::Create { .. } => {}
    }
    let entra = ctx.protocol.dialect != ScimDialect::Rfc;
    // Entra's create carries no manager: it is set by a second request.
    let body = user_resource(
        &ctx.protocol.external_id_of(ext, f),
        f,
        active,
        ctx.features.enterprise,
        if entra { None } else { manager },
        ctx.protocol.dialect,
    );
    match ctx
        .client
        .send(Method::POST, "Users", &[], Some(&body))
        .await
    {
        Ok(Some(created)) => {
            let id = created
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ScimError::Malformed {
                    path: "/Users".to_string(),
                    detail: "the created resource has no id".to_string(),
                })?;
            if let Err(owner) = ctx.claims.claim(&id, &me) {
                return Err(ScimError::Refused {
                    detail: format!(
                        "the provider answered the create with SCIM id {id}, which is linked to learner {}",
                        describe(&owner, &me.0)
                    ),
                });
            }
            if let (true, Some(m), true) = (entra, manager, ctx.features.enterprise) {
                // If this fails the user is not linked: the next run finds it by the
                // matching attribute, adopts it and sets only the manager.
                let patch = manager_patch(m, ctx.protocol.dialect);
                if let Err(e) = ctx.client.send_user(Method::PATCH, &id, Some(&patch)).await {
                    ctx.claims.release(&id, &me);
                    return Err(e);
                }
            }
            Ok(id)
        }
        Ok(None) => Err(ScimError::Malformed {
            path: "/Users".to_string(),
            detail: "the provider returned no resource for a create".to_string(),
        }),
        Err(e) if e.status() == Some(409) => {
            // Someone holds the userName or externalId (maybe a create of this same
            // run, or a user the lookup did not see yet): the same rule decides.
            match plan_takeover(ctx, ext, f, active, manager, false).await? {
                Takeover::Adopt {
                    id,
                    newly_claimed,
                    matched_by,
                    diff,
                } => {
                    adopt(
                        ctx,
                        &me,
                        id,
                        newly_claimed,
                        matched_by,
                        diff,
                        f,
                        active,
                        manager,
                    )
                    .await
                }
                Takeover::Refuse(detail) => Err(ScimError::Refused { detail }),
                Takeover::Create { .. } => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// List every user of the provider (`externalId`, `userName`, `active`), unless that
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
                    ("attributes", "externalId,userName,active"),
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
            let Some(found) = Found::from_resource(user) else {
                continue;
            };
            if let Some(ext) = &found.external_id {
                index.by_external_id.insert(ext.clone(), found.clone());
            }
            if let Some(name) = user.get("userName").and_then(Value::as_str) {
                index.by_user_name.insert(name.to_lowercase(), found);
            }
        }
        if resources.is_empty() || seen >= total {
            return Ok(Some(index));
        }
    }
}

/// Look a learner up by `filter=<matching attribute> eq "..."` (the `rfc` default:
/// `externalId`, then `userName`). Only a user that really matches counts: a provider
/// that ignores or misreads a filter must not hand us somebody else.
async fn lookup(ctx: &Ctx, ext: &str, f: &LearnerFields) -> Result<Candidates, ScimError> {
    #[derive(Clone, Copy, PartialEq)]
    enum By {
        ExternalId,
        UserName,
        Email,
    }
    let mut found = Candidates::default();
    let written = ctx.protocol.external_id_of(ext, f);
    let wanted_name = f.user_name.to_lowercase();
    let steps: &[By] = match ctx.protocol.match_by {
        ScimMatch::ExternalIdThenUserName => &[By::ExternalId, By::UserName],
        ScimMatch::UserName => &[By::UserName],
        ScimMatch::ExternalId => &[By::ExternalId],
        ScimMatch::Emails => &[By::Email],
    };
    for &by in steps {
        let filter = match by {
            By::ExternalId => filter_eq("externalId", &written),
            By::UserName => filter_eq("userName", &f.user_name),
            By::Email => match &f.email {
                Some(email) => filter_eq("emails.value", email),
                // Nothing to match by: a create.
                None => continue,
            },
        };
        let page = match ctx
            .client
            .get("Users", &[("filter", filter.as_str()), ("startIndex", "1")])
            .await
        {
            Ok(page) => page,
            // A provider that cannot filter on this attribute (`invalidFilter`): try the next.
            Err(e) if e.status() == Some(400) => continue,
            Err(e) => return Err(e),
        };
        let resources = page
            .get("Resources")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let hit = resources
            .iter()
            .filter(|u| match by {
                By::ExternalId => {
                    u.get("externalId").and_then(Value::as_str) == Some(written.as_str())
                }
                By::UserName => u
                    .get("userName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.to_lowercase() == wanted_name),
                By::Email => u
                    .get("emails")
                    .and_then(Value::as_array)
                    .is_some_and(|emails| {
                        emails.iter().any(|e| {
                            let v = e.get("value").and_then(Value::as_str);
                            match (v, &f.email) {
                                (Some(v), Some(want)) => v.eq_ignore_ascii_case(want),
                                _ => false,
                            }
                        })
                    }),
            })
            .find_map(|u| {
                Found::from_resource(u).map(|found| Found {
                    resource: Some(u.clone()),
                    ..found
                })
            });
        if by == By::ExternalId {
            if hit.is_some() {
                found.by_external_id = hit;
                return Ok(found);
            }
        } else {
            found.by_user_name = hit;
        }
    }
    Ok(found)
}

/// Take over a claimed resource: write only what differs from the learner (nothing
/// when all matches); a failed write gives the claim back.
#[allow(clippy::too_many_arguments)]
async fn adopt(
    ctx: &Ctx,
    me: &Owner,
    id: String,
    newly_claimed: bool,
    matched_by: &str,
    diff: Differences,
    f: &LearnerFields,
    active: bool,
    manager: Option<&str>,
) -> Result<String, ScimError> {
    let changed: Vec<&str> = diff.shown.iter().map(|(a, _, _)| a.as_str()).collect();
    tracing::info!(
        external_id = me.1,
        scim_id = id,
        matched_by,
        changes = changed.join(", "),
        "adopting an existing SCIM user"
    );
    if diff.is_empty() {
        return Ok(id);
    }
    let sent = if ctx.features.patch {
        match patch_body(
            f,
            &diff.fields,
            diff.active,
            ctx.features.enterprise,
            manager,
            ctx.protocol.dialect,
            diff.external_id.as_deref(),
        ) {
            Some(body) => ctx.client.send_user(Method::PATCH, &id, Some(&body)).await,
            None => Ok(None),
        }
    } else {
        let mut body = user_resource(
            &ctx.protocol.external_id_of(&me.1, f),
            f,
            active,
            ctx.features.enterprise,
            manager,
            ctx.protocol.dialect,
        );
        body["id"] = json!(id);
        ctx.client.send_user(Method::PUT, &id, Some(&body)).await
    };
    match sent {
        Ok(_) => Ok(id),
        Err(e) => {
            if newly_claimed {
                ctx.claims.release(&id, me);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::claims::tests::me;
    use super::super::resource::tests::fields;
    use super::*;
    use crate::config::Secret;
    use std::time::Duration;

    /// A SCIM provider over HTTP on 127.0.0.1: userName unique (case-insensitive),
    /// optionally ignoring filters or not finding a user until a create conflicts.
    mod provider {
        use std::sync::{Arc, Mutex};

        use axum::extract::{Query, State};
        use axum::http::{Method, StatusCode, Uri};
        use axum::response::IntoResponse;
        use serde_json::{json, Value};

        #[derive(Default)]
        pub struct Provider {
            pub users: Vec<Value>,
            pub ignore_filters: bool,
            pub hidden_until_conflict: bool,
            pub log: Vec<String>,
            pub next: u32,
        }

        pub type Shared = Arc<Mutex<Provider>>;

        pub async fn start(provider: Provider) -> (String, Shared) {
            let shared: Shared = Arc::new(Mutex::new(provider));
            let app = axum::Router::new()
                .fallback(handle)
                .with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}/v2", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            (base, shared)
        }

        fn same(u: &Value, attr: &str, value: &str) -> bool {
            match (attr, u[attr].as_str()) {
                ("userName", Some(n)) => n.eq_ignore_ascii_case(value),
                (_, v) => v == Some(value),
            }
        }

        async fn handle(
            State(shared): State<Shared>,
            method: Method,
            uri: Uri,
            Query(query): Query<std::collections::HashMap<String, String>>,
            body: String,
        ) -> impl IntoResponse {
            let mut p = shared.lock().unwrap();
            let path = uri.path().trim_start_matches("/v2").to_string();
            p.log.push(format!("{method} {path}"));
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            match (method.as_str(), path.as_str()) {
                ("GET", "/Users") => {
                    let filter = query.get("filter").cloned().unwrap_or_default();
                    let (attr, rest) = filter.split_once(" eq ").unwrap_or_default();
                    let value = rest.trim_matches('"');
                    let found: Vec<Value> = if p.hidden_until_conflict {
                        vec![]
                    } else {
                        p.users
                            .iter()
                            .filter(|u| p.ignore_filters || same(u, attr, value))
                            .cloned()
                            .collect()
                    };
                    let n = found.len();
                    (
                        StatusCode::OK,
                        axum::Json(json!({"totalResults": n, "Resources": found})),
                    )
                }
                ("POST", "/Users") => {
                    let name = body["userName"].as_str().unwrap_or_default();
                    if p.users.iter().any(|u| same(u, "userName", name)) {
                        p.hidden_until_conflict = false;
                        return (
                            StatusCode::CONFLICT,
                            axum::Json(json!({"status": "409", "scimType": "uniqueness",
                                "detail": "userName taken"})),
                        );
                    }
                    p.next += 1;
                    let mut user = body.clone();
                    user["id"] = json!(format!("new{}", p.next));
                    p.users.push(user.clone());
                    (StatusCode::CREATED, axum::Json(user))
                }
                ("GET", "/ServiceProviderConfig") => (
                    StatusCode::OK,
                    axum::Json(json!({"patch": {"supported": true}})),
                ),
                ("PATCH", _) => {
                    let id = path.trim_start_matches("/Users/");
                    let ops = body["Operations"].as_array().cloned().unwrap_or_default();
                    let name_taken = |p: &Provider, name: &str| {
                        p.users
                            .iter()
                            .any(|u| u["id"] != id && same(u, "userName", name))
                    };
                    for op in &ops {
                        if op["path"] == "userName"
                            && name_taken(&p, op["value"].as_str().unwrap_or_default())
                        {
                            return (
                                StatusCode::CONFLICT,
                                axum::Json(json!({"status": "409", "scimType": "uniqueness"})),
                            );
                        }
                    }
                    let Some(user) = p.users.iter_mut().find(|u| u["id"] == id) else {
                        return (StatusCode::NOT_FOUND, axum::Json(json!({"status": "404"})));
                    };
                    for op in ops {
                        let path = op["path"].as_str().unwrap_or_default();
                        user[path] = op["value"].clone();
                    }
                    (StatusCode::OK, axum::Json(user.clone()))
                }
                ("PUT", _) => {
                    let id = path.trim_start_matches("/Users/");
                    for u in p.users.iter_mut().filter(|u| u["id"] == id) {
                        *u = body.clone();
                    }
                    (StatusCode::OK, axum::Json(body))
                }
                _ => (StatusCode::NOT_FOUND, axum::Json(json!({"status": "404"}))),
            }
        }
    }

    fn ctx(base: &str, owners: HashMap<String, Owner>) -> Ctx {
        Ctx {
            client: ScimClient::new(
                reqwest::Url::parse(base).unwrap(),
                Secret::new("token".into()),
                Duration::from_secs(10),
            )
            .unwrap(),
            features: Features {
                enterprise: false,
                patch: true,
            },
            deactivate: ScimDeactivate::Patch,
            protocol: Protocol::default(),
            index: None,
            directory: Arc::from("hr"),
            // E1 and E2 are learners of these tests' directory.
            claims: Arc::new(Claims::new(owners).with_learners(["E1", "E2"])),
            adopted: Arc::default(),
            adopters: Arc::default(),
        }
    }

    fn learner(user_name: &str) -> LearnerFields {
        LearnerFields {
            user_name: user_name.into(),
            ..fields()
        }
    }

    #[tokio::test]
    async fn a_409_for_a_user_name_of_another_learners_user_is_refused_without_writing_to_it() {
        let e1 = json!({"id": "r1", "externalId": "E1", "userName": "dup@x.io",
            "name": {"givenName": "Ann"}, "active": true});
        let (base, provider) = provider::start(provider::Provider {
            users: vec![e1.clone()],
            // The lookup does not see E1 yet: the create conflicts, the second lookup does.
            hidden_until_conflict: true,
            ..Default::default()
        })
        .await;
        let ctx = ctx(&base, HashMap::new());
        let err = create_or_adopt(&ctx, "E2", &learner("dup@x.io"), true, None)
            .await
            .unwrap_err();
        assert!(err.is_per_user());
        assert!(
            err.detail()
                .starts_with("userName dup@x.io belongs to the SCIM user of E1;"),
            "{err}"
        );
        let p = provider.lock().unwrap();
        assert!(p.log.contains(&"POST /Users".to_string()), "{:?}", p.log);
        assert!(!p.log.iter().any(|l| l.starts_with("PUT")), "{:?}", p.log);
        assert_eq!(p.users, vec![e1]);
        assert!(ctx.claims.lock().is_empty());
    }

    #[tokio::test]
    async fn a_platform_user_is_adopted_by_one_learner_and_refused_to_the_next() {
        let (base, provider) = provider::start(provider::Provider {
            users: vec![json!({"id": "r0", "userName": "Pre@x.io"})],
            ..Default::default()
        })
        .await;
        let ctx = ctx(&base, HashMap::new());
        let id = create_or_adopt(&ctx, "E1", &learner("pre@x.io"), true, None)
            .await
            .unwrap();
        assert_eq!(id, "r0");
        assert_eq!(provider.lock().unwrap().users[0]["externalId"], "E1");
        let err = create_or_adopt(&ctx, "E2", &learner("pre@x.io"), true, None)
            .await
            .unwrap_err();
        assert!(
            err.detail().contains("belongs to the SCIM user of E1"),
            "{err}"
        );
        // Adopting writes only what differs (here: the externalId), by PATCH.
        let puts = |p: &provider::Provider| {
            p.log
                .iter()
                .filter(|l| l.starts_with("PUT") || l.starts_with("PATCH"))
                .count()
        };
        assert_eq!(puts(&provider.lock().unwrap()), 1);

        // A user without externalId that the mirror links to another learner: refused.
        let (base, provider) = provider::start(provider::Provider {
            users: vec![json!({"id": "r0", "userName": "pre@x.io"})],
            ..Default::default()
        })
        .await;
        let ctx = self::ctx(&base, HashMap::from([("r0".to_string(), me("E1"))]));
        let err = create_or_adopt(&ctx, "E2", &learner("pre@x.io"), true, None)
            .await
            .unwrap_err();
        assert!(
            err.detail().contains("belongs to the SCIM user of E1"),
            "{err}"
        );
        assert_eq!(puts(&provider.lock().unwrap()), 0);
    }

    #[tokio::test]
    async fn two_creates_for_one_user_name_at_once_give_one_user_and_one_refusal() {
        let (base, provider) = provider::start(provider::Provider::default()).await;
        let ctx = ctx(&base, HashMap::new());
        let (ann, bea) = (learner("dup@x.io"), learner("DUP@x.io"));
        let (a, b) = tokio::join!(
            create_or_adopt(&ctx, "E1", &ann, true, None),
            create_or_adopt(&ctx, "E2", &bea, true, None),
        );
        let (won, lost) = match (a, b) {
            (Ok(id), Err(e)) => (("E1", id), ("E2", e)),
            (Err(e), Ok(id)) => (("E2", id), ("E1", e)),
            other => panic!("not one of each: {other:?}"),
        };
        assert!(
            lost.1
                .detail()
                .contains(&format!("belongs to the SCIM user of {}", won.0)),
            "{}",
            lost.1
        );
        let p = provider.lock().unwrap();
        assert_eq!(p.users.len(), 1);
        assert_eq!(p.users[0]["id"], won.1.as_str());
        assert_eq!(p.users[0]["externalId"], won.0);
        assert!(!p.log.iter().any(|l| l.starts_with("PUT")), "{:?}", p.log);
    }

    #[tokio::test]
    async fn a_lookup_takes_only_users_that_really_match() {
        // A provider that ignores filters answers with everybody: nobody is ours.
        let (base, _provider) = provider::start(provider::Provider {
            users: vec![json!({"id": "v", "externalId": "V1", "userName": "victim@x.io"})],
            ignore_filters: true,
            ..Default::default()
        })
        .await;
        let found = lookup(&ctx(&base, HashMap::new()), "E2", &learner("e2@x.io"))
            .await
            .unwrap();
        assert_eq!(found.by_external_id, None);
        assert_eq!(found.by_user_name, None);
    }

    fn store(base: &str, state: &std::path::Path, concurrency: usize) -> ScimStore {
        ScimStore::open(
            &reqwest::Url::parse(base).unwrap(),
            Secret::new("token".into()),
            Duration::from_secs(10),
            concurrency,
            ScimDeactivate::Patch,
            &crate::store::scim::mirror::mirror_path(&state.join("state.db"), None),
            false,
        )
        .unwrap()
    }

    fn create(ext: &str, user_name: &str) -> Operation {
        Operation::Create {
            external_id: ext.into(),
            fields: learner(user_name),
        }
    }

    fn holders(p: &provider::Provider) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = p
            .users
            .iter()
            .map(|u| {
                (
                    u["externalId"].as_str().unwrap_or_default().to_string(),
                    u["userName"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_user_name_freed_earlier_in_the_run_goes_to_the_refused_create_in_that_run() {
        let (base, provider) = provider::start(provider::Provider::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(&base, dir.path(), 1);
        let report = store
            .apply("hr", "run1", &[create("E1", "ada@x.io")])
            .await
            .unwrap();
        assert_eq!(report.failed, vec![]);
        // The new hire's create comes first and is refused (E1 holds the name); then E1
        // is renamed, which frees it: the create is tried again and lands.
        let rename = Operation::Update {
            external_id: "E1".into(),
            fields: learner("ada.old@x.io"),
            changes: vec![crate::plan::FieldChange {
                field: "user_name".into(),
                before: Some("ada@x.io".into()),
                after: Some("ada.old@x.io".into()),
            }],
        };
        let report = store
            .apply("hr", "run2", &[create("E2", "ada@x.io"), rename])
            .await
            .unwrap();
        assert_eq!(report.failed, vec![]);
        let linked = |ext| store.mirror.get("hr", ext).unwrap().unwrap().scim_id;
        assert_ne!(linked("E1"), linked("E2"));
        assert_eq!(
            holders(&provider.lock().unwrap()),
            [
                ("E1".to_string(), "ada.old@x.io".to_string()),
                ("E2".to_string(), "ada@x.io".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn two_creates_for_one_user_name_in_one_batch_fail_one_learner_only() {
        for concurrency in [1, 4] {
            let (base, provider) = provider::start(provider::Provider::default()).await;
            let dir = tempfile::tempdir().unwrap();
            let mut store = store(&base, dir.path(), concurrency);
            let ops = [
                create("E1", "dup@x.io"),
                create("E2", "Dup@x.io"),
                create("E3", "cy@x.io"),
            ];
            let report = store.apply("hr", "run1", &ops).await.unwrap();
            assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
            let (lost, detail) = &report.failed[0];
            let won = if lost == "E1" { "E2" } else { "E1" };
            assert!(
                detail.contains(&format!("belongs to the SCIM user of {won}")),
                "{detail}"
            );
            assert!(store.mirror.get("hr", lost).unwrap().is_none());
            assert_eq!(store.mirror.count().unwrap(), 2);
            let p = provider.lock().unwrap();
            assert_eq!(p.users.len(), 2, "concurrency {concurrency}");
            assert!(!p.log.iter().any(|l| l.starts_with("PUT")), "{:?}", p.log);
        }
    }
}
