//! The `entra` source: users from Microsoft Graph through delta queries.
//!
//! A full read walks `/users/delta` with our `$select` and keeps the final deltaLink
//! as the cursor; later reads call only that link and merge the (possibly partial)
//! changes into the snapshot. An expired or reset delta token falls back to a fresh
//! round, read as complete. The manager's email comes from `manager@delta` (the
//! manager's id, tracked by the delta query itself) resolved against the users we
//! already hold, so it costs no extra request.

pub mod auth;
mod expiry;
pub mod graph;
mod groups;
mod one;
pub mod scope;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use self::auth::TokenProvider;
use self::graph::{Graph, GraphError, Page};
use crate::check::CheckLine;
use crate::config::{EntraConfig, EntraCredential, EntraScope};
use crate::model::{AccountState, DirectoryUser, Extra, LearnerFields};
use crate::source::{Change, Listing, PreviousUsers, ReadRequest, SourceError, SourceRead};

/// The properties a delta round selects: every mapped field, state, type and manager.
pub const SELECT: &str = "id,userPrincipalName,mail,givenName,surname,displayName,department,jobTitle,employeeId,accountEnabled,userType,manager";

/// Keys of `DirectoryUser::extra` this source keeps between runs. Only users who need
/// them carry them (an empty map allocates nothing, and the snapshot holds 100,000s).
/// `emailFromUpn`: the user has no `mail`, so the email follows the UPN.
const EMAIL_FROM_UPN: &str = "emailFromUpn";
/// The manager's object id (from `manager@delta`), resolved to `manager_email`.
const MANAGER_ID: &str = "managerId";

pub struct EntraSource {
    cfg: EntraConfig,
    graph: Graph,
    /// What the mappings and filters read, beyond the default properties.
    attributes: crate::mapping::Attributes,
}

impl EntraSource {
    pub fn new(cfg: &EntraConfig, request_timeout: Duration) -> Result<Self, SourceError> {
        let http = crate::http::client(request_timeout).map_err(SourceError::Other)?;
        let tokens = TokenProvider::new(http.clone(), cfg)
            .map_err(|e| SourceError::Other(format!("{e}; {}", e.hint())))?;
        Ok(EntraSource {
            cfg: cfg.clone(),
            graph: Graph::new(http, tokens, cfg.graph_url.clone()),
            attributes: Default::default(),
        })
    }

    /// Also select (and keep) the properties the directory's mappings and filters read.
    pub fn with_attributes(mut self, attributes: crate::mapping::Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Retried requests so far, over the life of this source.
    pub fn retries(&self) -> u64 {
        self.graph.retries()
    }

    pub async fn read(&mut self, req: ReadRequest<'_>) -> Result<SourceRead, SourceError> {
        let before = self.graph.requests();
        let started = std::time::Instant::now();
        // A cursor from another graph_url (the config changed since) is not called: its
        // origin would get this graph_url's token. A fresh round replaces it.
        let cursor = req.cursor.filter(|link| {
            let ours = reqwest::Url::parse(link)
                .is_ok_and(|url| crate::http::same_origin(&self.graph.base, &url));
            if !ours {
                tracing::warn!(
                    tenant = %self.cfg.tenant_id,
                    "the stored delta link is not on graph_url's server; reading everything again"
                );
            }
            ours
        });
        let (listing, delta_link) = match cursor {
            None => self.full_round().await?,
            Some(link) => match self.changes_since(link, req.snapshot).await {
                Ok(Some(read)) => read,
                Ok(None) => {
                    // A partial item for a user the snapshot lacks cannot be completed
                    // from the delta; a fresh round brings every user whole.
                    tracing::warn!(
                        tenant = %self.cfg.tenant_id,
                        "the delta names a user the snapshot lacks; reading everything again"
                    );
                    self.full_round().await?
                }
                Err(e) if e.needs_resync() => {
                    tracing::warn!(
                        tenant = %self.cfg.tenant_id,
                        error = %e,
                        "the delta token expired or was reset; reading everything again"
                    );
                    self.full_round().await?
                }
                Err(e) => return Err(users_error(e)),
            },
        };
        let scope = scope::resolve(&mut self.graph, &self.cfg.scope)
            .await
            .map_err(|e| SourceError::Other(e.to_string()))?;
        let requests = self.graph.requests() - before;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            requests,
            complete = matches!(listing, Listing::Complete(_)),
            "read Entra users"
        );
        Ok(SourceRead {
            listing,
            scope,
            next_cursor: Some(delta_link),
            requests,
        })
    }

