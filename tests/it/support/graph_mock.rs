//! A stateful mock of the Microsoft identity platform token endpoint and the parts
//! of Microsoft Graph the `entra` source uses, on 127.0.0.1, behaving as
//! shared/docs/api-notes.md describes: `$skiptoken` paging, deltaLinks with
//! `$deltatoken`, `@removed` items, partial updates, duplicates, expired (400
//! `syncStateNotFound`) and reset (410 + `Location`) tokens, 429 + `Retry-After`,
//! transitive group members, app role assignments, `invalid_client`, 403.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::mock_server::MockServer;

/// How the mock breaks one page of a delta walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A 200 whose body is cut-off JSON.
    Malformed,
    /// The connection drops halfway through the body.
    Drop,
}

/// The certificate the mock trusts for client assertions.
pub struct TrustedCert {
    pub public_key_pem: String,
    /// base64url SHA-256 of the certificate DER.
    pub thumbprint: String,
}

pub struct MockState {
    pub tenant: String,
    pub client_id: String,
    pub secret: String,
    pub cert: Option<TrustedCert>,
    /// The tenant's users now: full objects (Graph property names), by id.
    pub users: BTreeMap<String, Value>,
    /// Manager id per user id (served as `manager@delta`).
    pub managers: BTreeMap<String, String>,
    /// Soft-deleted users, restorable.
    pub deleted: BTreeMap<String, Value>,
    /// Every change, in order; a deltatoken is an index into it.
    pub changes: Vec<Value>,
    /// Items appended to a fresh round (duplicates, `@removed` in the first round).
    pub first_round_extra: Vec<Value>,
    pub page_size: usize,
    /// The next deltaLink call answers 400 syncStateNotFound (token expired).
    pub expire_next: bool,
    /// The next deltaLink call answers 410 Gone.
    pub reset_next: bool,
    /// The next N Graph GETs answer 429 with `Retry-After: {retry_after}`.
    pub throttle_next: u32,
    pub retry_after: String,
    /// The status of those answers: 429, or 503/504 (which may carry `Retry-After` too).
    pub throttle_status: u16,
    /// The next N token requests answer `throttle_status` with `Retry-After: {retry_after}`
    /// and the OAuth error `temporarily_unavailable` (RFC 6749 5.2).
    pub throttle_token_next: u32,
    /// The token `scope` the login expects (the national cloud's Graph root).
    pub expected_scope: String,
    /// Break page N (0 = the first page) of every delta walk.
    pub fault: Option<(usize, Fault)>,
    /// `passwordCredentials` of the app registration (`GET /applications(appId='...')`);
    /// `None`: the app may not read it (403, no Application.Read.All).
    pub app_secrets: Option<Vec<Value>>,
    /// Path prefixes (after /v1.0) answering 403 Authorization_RequestDenied.
    pub forbidden: Vec<String>,
    /// Group id -> its direct user members (`transitiveMembers` adds the nested groups').
    pub groups: BTreeMap<String, Vec<String>>,
    /// Group id -> (displayName, mail), for `GET /groups` and `/groups/{id}`.
    pub group_names: BTreeMap<String, (String, Option<String>)>,
    /// Group id -> the groups nested in it (direct members that are groups).
    pub group_children: BTreeMap<String, Vec<String>>,
    /// `/groups/delta` answers 400 (a tenant or proxy without it).
    pub no_group_delta: bool,
    /// `/groups/delta` requests answered.
    pub group_delta_rounds: usize,
    /// Service principal id -> (principalId, principalType).
    pub app_assignments: BTreeMap<String, Vec<(String, String)>>,
    /// Added to every Graph response.
    pub latency: Duration,
    /// `METHOD path?query` of every request, percent-decoded, in order.
    pub log: Vec<String>,
    /// When each request of `log` arrived.
    pub arrived: Vec<std::time::Instant>,
    pub tokens_issued: u32,
    /// `expires_in` of issued tokens, in seconds.
    pub token_lifetime: u64,
    /// Graph answers 401 to tokens numbered up to this (revoked or expired early).
    pub revoked_up_to: u32,
    pub base: String,
    /// Hostile links: the origin (`scheme://host:port`) put in delta nextLinks, in
    /// deltaLinks, and in the nextLinks of plain collections (group members, app
    /// assignments) instead of `base`.
    pub delta_next_base: Option<String>,
    pub delta_link_base: Option<String>,
    pub paged_next_base: Option<String>,
    /// Every delta nextLink points at the second page again, for ever.
    pub repeat_next_link: bool,
    /// The same for plain collections (group members, app assignments).
    pub repeat_paged_next_link: bool,
    /// A delta round never ends: past its users come pages of `endless` with fresh
    /// links for ever.
    pub endless: Option<Endless>,
    /// Delta items sent as they are after the tenant's users in a fresh round, before
    /// any `first_round_extra` (malformed items: no projection applied).
    pub raw_items: Vec<Value>,
    /// Echo secrets back: the token endpoint refuses with the request form (client
    /// secret or assertion) in its error, in the way of `echo_token`.
    pub echo_token: Option<Echo>,
    /// Graph answers with the request's `Authorization` header in its error.
    pub echo_graph: Option<Echo>,
    /// Every client assertion the token endpoint received.
    pub assertions: Vec<String>,
    /// The `Host` header of every request of `log`.
    pub hosts: Vec<String>,
    /// The last page of a delta round carries no deltaLink (nor a nextLink).
    pub no_delta_link: bool,
    /// Every `users/delta` page answers `307 Temporary Redirect` to
    /// `users/microsoft.graph.delta` with the same query on this origin.
    pub redirect_delta_to: Option<String>,
}

