//! A mock Google token endpoint and Directory API on 127.0.0.1, faithful to
//! api-notes.md: it verifies the service account's JWT (RS256 with the TEST-ONLY key's
//! public half, iss, sub, scope, aud, exp <= iat + 1 h), pages users and group
//! members with page tokens, filters `query=orgUnitPath='/X'` (sub-OUs included),
//! expands nested groups for `includeDerivedMembership=true`, and injects faults.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use super::mock_server::MockServer;

/// The TEST-ONLY service-account key (never a real credential).
pub const TEST_KEY_PEM: &str = include_str!("../../fixtures/TEST-ONLY-google-sa-key.pem");
const TEST_PUBLIC_KEY_DER: &[u8] = include_bytes!("../../fixtures/TEST-ONLY-google-sa-pub.der");
pub const CLIENT_EMAIL: &str = "learner-sync@test-project.iam.gserviceaccount.com";
pub const CLIENT_ID: &str = "103456789012345678901";
pub const ADMIN: &str = "admin@fabrikam.example";
pub const USER_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
pub const MEMBER_SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";

/// A fault served instead of the next Directory API answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 403 with this `reason` (userRateLimitExceeded, quotaExceeded, forbidden).
    Forbidden(&'static str),
    /// 429 rateLimitExceeded.
    TooMany,
    /// This 5xx status.
    Server(u16),
    /// A 200 whose JSON body is cut in half.
    Truncated,
}

#[derive(Default)]
pub struct MockState {
    pub users: Vec<Value>,
    /// group key -> direct members: (id, "USER" | "GROUP", email).
    pub groups: BTreeMap<String, Vec<(String, String, String)>>,
    /// group key (email) -> (id, name), for `groups.list` and `groups.get`.
    pub group_names: BTreeMap<String, (String, String)>,
    /// Served one by one before normal answers (users and members requests).
    pub faults: VecDeque<Fault>,
    /// Served on every Directory API request while set.
    pub persistent_fault: Option<Fault>,
    /// The token endpoint answers this OAuth error code while set.
    pub token_error: Option<&'static str>,
    /// Most users a page holds (Google may return fewer than maxResults).
    pub page_cap: usize,
    pub expected_scopes: Vec<&'static str>,
    pub issued: Vec<String>,
    /// What happened, in order: "token ok", "token REJECTED: ...", "users 200", "users 503", ...
    pub log: Vec<String>,
    /// Query strings of the users requests.
    pub user_queries: Vec<BTreeMap<String, String>>,
    pub token_url: String,
    /// Added before every users page is answered (benchmarks).
    pub page_latency: std::time::Duration,
    /// Hostile paging: answers served (one each, in order) to users requests whose
    /// `pageToken` is the key ("" for the first page) before normal answers resume.
    pub scripted: BTreeMap<String, VecDeque<Value>>,
    /// Hostile paging: this many users pages in a row answer with no users and a
    /// fresh `nextPageToken`, before normal answers resume.
    pub endless_pages: usize,
    /// As `scripted`, for members requests (of any group).
    pub scripted_members: BTreeMap<String, VecDeque<Value>>,
    /// Raw (still encoded) query strings of the users requests.
    pub raw_user_queries: Vec<String>,
    /// The token endpoint's `expires_in` (3599 when unset).
    pub token_expires_in: Option<Value>,
    /// The token endpoint answers this status with an `error_description` quoting the
    /// assertion it got and a line of the private key (an echoing endpoint).
    pub echo_assertion: Option<u16>,
    /// The Directory API answers this status with a `message` quoting the bearer token.
    pub echo_bearer: Option<u16>,
    /// Every assertion the token endpoint received.
    pub assertions: Vec<String>,
}

pub struct GoogleMock {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
    server: MockServer,
}