    /// A fresh delta round: every user, returned as a complete listing.
    async fn full_round(&mut self) -> Result<(Listing, String), SourceError> {
        let select = self.attributes.entra_select(SELECT);
        let first = self.graph.url("users/delta", &[("$select", &select)]);
        let attributes = &self.attributes;
        let mut round = Round::default();
        let delta_link = walk(&mut self.graph, "users/delta", first.to_string(), |page| {
            for item in page {
                let id = item_id(&item)?;
                if item.contains_key("@removed") {
                    round.remove(&id);
                    continue;
                }
                round.upsert(id, &item, attributes).map_err(malformed)?;
            }
            Ok(())
        })
        .await
        .map_err(users_error)?;
        let mut users = round.into_sorted();
        users.iter().try_for_each(usable).map_err(users_error)?;
        resolve_managers_all(&mut users);
        Ok((Listing::Complete(users), delta_link))
    }

    /// What changed since `link`, each changed user merged with the snapshot; `None`
    /// when a merged user has no user name (a partial item for a user the snapshot
    /// lacks, or a cleared UPN), which only a fresh round can settle.
    async fn changes_since(
        &mut self,
        link: &str,
        snapshot: &dyn PreviousUsers,
    ) -> Result<Option<(Listing, String)>, GraphError> {
        let mut changed: BTreeMap<String, Option<DirectoryUser>> = BTreeMap::new();
        let attributes = &self.attributes;
        let delta_link = walk(&mut self.graph, "users/delta", link.to_string(), |page| {
            for item in page {
                let id = item_id(&item)?;
                if item.contains_key("@removed") {
                    changed.insert(id, None);
                    continue;
                }
                let mut user = match changed.get(&id) {
                    Some(Some(u)) => u.clone(),
                    Some(None) => blank(&id),
                    None => snapshot.get(&id).unwrap_or_else(|| blank(&id)),
                };
                apply(&mut user, &item).map_err(malformed)?;
                // A delta item carries only changed properties: the others keep theirs.
                attributes.capture(&item, true, &mut user.extra);
                changed.insert(id, Some(user));
            }
            Ok(())
        })
        .await?;
        // A partial item for a user we never had (or one whose UPN was cleared) would
        // make a learner without a user name.
        if changed.values().flatten().any(|u| usable(u).is_err()) {
            return Ok(None);
        }
        Ok(Some((
            Listing::Changes(resolve_managers_changes(snapshot, changed)),
            delta_link,
        )))
    }

    /// When the credential the token came from expires (a warning 30 days before).
    async fn credential_expiry(&mut self) -> CheckLine {
        let now = chrono::Utc::now();
        match &self.cfg.credential {
            EntraCredential::Certificate { cert_file, .. } => {
                match expiry::certificate_end(cert_file) {
                    Ok(end) => expiry::line(
                        &format!("certificate {}", cert_file.display()),
                        end,
                        now,
                        "upload a new certificate to the app registration (Certificates & secrets) and point cert_file and key_file at it before then",
                    ),
                    Err(e) => CheckLine::failed(e, "cert_file must be the PEM certificate uploaded to the app registration"),
                }
            }
            EntraCredential::Secret(secret) => {
                let Ok(secret) = secret.resolve() else {
                    return CheckLine::ok("client secret: expiry not checked (unreadable)");
                };
                match expiry::secret_end(&mut self.graph, &self.cfg.client_id, secret.expose()).await {
                    Ok(Some(end)) => expiry::line(
                        "client secret",
                        end,
                        now,
                        "add a new client secret to the app registration (Certificates & secrets), put it where client_secret points, then delete the old one",
                    ),
                    Ok(None) => CheckLine::ok(
                        "client secret: the app registration lists no secret with its first characters, so its expiry is unknown",
                    ),
                    Err(why) => CheckLine::ok(format!("client secret: expiry not shown: {why}")),
                }
            }
        }
    }