/// What a never-ending delta round sends past the tenant's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endless {
    /// Empty pages.
    Empty,
    /// Pages of new users, never seen before.
    NewUsers,
}

/// How an echoing remote shows the secret it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// 400 with an OAuth / Graph JSON error whose description quotes the request.
    JsonError,
    /// 503 (retried, then given up) with a text/plain body quoting the request.
    PlainText,
    /// 502 with an HTML page whose title quotes the request.
    HtmlTitle,
}

pub struct GraphMock {
    pub addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
    server: MockServer,
}

impl GraphMock {
    pub fn start(secret: &str) -> GraphMock {
        let state = Arc::new(Mutex::new(MockState {
            tenant: "tenant-1".into(),
            client_id: "client-1".into(),
            secret: secret.into(),
            cert: None,
            app_secrets: None,
            users: BTreeMap::new(),
            managers: BTreeMap::new(),
            deleted: BTreeMap::new(),
            changes: Vec::new(),
            first_round_extra: Vec::new(),
            page_size: 2,
            expire_next: false,
            reset_next: false,
            throttle_next: 0,
            retry_after: "0.2".into(),
            throttle_status: 429,
            throttle_token_next: 0,
            expected_scope: "https://graph.microsoft.com/.default".into(),
            fault: None,
            forbidden: Vec::new(),
            groups: BTreeMap::new(),
            group_names: BTreeMap::new(),
            group_children: BTreeMap::new(),
            no_group_delta: false,
            group_delta_rounds: 0,
            app_assignments: BTreeMap::new(),
            latency: Duration::ZERO,
            log: Vec::new(),
            arrived: Vec::new(),
            tokens_issued: 0,
            token_lifetime: 3599,
            revoked_up_to: 0,
            // Set once the server has its port.
            base: String::new(),
            delta_next_base: None,
            delta_link_base: None,
            paged_next_base: None,
            repeat_next_link: false,
            repeat_paged_next_link: false,
            endless: None,
            raw_items: Vec::new(),
            echo_token: None,
            echo_graph: None,
            assertions: Vec::new(),
            hosts: Vec::new(),
            no_delta_link: false,
            redirect_delta_to: None,
        }));
        let shared = state.clone();
        let server = MockServer::start(axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { handle(state, method, uri, headers, body).await }
            },
        ));
        state.lock().expect("mock state").base = server.base();
        GraphMock {
            addr: server.addr,
            state,
            server,
        }
    }

    pub fn base(&self) -> String {
        self.server.base()
    }

    pub fn state(&self) -> MutexGuard<'_, MockState> {
        self.state.lock().expect("mock state")
    }

    /// A new user (or a full re-send of one).
    pub fn add_user(&self, user: Value) {
        let mut s = self.state();
        let id = user["id"].as_str().expect("id").to_string();
        s.users.insert(id, user.clone());
        s.changes.push(user);
    }

    /// A partial update: only the given properties come in the next delta.
    pub fn update(&self, id: &str, props: Value) {
        let mut s = self.state();
        let user = s.users.get_mut(id).expect("known user");
        let mut item = Map::new();
        item.insert("id".into(), json!(id));
        for (k, v) in props.as_object().expect("object") {
            user[k] = v.clone();
            item.insert(k.clone(), v.clone());
        }
        s.changes.push(Value::Object(item));
    }

    pub fn set_manager(&self, id: &str, manager: &str) {
        let mut s = self.state();
        s.managers.insert(id.into(), manager.into());
        s.changes
            .push(json!({"id": id, "manager@delta": [{"@odata.type":"#microsoft.graph.user","id": manager}]}));
    }

    /// Soft-delete (`changed`) or permanently delete (`deleted`).
    pub fn remove(&self, id: &str, reason: &str) {
        let mut s = self.state();
        if let Some(u) = s.users.remove(id) {
            if reason == "changed" {
                s.deleted.insert(id.into(), u);
            }
        }
        s.changes
            .push(json!({"id": id, "@removed": {"reason": reason}}));
    }

    /// Restore a soft-deleted user: it comes back as a normal item.
    pub fn restore(&self, id: &str) {
        let mut s = self.state();
        let u = s.deleted.remove(id).expect("soft-deleted user");
        s.users.insert(id.into(), u.clone());
        let full = s.full_item(&u);
        s.changes.push(full);
    }

    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        let mut s = self.state();
        s.log.clear();
        s.arrived.clear();
    }
}