impl GoogleMock {
    pub fn start() -> GoogleMock {
        let state = Arc::new(Mutex::new(MockState {
            page_cap: 500,
            expected_scopes: vec![USER_SCOPE],
            ..MockState::default()
        }));
        let app = Router::new()
            .route("/token", post(token))
            .route("/admin/directory/v1/users", get(users))
            .route("/admin/directory/v1/users/{key}", get(one_user))
            .route("/admin/directory/v1/groups", get(list_groups))
            .route("/admin/directory/v1/groups/{key}", get(one_group))
            .route("/admin/directory/v1/groups/{key}/members", get(members))
            .with_state(state.clone());
        let server = MockServer::start(app);
        state.lock().expect("mock state").token_url = format!("{}/token", server.base());
        GoogleMock {
            addr: server.addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.server.base()
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        f(&mut self.state.lock().expect("mock state"))
    }

    pub fn log(&self) -> Vec<String> {
        self.with(|s| s.log.clone())
    }

    /// The key JSON a Google Cloud console would download, with the mock as token_uri.
    pub fn key_json(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "0123456789abcdef",
            "private_key": TEST_KEY_PEM,
            "client_email": CLIENT_EMAIL,
            "client_id": CLIENT_ID,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.url()),
        })
        .to_string()
    }
}

/// A Directory API user.
pub fn user(id: &str, email: &str, ou: &str) -> Value {
    let local = email.split('@').next().unwrap_or(email);
    json!({
        "kind": "admin#directory#user",
        "id": id,
        "etag": format!("\"etag-{id}\""),
        "primaryEmail": email,
        "name": {"givenName": local, "familyName": "Tester", "fullName": format!("{local} Tester")},
        "isAdmin": false,
        "suspended": false,
        "archived": false,
        "orgUnitPath": ou,
        "organizations": [{"department": "Sales", "title": "Rep", "primary": true, "customType": ""}],
        "externalIds": [{"value": format!("E-{id}"), "type": "organization"}],
        "relations": [{"value": "boss@fabrikam.example", "type": "manager"}],
        "thumbnailPhotoUrl": "https://example.invalid/photo"
    })
}

fn b64(segment: &str) -> Option<Vec<u8>> {
    // Tolerate padded base64url as well as the JWT-standard unpadded form.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()
}

fn verify_jwt(assertion: &str, st: &MockState) -> Result<(), String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err("not a JWT".into());
    }
    let header: Value = serde_json::from_slice(&b64(parts[0]).ok_or("header base64")?)
        .map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let signature = b64(parts[2]).ok_or("signature base64")?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        TEST_PUBLIC_KEY_DER,
    )
    .verify(signed.as_bytes(), &signature)
    .map_err(|_| "bad signature".to_string())?;
    let claims: Value = serde_json::from_slice(&b64(parts[1]).ok_or("claims base64")?)
        .map_err(|e| e.to_string())?;
    if claims["iss"] != CLIENT_EMAIL {
        return Err(format!("iss {}", claims["iss"]));
    }
    if claims["sub"] != ADMIN {
        return Err(format!("sub {}", claims["sub"]));
    }
    if claims["aud"] != st.token_url.as_str() {
        return Err(format!("aud {} != {}", claims["aud"], st.token_url));
    }
    let mut got: Vec<&str> = claims["scope"].as_str().unwrap_or("").split(' ').collect();
    got.sort();
    let mut want = st.expected_scopes.clone();
    want.sort();
    if got != want {
        return Err(format!("scope {got:?} != {want:?}"));
    }
    let iat = claims["iat"].as_i64().ok_or("iat")?;
    let exp = claims["exp"].as_i64().ok_or("exp")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if exp > iat + 3600 || exp <= now || iat > now + 60 {
        return Err(format!("iat {iat} exp {exp} now {now}"));
    }
    Ok(())
}