    /// The groups `selection` names, members flattened, unless the group delta from
    /// `cursor` says no group changed (see `groups`).
    pub async fn read_groups(
        &mut self,
        selection: &crate::groups::GroupSelection,
        cursor: Option<&str>,
    ) -> Result<crate::source::GroupRead, SourceError> {
        groups::read(&mut self.graph, &self.cfg.scope, selection, cursor).await
    }

    pub async fn check(&mut self) -> Vec<CheckLine> {
        let mut lines = Vec::new();
        let how = match self.cfg.credential {
            EntraCredential::Secret(_) => "client secret",
            EntraCredential::Certificate { .. } => "certificate",
        };
        if let Err(e) = self.graph.token().await {
            lines.push(CheckLine::failed(
                format!(
                    "cannot get a token for app {} ({how}): {e}",
                    self.cfg.client_id
                ),
                e.hint(),
            ));
            return lines;
        }
        lines.push(CheckLine::ok(format!(
            "got a token for app {} in tenant {} ({how})",
            self.cfg.client_id, self.cfg.tenant_id
        )));
        lines.push(self.credential_expiry().await);
        let url = self.graph.url(
            "users",
            &[("$select", "id,userPrincipalName"), ("$top", "1")],
        );
        match self.graph.page(url.as_str()).await {
            Ok(_) => lines.push(CheckLine::ok("read users (User.Read.All)")),
            Err(e) => {
                let hint = if e.status() == Some(403) {
                    "add the Microsoft Graph application permission User.Read.All to the app registration and grant admin consent".to_string()
                } else {
                    "check graph_url and the network path to Graph".to_string()
                };
                lines.push(CheckLine::failed(format!("cannot read users: {e}"), hint));
                return lines;
            }
        }
        if self.cfg.scope != EntraScope::All {
            let permission = match self.cfg.scope {
                EntraScope::App(_) => "Application.Read.All and GroupMember.Read.All",
                _ => "GroupMember.Read.All",
            };
            match scope::resolve(&mut self.graph, &self.cfg.scope).await {
                Ok(crate::source::Scope::Only(ids)) => lines.push(CheckLine::ok(format!(
                    "read the scope: {} users ({permission})",
                    ids.len()
                ))),
                Ok(crate::source::Scope::All) => {}
                Err(e) => {
                    let hint = match e.source.status() {
                        Some(403) => format!("add the Microsoft Graph application permission {permission} and grant admin consent"),
                        Some(404) => "check the object ids in `scope`".to_string(),
                        _ => "check graph_url and the network path to Graph".to_string(),
                    };
                    lines.push(CheckLine::failed(
                        format!("cannot read the scope: {e}"),
                        hint,
                    ));
                }
            }
        }
        lines
    }
}

/// Follow a delta round from `first` to its deltaLink, handing each page's items to
/// `on_page`. The next page is fetched while the current one is processed. A link seen
/// before, too many pages or items, a link to another origin or a malformed item (from
/// `on_page`) ends the round with an error.
pub(super) async fn walk(
    graph: &mut Graph,
    path: &'static str,
    first: String,
    mut on_page: impl FnMut(Vec<Map<String, Value>>) -> Result<(), GraphError>,
) -> Result<String, GraphError> {
    let mut bounds = graph::Bounds::new(path);
    let mut url = first;
    bounds.follow(&url)?;
    let mut pending = spawn_fetch(graph, url.clone()).await?;
    loop {
        let page = match pending.await {
            Ok(Err(GraphError::Status { status: 401, .. })) => {
                graph.invalidate_token();
                graph.page(&url).await?
            }
            Ok(page) => page?,
            Err(e) => {
                return Err(GraphError::Transport {
                    path: path.into(),
                    detail: format!("page fetch stopped: {e}"),
                })
            }
        };
        bounds.items(page.value.len())?;
        match (page.next_link, page.delta_link) {
            (Some(next), _) => {
                url = next;
                bounds.follow(&url)?;
                pending = spawn_fetch(graph, url.clone()).await?;
                if let Err(e) = on_page(page.value) {
                    pending.abort();
                    return Err(e);
                }
            }
            (None, Some(delta)) => {
                // The deltaLink becomes the stored cursor, called with a token next run.
                let checked = reqwest::Url::parse(&delta).map_err(|e| GraphError::Malformed {
                    path: path.into(),
                    detail: format!("bad @odata.deltaLink: {e}"),
                })?;
                if !crate::http::same_origin(&graph.base, &checked) {
                    return Err(GraphError::ForeignLink {
                        path: path.into(),
                        detail: graph::foreign(&graph.base, &checked),
                    });
                }
                on_page(page.value)?;
                return Ok(delta);
            }
            (None, None) => {
                return Err(GraphError::Malformed {
                    path: path.into(),
                    detail: "a page with neither @odata.nextLink nor @odata.deltaLink".into(),
                })
            }
        }
    }
}