/// A Graph user object with the mapped properties.
pub fn user(id: &str, upn: &str, given: &str, family: &str) -> Value {
    json!({
        "id": id,
        "userPrincipalName": upn,
        "mail": upn,
        "givenName": given,
        "surname": family,
        "displayName": format!("{given} {family}"),
        "department": "Sales",
        "jobTitle": "Rep",
        "employeeId": null,
        "accountEnabled": true,
        "userType": "Member",
    })
}

impl MockState {
    fn full_item(&self, user: &Value) -> Value {
        let mut u = user.clone();
        let id = u["id"].as_str().unwrap_or_default().to_string();
        if let Some(m) = self.managers.get(&id) {
            u["manager@delta"] = json!([{"@odata.type":"#microsoft.graph.user","id": m}]);
        }
        u
    }

    /// One user as `GET /users/{id}` returns it: only the `$select`ed properties, and
    /// the manager only through `$expand=manager($select=...)` (absent without one).
    /// `manager` is a delta-only property in `$select`: refused, as Graph refuses it.
    #[allow(clippy::result_large_err)]
    fn one_user(&self, user: &Value, q: &BTreeMap<String, String>) -> Result<Value, Response> {
        let select = q.get("$select").cloned().unwrap_or_default();
        let wanted: BTreeSet<&str> = select.split(',').filter(|p| !p.is_empty()).collect();
        if wanted.contains("manager") {
            return Err(MockState::graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "Parsing OData Select and Expand failed: Could not find a property named 'manager' on type 'microsoft.graph.user'.",
            ));
        }
        let obj = user.as_object().cloned().unwrap_or_default();
        let mut out: Map<String, Value> = obj
            .into_iter()
            .filter(|(k, _)| k == "id" || wanted.is_empty() || wanted.contains(k.as_str()))
            .collect();
        let id = user["id"].as_str().unwrap_or_default();
        let expand = q.get("$expand").map(String::as_str).unwrap_or_default();
        if expand.starts_with("manager") {
            if let Some(m) = self.managers.get(id).and_then(|m| self.users.get(m)) {
                out.insert(
                    "manager".into(),
                    json!({
                        "@odata.type": "#microsoft.graph.user",
                        "id": m["id"], "mail": m["mail"], "userPrincipalName": m["userPrincipalName"],
                    }),
                );
            }
        }
        Ok(Value::Object(out))
    }

    /// The users of a group, nested groups' included, each once.
    fn transitive_users(&self, id: &str) -> Vec<String> {
        let mut seen_groups = std::collections::BTreeSet::new();
        let mut users = Vec::new();
        let mut todo = vec![id.to_string()];
        while let Some(g) = todo.pop() {
            if !seen_groups.insert(g.clone()) {
                continue;
            }
            for u in self.groups.get(&g).into_iter().flatten() {
                if !users.contains(u) {
                    users.push(u.clone());
                }
            }
            todo.extend(self.group_children.get(&g).cloned().unwrap_or_default());
        }
        users
    }

    /// Changes with any group's name, mail, members or nesting.
    fn groups_digest(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.groups, &self.group_names, &self.group_children).hash(&mut h);
        format!("g{:x}", h.finish())
    }

    /// A group with a display name and its direct user members.
    pub fn add_group(&mut self, id: &str, name: &str, members: &[&str]) {
        self.groups.insert(
            id.to_string(),
            members.iter().map(|m| m.to_string()).collect(),
        );
        self.group_names.insert(
            id.to_string(),
            (
                name.to_string(),
                Some(format!("{}@contoso.example", name.to_lowercase())),
            ),
        );
    }

    fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
        (
            status,
            [("content-type", "application/json")],
            json!({"error":{"code":code,"message":message,"innerError":{"request-id":"00000000-0000-0000-0000-000000000000","date":"2026-01-01T00:00:00"}}}).to_string(),
        )
            .into_response()
    }
}