async fn token(
    State(state): State<Arc<Mutex<MockState>>>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let mut st = state.lock().expect("state");
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        st.log.push("token REJECTED: grant_type".into());
        return oauth_error("unsupported_grant_type", "Invalid grant_type");
    }
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    st.assertions.push(assertion.clone());
    if let Some(status) = st.echo_assertion {
        st.log.push(format!("token echo {status}"));
        let key_line = TEST_KEY_PEM.lines().nth(3).unwrap_or_default();
        return (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            axum::Json(json!({"error": "invalid_request",
                "error_description": format!("bad assertion {assertion} signed by {key_line}")})),
        )
            .into_response();
    }
    if let Err(why) = verify_jwt(form.get("assertion").map(String::as_str).unwrap_or(""), &st) {
        st.log.push(format!("token REJECTED: {why}"));
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    }
    if let Some(code) = st.token_error {
        st.log.push(format!("token {code}"));
        let description = match code {
            "unauthorized_client" => "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            _ => "Invalid email or User ID",
        };
        return oauth_error(code, description);
    }
    let access = format!("ya29.mock-{}", st.issued.len() + 1);
    st.issued.push(access.clone());
    st.log.push("token ok".into());
    (
        StatusCode::OK,
        axum::Json(json!({"access_token": access,
            "expires_in": st.token_expires_in.clone().unwrap_or(json!(3599)), "token_type": "Bearer"})),
    )
        .into_response()
}

fn oauth_error(code: &str, description: &str) -> Response {
    let status = if code == "unauthorized_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        axum::Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

fn api_error(status: u16, reason: &str, message: &str) -> Response {
    let domain = if reason.contains("Limit") || reason.contains("quota") {
        "usageLimits"
    } else {
        "global"
    };
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"error": {"code": status, "message": message,
            "errors": [{"domain": domain, "reason": reason, "message": message}]}})),
    )
        .into_response()
}

/// Checks the bearer token and serves a pending fault, if any.
fn gate(st: &mut MockState, headers: &HeaderMap, what: &str) -> Option<Response> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !st.issued.iter().any(|t| t == bearer) {
        st.log.push(format!("{what} 401"));
        return Some(api_error(401, "authError", "Invalid Credentials"));
    }
    if let Some(status) = st.echo_bearer {
        st.log.push(format!("{what} echo {status}"));
        return Some(api_error(
            status,
            "forbidden",
            &format!("token {bearer} may not read this"),
        ));
    }
    let fault = st
        .faults
        .pop_front()
        .or_else(|| st.persistent_fault.clone());
    let fault = fault?;
    let resp = match fault {
        Fault::Forbidden(reason) => {
            st.log.push(format!("{what} 403 {reason}"));
            let message = if reason == "forbidden" {
                "Not Authorized to access this resource/api"
            } else {
                "Quota exceeded for quota metric 'Queries'"
            };
            api_error(403, reason, message)
        }
        Fault::TooMany => {
            st.log.push(format!("{what} 429"));
            api_error(429, "rateLimitExceeded", "Rate Limit Exceeded")
        }
        Fault::Server(code) => {
            st.log.push(format!("{what} {code}"));
            api_error(code, "backendError", "Backend Error")
        }
        Fault::Truncated => {
            st.log.push(format!("{what} truncated"));
            let body = json!({"kind": "admin#directory#users", "users": st.users}).to_string();
            let cut = body[..body.len() / 2].to_string();
            (StatusCode::OK, [("content-type", "application/json")], cut).into_response()
        }
    };
    Some(resp)
}