async fn spawn_fetch(
    graph: &mut Graph,
    url: String,
) -> Result<tokio::task::JoinHandle<Result<Page, GraphError>>, GraphError> {
    let token = graph.token().await?;
    let fetcher = graph.fetcher(token);
    Ok(tokio::spawn(async move { fetcher.page(&url).await }))
}

/// Turn a failed users read into the directory's error, naming the permission it needs.
fn users_error(e: GraphError) -> SourceError {
    let hint = match e.status() {
        Some(403) => {
            "; grant the Microsoft Graph application permission User.Read.All and admin consent"
        }
        Some(401) => "; the token was refused: check the app registration and its credential",
        _ => "",
    };
    SourceError::Other(format!("{e}{hint}"))
}

/// A delta item's id. An item without a usable one is refused: skipped, its user
/// would read as deleted.
fn item_id(item: &Map<String, Value>) -> Result<String, GraphError> {
    match item.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => Ok(id.clone()),
        Some(Value::String(_)) => Err(malformed("an item with an empty `id`".into())),
        Some(other) => Err(malformed(format!(
            "an item whose `id` is {}, not a string",
            kind(other)
        ))),
        None => Err(malformed("an item without an `id`".into())),
    }
}

fn malformed(detail: String) -> GraphError {
    GraphError::Malformed {
        path: "users/delta".into(),
        detail,
    }
}

/// A user is written only with a user name, as a CSV row is.
fn usable(user: &DirectoryUser) -> Result<(), GraphError> {
    if user.fields.user_name.trim().is_empty() {
        return Err(malformed(format!(
            "user {} has no userPrincipalName",
            user.external_id
        )));
    }
    Ok(())
}

/// A JSON value's type, for messages (never the value, which may be personal data).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn blank(id: &str) -> DirectoryUser {
    DirectoryUser {
        external_id: id.to_string(),
        fields: LearnerFields::default(),
        state: AccountState::Enabled,
        guest: false,
        extra: Extra::default(),
    }
}

/// Merge one delta item into a user: a property present with a value sets it,
/// present as `null` clears it, absent leaves it as it was. A mapped property of the
/// wrong type (a number for a name, `"false"` for `accountEnabled`) is refused: read
/// as absent or as its default it would change the learner silently.
pub fn apply(user: &mut DirectoryUser, item: &Map<String, Value>) -> Result<(), String> {
    let id = user.external_id.clone();
    let wrong =
        |key: &str, v: &Value, want: &str| format!("user {id}: `{key}` is {}, not {want}", kind(v));
    let text = |key: &str, v: &Value| match v {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Null => Ok(None),
        other => Err(wrong(key, other, "a string")),
    };
    for (key, value) in item {
        let f = &mut user.fields;
        match key.as_str() {
            "userPrincipalName" => f.user_name = text(key, value)?.unwrap_or_default(),
            "givenName" => f.given_name = text(key, value)?,
            "surname" => f.family_name = text(key, value)?,
            "displayName" => f.display_name = text(key, value)?,
            "department" => f.department = text(key, value)?,
            "jobTitle" => f.job_title = text(key, value)?,
            "employeeId" => f.employee_id = text(key, value)?,
            "mail" => match text(key, value)?.filter(|m| !m.trim().is_empty()) {
                Some(mail) => {
                    f.email = Some(mail);
                    user.extra.remove(EMAIL_FROM_UPN);
                }
                None => {
                    f.email = None;
                }
            },
            "accountEnabled" => {
                user.state = match value {
                    Value::Bool(false) => AccountState::Disabled,
                    // Graph leaves it null for a few synced accounts: they can sign in.
                    Value::Bool(true) | Value::Null => AccountState::Enabled,
                    other => return Err(wrong(key, other, "a boolean")),
                }
            }
            "userType" => {
                user.guest = text(key, value)?.is_some_and(|t| t.eq_ignore_ascii_case("guest"));
            }
            "manager@delta" => {
                let links = match value {
                    Value::Array(links) => links.as_slice(),
                    Value::Null => &[],
                    other => return Err(wrong(key, other, "an array")),
                };
                // The current manager is the entry not marked removed; none left = no manager.
                let manager = links
                    .iter()
                    .filter(|l| l.get("@removed").is_none())
                    .find_map(|l| l.get("id").and_then(|v| v.as_str()))
                    .map(str::to_string);
                set_extra(&mut user.extra, MANAGER_ID, manager);
            }
            _ => {}
        }
    }
    // No mail (cleared, or never set): the email is the UPN, and follows it from now on.
    if user.fields.email.is_none() || user.extra.contains_key(EMAIL_FROM_UPN) {
        user.extra
            .insert(EMAIL_FROM_UPN.to_string(), "true".to_string());
        user.fields.email = Some(user.fields.user_name.clone()).filter(|u| !u.trim().is_empty());
    }
    Ok(())
}