fn query_pairs(uri: &Uri) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    state: Arc<Mutex<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (response, latency) = {
        let mut s = state.lock().expect("mock state");
        let q = query_pairs(&uri);
        let shown_query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let shown = if shown_query.is_empty() {
            format!("{method} {}", uri.path())
        } else {
            format!("{method} {}?{}", uri.path(), shown_query.join("&"))
        };
        s.log.push(shown);
        s.arrived.push(std::time::Instant::now());
        let host = headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        s.hosts.push(host);
        if method == Method::POST && uri.path().ends_with("/oauth2/v2.0/token") {
            (token(&mut s, &uri, &body), Duration::ZERO)
        } else {
            (graph(&mut s, &uri, &headers, &q), s.latency)
        }
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

fn token(s: &mut MockState, uri: &Uri, body: &[u8]) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let refuse = |code: &str, description: &str| {
        (
            StatusCode::UNAUTHORIZED,
            [("content-type", "application/json")],
            json!({"error": code, "error_description": format!("{description}\r\nTrace ID: 0\r\nCorrelation ID: 0"), "error_codes":[7000215]}).to_string(),
        )
            .into_response()
    };
    if let Some(a) = form.get("client_assertion") {
        s.assertions.push(a.clone());
    }
    if let Some(echo) = s.echo_token {
        let quoted = String::from_utf8_lossy(body).into_owned();
        let credential = form
            .get("client_secret")
            .or_else(|| form.get("client_assertion"))
            .cloned()
            .unwrap_or_default();
        let text = format!("rejected {credential} in {quoted}");
        return echo_response(echo, "invalid_request", &text, true);
    }
    if s.throttle_token_next > 0 {
        s.throttle_token_next -= 1;
        return (
            StatusCode::from_u16(s.throttle_status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            [
                ("content-type", "application/json"),
                ("retry-after", s.retry_after.as_str()),
            ],
            json!({"error": "temporarily_unavailable", "error_description": "AADSTS50196: The server is busy.\r\nTrace ID: 0"}).to_string(),
        )
            .into_response();
    }
    if uri.path() != format!("/{}/oauth2/v2.0/token", s.tenant) {
        return refuse("invalid_request", "AADSTS90002: Tenant not found.");
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("scope") != Some(&s.expected_scope)
    {
        return refuse("invalid_request", "AADSTS900144: bad grant_type or scope");
    }
    if form.get("client_id") != Some(&s.client_id) {
        return refuse(
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    let ok = if let Some(secret) = form.get("client_secret") {
        *secret == s.secret
    } else if let Some(assertion) = form.get("client_assertion") {
        form.get("client_assertion_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && verify_assertion(s, assertion, &format!("{}{}", s.base, uri.path()))
    } else {
        false
    };
    if !ok {
        return refuse(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    s.tokens_issued += 1;
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        json!({"token_type":"Bearer","expires_in":s.token_lifetime,"ext_expires_in":s.token_lifetime,"access_token": format!("mock-token-{}", s.tokens_issued)}).to_string(),
    )
        .into_response()
}

/// A PS256 assertion signed by the trusted key, `x5t#S256` of the trusted certificate,
/// and the claims Entra checks.
fn verify_assertion(s: &MockState, assertion: &str, token_url: &str) -> bool {
    let Some(cert) = &s.cert else { return false };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return false;
    };
    if header.alg != jsonwebtoken::Algorithm::PS256
        || header.x5t_s256.as_deref() != Some(cert.thumbprint.as_str())
    {
        return false;
    }
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(cert.public_key_pem.as_bytes()) else {
        return false;
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::PS256);
    v.set_audience(&[token_url]);
    v.set_issuer(&[s.client_id.as_str()]);
    v.sub = Some(s.client_id.clone());
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    v.validate_nbf = true;
    match jsonwebtoken::decode::<Value>(assertion, &key, &v) {
        Ok(data) => {
            data.claims
                .get("jti")
                .and_then(|j| j.as_str())
                .is_some_and(|j| !j.is_empty())
                && data.claims.get("iat").is_some()
        }
        Err(_) => false,
    }
}

fn graph(
    s: &mut MockState,
    uri: &Uri,
    headers: &HeaderMap,
    q: &BTreeMap<String, String>,
) -> Response {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer mock-token-"))
        .is_some_and(|n| n.parse::<u32>().map_or(true, |n| n > s.revoked_up_to));
    if let Some(echo) = s.echo_graph {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = auth.strip_prefix("Bearer ").unwrap_or_default();
        let text = format!("request rejected: Authorization: {auth} (token {token})");
        return echo_response(echo, "BadRequest", &text, false);
    }
    if !authorized {
        return MockState::graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        );
    }
    if s.throttle_next > 0 {
        s.throttle_next -= 1;
        let status =
            StatusCode::from_u16(s.throttle_status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        let mut r = MockState::graph_error(status, "TooManyRequests", "Too many requests.");
        if let Ok(v) = s.retry_after.parse() {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    let Some(path) = uri.path().strip_prefix("/v1.0/") else {
        return MockState::graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "no such path",
        );
    };
    if s.forbidden.iter().any(|p| path.starts_with(p.as_str())) {
        return MockState::graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let segs: Vec<&str> = path.split('/').collect();
    match segs.as_slice() {
        // SDKs call the function by its qualified name, with or without parentheses.
        ["users", "delta" | "delta()" | "microsoft.graph.delta" | "microsoft.graph.delta()"] => {
            match (&s.redirect_delta_to, uri.query()) {
                (Some(origin), query) if segs[1] == "delta" => {
                    let to = format!(
                        "{origin}/v1.0/users/microsoft.graph.delta?{}",
                        query.unwrap_or_default()
                    );
                    (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response()
                }
                _ => delta(s, q),
            }
        }
        ["users"] => {
            if let Some(filter) = q.get("$filter") {
                // `mail eq '...'` is a default (non-advanced) filter on users; a quote
                // inside the literal is doubled, as OData writes it.
                let Some(mail) = filter
                    .strip_prefix("mail eq '")
                    .and_then(|v| v.strip_suffix('\''))
                    .map(|v| v.replace("''", "'"))
                else {
                    return MockState::graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        "Unsupported or invalid query filter clause specified.",
                    );
                };
                let value: Vec<Value> = s
                    .users
                    .values()
                    .filter(|u| {
                        u["mail"]
                            .as_str()
                            .is_some_and(|m| m.eq_ignore_ascii_case(&mail))
                    })
                    .filter_map(|u| s.one_user(u, q).ok())
                    .collect();
                return ok_json(json!({ "value": value }));
            }
            let top: usize = q.get("$top").and_then(|t| t.parse().ok()).unwrap_or(100);
            let value: Vec<Value> = s.users.values().take(top).cloned().collect();
            ok_json(json!({ "value": value }))
        }
        [app] if app.starts_with("applications(appId='") => match &s.app_secrets {
            Some(secrets) => ok_json(json!({
                "id": "app-object-id",
                "passwordCredentials": secrets,
            })),
            None => MockState::graph_error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            ),
        },
        // `GET /users/{id | userPrincipalName}`: the UPN compared without case.
        ["users", key] => {
            let found = s.users.get(*key).or_else(|| {
                s.users.values().find(|u| {
                    u["userPrincipalName"]
                        .as_str()
                        .is_some_and(|upn| upn.eq_ignore_ascii_case(key))
                })
            });
            match found {
                Some(u) => match s.one_user(u, q) {
                    Ok(v) => ok_json(v),
                    Err(r) => r,
                },
                None => MockState::graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    &format!("Resource '{key}' does not exist or one of its queried reference-property objects are not present."),
                ),
            }
        }
        ["groups", id, "transitiveMembers", "microsoft.graph.user"] => {
            if !s.groups.contains_key(*id) {
                return MockState::graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    "Resource does not exist.",
                );
            }
            let items = s
                .transitive_users(id)
                .into_iter()
                .map(|m| json!({"@odata.type":"#microsoft.graph.user","id": m}))
                .collect();
            paged(s, uri.path(), q, items)
        }
        // The group delta as a change detector: the token is a digest of every group's
        // name and members, so any change answers one changed group, none an empty round.
        ["groups", "delta"] => {
            if s.no_group_delta {
                return MockState::graph_error(
                    StatusCode::BAD_REQUEST,
                    "Request_UnsupportedQuery",
                    "Unsupported query.",
                );
            }
            let now = s.groups_digest();
            let value: Vec<Value> = match q.get("$deltatoken").map(String::as_str) {
                Some("latest") => vec![],
                Some(t) if t == now => vec![],
                _ => s
                    .group_names
                    .iter()
                    .map(|(id, (name, _))| json!({"id": id, "displayName": name}))
                    .collect(),
            };
            s.group_delta_rounds += 1;
            ok_json(json!({
                "value": value,
                "@odata.deltaLink": format!("{}/v1.0/groups/delta?$deltatoken={now}", s.base),
            }))
        }
        // `GET /groups/{id}?$select=id,displayName,mail`
        ["groups", id] => match s.group_names.get(*id) {
            Some((name, mail)) => ok_json(json!({"id": id, "displayName": name, "mail": mail})),
            None => MockState::graph_error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
            ),
        },
        // `GET /groups?$filter=displayName eq '...'` or `startswith(displayName,'...')`
        // (both without case, as Graph compares display names).
        ["groups"] => {
            let filter = q.get("$filter").cloned().unwrap_or_default();
            let unquote = |v: &str| v.trim_end_matches(')').trim_matches('\'').replace("''", "'");
            let pick: Box<dyn Fn(&str) -> bool> =
                if let Some(v) = filter.strip_prefix("displayName eq ") {
                    let v = unquote(v).to_lowercase();
                    Box::new(move |n: &str| n.to_lowercase() == v)
                } else if let Some(v) = filter.strip_prefix("startswith(displayName,") {
                    let v = unquote(v).to_lowercase();
                    Box::new(move |n: &str| n.to_lowercase().starts_with(&v))
                } else if filter.is_empty() {
                    Box::new(|_: &str| true)
                } else {
                    return MockState::graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        "Unsupported query.",
                    );
                };
            let items = s
                .group_names
                .iter()
                .filter(|(_, (name, _))| pick(name))
                .map(|(id, (name, mail))| json!({"id": id, "displayName": name, "mail": mail}))
                .collect();
            paged(s, uri.path(), q, items)
        }
        ["servicePrincipals", id, "appRoleAssignedTo"] => {
            let Some(assigned) = s.app_assignments.get(*id).cloned() else {
                return MockState::graph_error(
                    StatusCode::NOT_FOUND,
                    "Request_ResourceNotFound",
                    "Resource does not exist.",
                );
            };
            let items = assigned
                .into_iter()
                .map(|(p, t)| json!({"principalId": p, "principalType": t, "resourceId": id}))
                .collect();
            paged(s, uri.path(), q, items)
        }
        _ => MockState::graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "unsupported",
        ),
    }
}

/// An error that quotes `text` (the request's secret) in the way of `echo`.
fn echo_response(echo: Echo, code: &str, text: &str, oauth: bool) -> Response {
    match echo {
        Echo::JsonError => {
            let body = if oauth {
                json!({"error": code, "error_description": format!("AADSTS90000: {text}\r\nTrace ID: 0")})
            } else {
                json!({"error": {"code": code, "message": text}})
            };
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Echo::PlainText => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain"), ("retry-after", "0")],
            text.to_string(),
        )
            .into_response(),
        Echo::HtmlTitle => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html"), ("retry-after", "0")],
            format!("<html><head><title>{text}</title></head><body>{text}</body></html>"),
        )
            .into_response(),
    }
}