fn offset(token: Option<&String>) -> usize {
    token
        .and_then(|t| t.strip_prefix("page-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn users(
    State(state): State<Arc<Mutex<MockState>>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let latency = state.lock().expect("state").page_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut st = state.lock().expect("state");
    st.user_queries.push(q.clone());
    st.raw_user_queries.push(raw.unwrap_or_default());
    if let Some(r) = gate(&mut st, &headers, "users") {
        return r;
    }
    let token = q.get("pageToken").cloned().unwrap_or_default();
    if let Some(body) = st.scripted.get_mut(&token).and_then(VecDeque::pop_front) {
        st.log.push("users 200 scripted".into());
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    if st.endless_pages > 0 {
        st.endless_pages -= 1;
        let n = st.user_queries.len();
        st.log.push("users 200 endless".into());
        let body =
            json!({"kind": "admin#directory#users", "nextPageToken": format!("endless-{n}")});
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    if q.contains_key("customer") == q.contains_key("domain") {
        st.log.push("users 400".into());
        return api_error(400, "badRequest", "Bad Request");
    }
    let max: usize = q
        .get("maxResults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(100);
    if !(1..=500).contains(&max) {
        st.log.push("users 400".into());
        return api_error(400, "invalid", "Invalid value for maxResults");
    }
    let ou_filter = q.get("query").and_then(|query| {
        query
            .strip_prefix("orgUnitPath='")
            .and_then(|r| r.strip_suffix('\''))
            .map(str::to_string)
    });
    let matching: Vec<&Value> = st
        .users
        .iter()
        .filter(|u| match &ou_filter {
            None => true,
            Some(ou) => {
                let p = u["orgUnitPath"].as_str().unwrap_or("/");
                p == ou || p.starts_with(&format!("{ou}/"))
            }
        })
        .collect();
    let start = offset(q.get("pageToken"));
    let size = max.min(st.page_cap);
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(size)
        .map(|v| (*v).clone())
        .collect();
    // As the real API: custom schemas only with a projection asking for them, and only
    // the fields the `fields` mask names.
    let schemas: Option<Vec<&str>> = match q.get("projection").map(String::as_str) {
        Some("full") => None,
        Some("custom") => Some(
            q.get("customFieldMask")
                .map(|m| m.split(',').collect())
                .unwrap_or_default(),
        ),
        _ => Some(vec![]),
    };
    let user_mask = q.get("fields").and_then(|f| {
        parse_mask(f)
            .into_iter()
            .find(|f| f.0 == "users")
            .and_then(|f| f.1)
    });
    let page: Vec<Value> = page
        .into_iter()
        .map(|mut u| {
            if let (Some(keep), Some(cs)) = (&schemas, u.get_mut("customSchemas")) {
                if let Some(obj) = cs.as_object_mut() {
                    obj.retain(|k, _| keep.contains(&k.as_str()));
                }
            }
            match &user_mask {
                Some(mask) => project(&u, mask),
                None => u,
            }
        })
        .collect();
    let mut body = json!({"kind": "admin#directory#users", "etag": "\"list\""});
    if !page.is_empty() {
        body["users"] = Value::Array(page);
    }
    if start + size < matching.len() {
        body["nextPageToken"] = json!(format!("page-{}", start + size));
    }
    st.log.push("users 200".into());
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `users.get`: by id, primary email or an alias (`aliases`), emails without case; the
/// `fields` mask applies to the user itself; 404 `notFound` for anyone else.
async fn one_user(
    State(state): State<Arc<Mutex<MockState>>>,
    headers: HeaderMap,
    axum::extract::Path(key): axum::extract::Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut st = state.lock().expect("state");
    st.log.push(format!("users.get {key}"));
    if let Some(r) = gate(&mut st, &headers, "users.get") {
        return r;
    }
    let found = st.users.iter().find(|u| {
        u["id"].as_str() == Some(key.as_str())
            || u["primaryEmail"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(&key))
            || u["aliases"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e.as_str().is_some_and(|e| e.eq_ignore_ascii_case(&key)))
            })
    });
    let Some(u) = found.cloned() else {
        return api_error(404, "notFound", "Resource Not Found: userKey");
    };
    let u = match q.get("fields") {
        Some(f) => project(&u, &parse_mask(f)),
        None => u,
    };
    (StatusCode::OK, axum::Json(u)).into_response()
}

fn expand(
    groups: &BTreeMap<String, Vec<(String, String, String)>>,
    key: &str,
    derived: bool,
    seen: &mut Vec<String>,
    out: &mut Vec<(String, String, String)>,
) {
    if seen.iter().any(|s| s == key) {
        return;
    }
    seen.push(key.to_string());
    for m in groups.get(key).into_iter().flatten() {
        if m.1 == "GROUP" && derived {
            expand(groups, &m.2, derived, seen, out);
        } else if !out.iter().any(|o| o.0 == m.0) {
            out.push(m.clone());
        }
    }
}

fn group_json(key: &str, id: &str, name: &str) -> Value {
    json!({"kind": "admin#directory#group", "id": id, "email": key, "name": name, "directMembersCount": "0"})
}

/// `groups.list?customer=...`: every group with a name, one page (`maxResults` <= 200).
async fn list_groups(State(state): State<Arc<Mutex<MockState>>>, headers: HeaderMap) -> Response {
    let mut st = state.lock().expect("state");
    if let Some(r) = gate(&mut st, &headers, "groups") {
        return r;
    }
    let groups: Vec<Value> = st
        .group_names
        .iter()
        .map(|(key, (id, name))| group_json(key, id, name))
        .collect();
    st.log.push("groups 200".to_string());
    let mut body = json!({"kind": "admin#directory#groups"});
    if !groups.is_empty() {
        body["groups"] = Value::Array(groups);
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `groups.get` by email or id.
async fn one_group(
    State(state): State<Arc<Mutex<MockState>>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let mut st = state.lock().expect("state");
    if let Some(r) = gate(&mut st, &headers, "groups") {
        return r;
    }
    let found = st
        .group_names
        .iter()
        .find(|(k, (id, _))| **k == key || *id == key)
        .map(|(k, (id, name))| group_json(k, id, name));
    match found {
        Some(g) => (StatusCode::OK, axum::Json(g)).into_response(),
        None => api_error(404, "notFound", "Resource Not Found: groupKey"),
    }
}

async fn members(
    State(state): State<Arc<Mutex<MockState>>>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut st = state.lock().expect("state");
    if let Some(r) = gate(&mut st, &headers, "members") {
        return r;
    }
    if !st.groups.contains_key(&key) {
        st.log.push(format!("members {key} 404"));
        return api_error(404, "notFound", "Resource Not Found: groupKey");
    }
    let token = q.get("pageToken").cloned().unwrap_or_default();
    if let Some(body) = st
        .scripted_members
        .get_mut(&token)
        .and_then(VecDeque::pop_front)
    {
        st.log.push(format!("members {key} 200 scripted"));
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    let derived = q.get("includeDerivedMembership").map(String::as_str) == Some("true");
    let mut all = Vec::new();
    expand(&st.groups, &key, derived, &mut Vec::new(), &mut all);
    let max: usize = q
        .get("maxResults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(200)
        .min(200);
    let size = max.min(st.page_cap);
    let start = offset(q.get("pageToken"));
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(size)
        .map(|(id, kind, email)| json!({"kind": "admin#directory#member", "id": id, "email": email, "role": "MEMBER", "type": kind, "status": "ACTIVE"}))
        .collect();
    let mut body = json!({"kind": "admin#directory#members"});
    if !page.is_empty() {
        body["members"] = Value::Array(page);
    }
    if start + size < all.len() {
        body["nextPageToken"] = json!(format!("page-{}", start + size));
    }
    st.log.push(format!("members {key} 200"));
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A partial-response `fields` mask: `a,b(c,d(e))` as (name, sub-mask) pairs.
struct Field(String, Option<Vec<Field>>);
type Mask = Vec<Field>;

fn parse_mask(text: &str) -> Mask {
    fn list(chars: &[char], i: &mut usize) -> Mask {
        let mut out = Vec::new();
        loop {
            let mut name = String::new();
            while let Some(&c) = chars.get(*i) {
                if matches!(c, ',' | '(' | ')') {
                    break;
                }
                name.push(c);
                *i += 1;
            }
            let sub = if chars.get(*i) == Some(&'(') {
                *i += 1;
                let sub = list(chars, i);
                *i += 1;
                Some(sub)
            } else {
                None
            };
            if !name.is_empty() {
                out.push(Field(name, sub));
            }
            if chars.get(*i) == Some(&',') {
                *i += 1;
            } else {
                return out;
            }
        }
    }
    let chars: Vec<char> = text.chars().collect();
    list(&chars, &mut 0)
}

/// `v` with only the masked fields (lists are projected element by element).
fn project(v: &Value, mask: &Mask) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(|i| project(i, mask)).collect()),
        Value::Object(obj) => {
            let mut out = serde_json::Map::new();
            for Field(name, sub) in mask {
                if let Some(field) = obj.get(name) {
                    let value = match sub {
                        Some(sub) => project(field, sub),
                        None => field.clone(),
                    };
                    out.insert(name.clone(), value);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}