fn set_extra(extra: &mut Extra, key: &str, value: Option<String>) {
    match value {
        Some(v) => {
            extra.insert(key.to_string(), v);
        }
        None => {
            extra.remove(key);
        }
    }
}

fn manager_email(
    user: &DirectoryUser,
    email_of: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    user.extra.get(MANAGER_ID).and_then(|id| email_of(id))
}

/// The users of a fresh delta round as they arrive, found by id. A flat list and an
/// index cost far less per user than a map of 100,000s of users ordered by id.
#[derive(Default)]
struct Round {
    /// `None`: removed later in the round.
    users: Vec<Option<DirectoryUser>>,
    index: std::collections::HashMap<String, usize>,
}

impl Round {
    /// A user's item; a duplicate later in the round updates what came earlier.
    /// The attributes the mappings and filters read are taken from it as from a
    /// partial item (a property it lacks keeps what the earlier item gave).
    fn upsert(
        &mut self,
        id: String,
        item: &Map<String, Value>,
        attributes: &crate::mapping::Attributes,
    ) -> Result<(), String> {
        let user = match self.index.get(&id) {
            Some(&at) => self.users[at].get_or_insert_with(|| blank(&id)),
            None => {
                self.index.insert(id.clone(), self.users.len());
                self.users.push(Some(blank(&id)));
                self.users
                    .last_mut()
                    .and_then(Option::as_mut)
                    .ok_or("no user")?
            }
        };
        apply(user, item)?;
        attributes.capture(item, true, &mut user.extra);
        Ok(())
    }

    fn remove(&mut self, id: &str) {
        if let Some(&at) = self.index.get(id) {
            self.users[at] = None;
        }
    }

    /// The users still in the round, by id.
    fn into_sorted(self) -> Vec<DirectoryUser> {
        drop(self.index);
        let mut users: Vec<DirectoryUser> = self.users.into_iter().flatten().collect();
        users.sort_unstable_by(|a, b| a.external_id.cmp(&b.external_id));
        users
    }
}

/// Fill `manager_email` of every user (sorted by id) from the manager's own email.
fn resolve_managers_all(users: &mut [DirectoryUser]) {
    let managers: Vec<Option<String>> = users
        .iter()
        .map(|user| {
            manager_email(user, |id| {
                users
                    .binary_search_by(|u| u.external_id.as_str().cmp(id))
                    .ok()
                    .and_then(|at| users[at].fields.email.clone())
            })
        })
        .collect();
    for (user, manager) in users.iter_mut().zip(managers) {
        user.fields.manager_email = manager;
    }
}