fn ok_json(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A plain collection paged with `$skiptoken` (an offset here; opaque to clients).
fn paged(s: &MockState, path: &str, q: &BTreeMap<String, String>, items: Vec<Value>) -> Response {
    let top: usize = q
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(100)
        .min(999);
    let top = top.min(s.page_size.max(1));
    let offset: usize = q
        .get("$skiptoken")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = items.iter().skip(offset).take(top).cloned().collect();
    let mut body = json!({ "value": page });
    if offset + top < items.len() {
        let origin = s.paged_next_base.as_deref().unwrap_or(&s.base);
        let mut next = url::Url::parse(&format!("{origin}{path}")).expect("url");
        for (k, v) in q {
            if k != "$skiptoken" {
                next.query_pairs_mut().append_pair(k, v);
            }
        }
        let skip = if s.repeat_paged_next_link {
            top
        } else {
            offset + top
        };
        next.query_pairs_mut()
            .append_pair("$skiptoken", &skip.to_string());
        body["@odata.nextLink"] = json!(next.to_string());
    }
    ok_json(body)
}

fn delta(s: &mut MockState, q: &BTreeMap<String, String>) -> Response {
    if q.contains_key("$top") || q.contains_key("$expand") || q.contains_key("$orderby") {
        return MockState::graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Unsupported query option for delta.",
        );
    }
    // Skip tokens encode (round start, round end, offset, select) here; clients treat them as opaque.
    let (kind, from, to, offset, select) = if let Some(skip) = q.get("$skiptoken") {
        let parts: Vec<&str> = skip.splitn(5, '.').collect();
        let [kind, from, to, offset, select] = parts.as_slice() else {
            return MockState::graph_error(
                StatusCode::BAD_REQUEST,
                "Request_BadRequest",
                "bad skiptoken",
            );
        };
        (
            kind.to_string(),
            from.parse().unwrap_or(0),
            to.parse().unwrap_or(0),
            offset.parse().unwrap_or(0),
            select.to_string(),
        )
    } else if let Some(token) = q.get("$deltatoken") {
        let Some((n, select)) = token.split_once('.') else {
            return MockState::graph_error(
                StatusCode::BAD_REQUEST,
                "syncStateNotFound",
                "The sync state is invalid or not found.",
            );
        };
        let n: usize = n.parse().unwrap_or(0);
        if s.reset_next {
            s.reset_next = false;
            let mut r = MockState::graph_error(
                StatusCode::GONE,
                "resyncRequired",
                "Resync required. Replace any local cached data with a full sync.",
            );
            if let Ok(v) = format!("{}/v1.0/users/delta?$deltatoken=", s.base).parse() {
                r.headers_mut().insert("location", v);
            }
            return r;
        }
        if s.expire_next {
            s.expire_next = false;
            return MockState::graph_error(
                StatusCode::BAD_REQUEST,
                "syncStateNotFound",
                "The sync state generation is not found. Please restart the sync.",
            );
        }
        ("d".to_string(), n, s.changes.len(), 0, select.to_string())
    } else {
        let select = q.get("$select").cloned().unwrap_or_default();
        ("f".to_string(), 0, s.changes.len(), 0, select)
    };
    let wanted: BTreeSet<&str> = select.split(',').filter(|p| !p.is_empty()).collect();
    let project = |item: &Value| -> Value {
        let Some(obj) = item.as_object() else {
            return item.clone();
        };
        if wanted.is_empty() || obj.contains_key("@removed") {
            return item.clone();
        }
        let mut out = Map::new();
        for (k, v) in obj {
            let name = k.strip_suffix("@delta").unwrap_or(k);
            if k == "id" || wanted.contains(name) {
                out.insert(k.clone(), v.clone());
            }
        }
        Value::Object(out)
    };
    let page_index = offset / s.page_size.max(1);
    let total;
    let page: Vec<Value> = if kind == "f" {
        let listed = s.users.len() + s.raw_items.len() + s.first_round_extra.len();
        total = if s.endless.is_some() {
            usize::MAX
        } else {
            listed
        };
        // Skip before building items: a page of a large tenant costs its own items only.
        let mut page: Vec<Value> = s
            .users
            .values()
            .map(|u| (u, true))
            .chain(s.raw_items.iter().map(|u| (u, false)))
            .chain(s.first_round_extra.iter().map(|u| (u, true)))
            .skip(offset)
            .take(s.page_size)
            .map(|(u, full)| {
                if full {
                    project(&s.full_item(u))
                } else {
                    u.clone()
                }
            })
            .collect();
        if s.endless == Some(Endless::NewUsers) {
            for n in offset.max(listed)..offset + s.page_size {
                if page.len() < s.page_size {
                    let id = format!("gen-{n}");
                    page.push(project(&user(
                        &id,
                        &format!("{id}@contoso.test"),
                        "Gen",
                        "User",
                    )));
                }
            }
        }
        page
    } else {
        total = to.saturating_sub(from);
        s.changes[from.min(to)..to]
            .iter()
            .skip(offset)
            .take(s.page_size)
            .map(project)
            .collect()
    };
    let mut body = json!({
        "@odata.context": format!("{}/v1.0/$metadata#users", s.base),
        "value": page,
    });
    let next = if s.repeat_next_link {
        s.page_size
    } else {
        offset + s.page_size
    };
    if offset + s.page_size < total {
        let origin = s.delta_next_base.as_deref().unwrap_or(&s.base);
        let mut link = url::Url::parse(&format!("{origin}/v1.0/users/delta")).expect("url");
        link.query_pairs_mut()
            .append_pair("$skiptoken", &format!("{kind}.{from}.{to}.{next}.{select}"));
        body["@odata.nextLink"] = json!(link.to_string());
    } else if !s.no_delta_link {
        let origin = s.delta_link_base.as_deref().unwrap_or(&s.base);
        let mut link = url::Url::parse(&format!("{origin}/v1.0/users/delta")).expect("url");
        link.query_pairs_mut()
            .append_pair("$deltatoken", &format!("{to}.{select}"));
        body["@odata.deltaLink"] = json!(link.to_string());
    }
    match s.fault {
        Some((n, Fault::Malformed)) if n == page_index => {
            let text = body.to_string();
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                text[..text.len() / 2].to_string(),
            )
                .into_response()
        }
        Some((n, Fault::Drop)) if n == page_index => {
            let text = body.to_string();
            let half = Bytes::from(text[..text.len() / 2].to_string());
            let stream = futures_stream(half);
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("content-length", text.len().to_string())
                .body(Body::from_stream(stream))
                .expect("response")
        }
        _ => ok_json(body),
    }
}

/// A body that sends half the page, then fails: the connection drops mid-body.
fn futures_stream(
    half: Bytes,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct Half(Option<Bytes>, bool);
    impl futures_core::Stream for Half {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if let Some(b) = self.0.take() {
                return std::task::Poll::Ready(Some(Ok(b)));
            }
            if !self.1 {
                self.1 = true;
                return std::task::Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "mock drops the connection",
                ))));
            }
            std::task::Poll::Ready(None)
        }
    }
    Half(Some(half), false)
}