/// The changes to return: every changed user with its manager's email resolved, and
/// every unchanged user whose manager's email changed (or whose manager was removed).
fn resolve_managers_changes(
    snapshot: &dyn PreviousUsers,
    changed: BTreeMap<String, Option<DirectoryUser>>,
) -> Vec<Change> {
    // A changed (or removed) user may be someone's manager: one pass over the previous
    // users collects the emails managers need and who reports to whom. Nothing changed,
    // nothing to read.
    let mut emails: std::collections::HashMap<String, Option<String>> = Default::default();
    // (report, their manager's id, the manager email they have now)
    let mut reports: Vec<(String, String, Option<String>)> = Vec::new();
    if !changed.is_empty() {
        snapshot.for_each(&mut |u| {
            if changed.contains_key(&u.external_id) {
                return;
            }
            if let Some(manager) = u.extra.get(MANAGER_ID) {
                reports.push((
                    u.external_id.clone(),
                    manager.clone(),
                    u.fields.manager_email.clone(),
                ));
            }
            emails.insert(u.external_id, u.fields.email);
        });
    }
    let email_of = |id: &str| -> Option<String> {
        match changed.get(id) {
            Some(Some(u)) => u.fields.email.clone(),
            Some(None) => None,
            None => emails.get(id).cloned().flatten(),
        }
    };
    let mut out = Vec::new();
    for (id, user) in &changed {
        match user {
            Some(u) => {
                let mut u = u.clone();
                u.fields.manager_email = manager_email(&u, email_of);
                out.push(Change::Upsert(Box::new(u)));
            }
            None => out.push(Change::Removed {
                external_id: id.clone(),
            }),
        }
    }
    // Reports of a changed or removed manager need their manager_email refreshed.
    for (id, manager, before) in reports {
        let now = email_of(&manager);
        if now == before {
            continue;
        }
        if let Some(mut u) = snapshot.get(&id) {
            u.fields.manager_email = now;
            out.push(Change::Upsert(Box::new(u)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn absent_properties_stay_and_null_clears() {
        let mut u = blank("1");
        apply(
            &mut u,
            &obj(
                json!({"id":"1","userPrincipalName":"ada@x","mail":"ada@mail","department":"Ops","jobTitle":"Eng"}),
            ),
        ).unwrap();
        apply(
            &mut u,
            &obj(json!({"id":"1","department":null,"accountEnabled":false})),
        )
        .unwrap();
        assert_eq!(u.fields.job_title.as_deref(), Some("Eng"));
        assert_eq!(u.fields.department, None);
        assert_eq!(u.fields.email.as_deref(), Some("ada@mail"));
        assert_eq!(u.state, AccountState::Disabled);
        apply(&mut u, &obj(json!({"id":"1","mail":null}))).unwrap();
        assert_eq!(
            u.fields.email.as_deref(),
            Some("ada@x"),
            "falls back to the UPN"
        );
        apply(
            &mut u,
            &obj(json!({"id":"1","userPrincipalName":"ada.l@x"})),
        )
        .unwrap();
        assert_eq!(
            u.fields.email.as_deref(),
            Some("ada.l@x"),
            "follows the UPN"
        );
        apply(&mut u, &obj(json!({"id":"1","mail":"ada@mail"}))).unwrap();
        apply(
            &mut u,
            &obj(json!({"id":"1","userPrincipalName":"ada.m@x"})),
        )
        .unwrap();
        assert_eq!(
            u.fields.email.as_deref(),
            Some("ada@mail"),
            "mail wins again"
        );
        assert!(u.extra.is_empty(), "a user with mail carries no extra");
    }

    #[test]
    fn a_managers_new_email_updates_their_reports() {
        let mut boss = blank("b");
        apply(&mut boss, &obj(json!({"userPrincipalName":"boss@x"}))).unwrap();
        let mut report = blank("r");
        apply(
            &mut report,
            &obj(json!({"userPrincipalName":"r@x","manager@delta":[{"id":"b"}]})),
        )
        .unwrap();
        report.fields.manager_email = Some("boss@x".into());
        let snapshot: crate::source::Snapshot =
            [("b".to_string(), boss.clone()), ("r".to_string(), report)]
                .into_iter()
                .collect();
        apply(&mut boss, &obj(json!({"mail":"chief@x"}))).unwrap();
        let changes = resolve_managers_changes(&snapshot, [("b".to_string(), Some(boss))].into());
        let emails: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(u) => Some((u.external_id.clone(), u.fields.manager_email.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            emails,
            vec![("b".into(), None), ("r".into(), Some("chief@x".into()))]
        );
    }
}
