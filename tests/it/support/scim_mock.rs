//! A small SCIM 2.0 service provider (RFC 7644, api-notes.md) with injectable faults:
//! throttling with `Retry-After`, 5xx, a filter index that lags (so a create meets a
//! `409 uniqueness`), users deleted behind the client's back, and per-user refusals.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::mock_server::MockServer;

pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub authorization: String,
    pub body: String,
    pub content_type: String,
    /// When the request arrived, by the mock's own clock.
    pub at: std::time::Instant,
}

pub struct MockState {
    pub token: String,
    pub users: BTreeMap<String, Value>,
    next_id: u64,
    pub patch_supported: bool,
    /// The next N `POST /Users` answer 429 with `Retry-After: 0.2`.
    pub throttle_posts: usize,
    /// The next N `POST /Users` answer 503.
    pub fail_posts: usize,
    /// userNames that filters do not find until a create conflicts with them.
    pub lagging_index: BTreeSet<String>,
    /// After this many more successful creates, the token is refused (401).
    pub revoke_after_creates: Option<usize>,
    /// userNames refused with 400 invalidValue.
    pub refuse: BTreeSet<String>,
    /// Every request answers `307` to this base plus the request's path and query.
    pub redirect_to: Option<String>,
    /// PATCH accepts only what Entra's provisioning sends by default (api-notes.md):
    /// one op per attribute with a path, `Add`/`Replace`/`Remove`, the work email as
    /// `emails[type eq "work"].value`, `active` as "True"/"False", the manager a bare id.
    pub entra_patch_only: bool,
    /// PATCH accepts only RFC 7644 shapes, as a strict RFC server does: lowercase ops,
    /// boolean `active`, the manager as `{"value": id}` (else 400). Unless this or
    /// `entra_patch_only` is set, the mock takes both, as most platforms do.
    pub rfc_only: bool,
    /// `/ServiceProviderConfig` and `/ResourceTypes` answer 404 (an endpoint built for
    /// Entra, which reads neither).
    pub no_discovery: bool,
    /// `GET /Users?filter=...` answers every user (a provider that ignores filters).
    pub ignore_filters: bool,
    /// Every `POST /Users` answers this status with a `detail` that quotes the
    /// request's `Authorization` header (a provider echoing the bearer token).
    pub echo_authorization: Option<u16>,
    pub log: Vec<Logged>,
}

pub struct ScimMock {
    pub addr: SocketAddr,
    state: Arc<Mutex<MockState>>,
    server: MockServer,
}

impl ScimMock {
    pub fn start(token: &str) -> ScimMock {
        let state = Arc::new(Mutex::new(MockState {
            token: token.to_string(),
            users: BTreeMap::new(),
            next_id: 1,
            patch_supported: true,
            throttle_posts: 0,
            fail_posts: 0,
            lagging_index: BTreeSet::new(),
            refuse: BTreeSet::new(),
            revoke_after_creates: None,
            redirect_to: None,
            entra_patch_only: false,
            rfc_only: false,
            no_discovery: false,
            ignore_filters: false,
            echo_authorization: None,
            log: Vec::new(),
        }));
        let shared = state.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move {
                    let at = std::time::Instant::now();
                    let mut s = state.lock().expect("mock state");
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let resp = handle(&mut s, &method, &uri, &auth, &body);
                    s.log.push(Logged {
                        method: method.to_string(),
                        path: uri.to_string(),
                        status: resp.status().as_u16(),
                        authorization: auth,
                        body: String::from_utf8_lossy(&body).into_owned(),
                        content_type: headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string(),
                        at,
                    });
                    resp
                }
            },
        );
        let server = MockServer::start(app);
        ScimMock {
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

    /// Add a user with the id given (as the provider would hand it out, unescaped).
    pub fn add_user_with_id(&self, id: &str, mut user: Value) {
        user["id"] = json!(id);
        user["meta"] = json!({"resourceType": "User", "version": "W/\"1\""});
        self.state().users.insert(id.to_string(), user);
    }

    pub fn add_user(&self, user: Value) -> String {
        let mut s = self.state();
        insert(&mut s, user)
    }

    /// The user with this externalId (panics unless exactly one).
    pub fn user(&self, external_id: &str) -> Value {
        let s = self.state();
        let found: Vec<&Value> = s
            .users
            .values()
            .filter(|u| u["externalId"] == external_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "users with externalId {external_id}: {found:?}"
        );
        found[0].clone()
    }

    pub fn requests(&self, method: &str) -> Vec<Logged> {
        self.state()
            .log
            .iter()
            .filter(|l| l.method == method)
            .cloned()
            .collect()
    }
}

fn insert(s: &mut MockState, mut user: Value) -> String {
    let id = format!("u{:04}", s.next_id);
    s.next_id += 1;
    user["id"] = json!(id);
    user["meta"] = json!({"resourceType": "User", "version": "W/\"1\""});
    s.users.insert(id.clone(), user);
    id
}

fn error(status: u16, scim_type: Option<&str>, detail: &str) -> Response {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "detail": detail,
    });
    if let Some(t) = scim_type {
        body["scimType"] = json!(t);
    }
    scim(status, body)
}

fn scim(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/scim+json")],
        body.to_string(),
    )
        .into_response()
}

fn list(users: Vec<Value>) -> Response {
    scim(
        200,
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": users.len(),
            "startIndex": 1,
            "itemsPerPage": users.len(),
            "Resources": users,
        }),
    )
}

/// `attr eq "value"` with `\"` and `\\` escapes.
fn parse_filter(f: &str) -> Option<(String, String)> {
    let (attr, rest) = f.split_once(" eq ")?;
    let quoted = rest.trim().strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            value.extend(chars.next());
        } else {
            value.push(c);
        }
    }
    Some((attr.trim().to_string(), value))
}

fn set_path(user: &mut Value, path: &str, value: Option<Value>) {
    let (container, key) = if let Some(attr) = path.strip_prefix(&format!("{ENTERPRISE}:")) {
        (Some(ENTERPRISE.to_string()), attr.to_string())
    } else if let Some((schema, attr)) = path.strip_prefix("urn:").and(path.rsplit_once(':')) {
        // Any other extension's attribute (`urn:...:User:customField1`) lives in its object.
        (Some(schema.to_string()), attr.to_string())
    } else if let Some((a, b)) = path.split_once('.') {
        (Some(a.to_string()), b.to_string())
    } else {
        (None, path.to_string())
    };
    let target = match container {
        Some(c) => {
            if !user[&c].is_object() {
                user[&c] = json!({});
            }
            &mut user[&c]
        }
        None => user,
    };
    let obj = target.as_object_mut().unwrap();
    match value {
        Some(v) => {
            obj.insert(key, v);
        }
        None => {
            obj.remove(&key);
        }
    }
}

/// Entra's default PATCH operations, checked strictly and turned into the RFC form
/// the mock applies; anything else is refused with why.
fn entra_ops(ops: &[Value]) -> Result<Vec<Value>, String> {
    let manager = format!("{ENTERPRISE}:manager");
    let mut out = Vec::new();
    for op in ops {
        let name = op["op"].as_str().unwrap_or_default();
        let lower = match name {
            "Add" => "add",
            "Replace" => "replace",
            "Remove" => "remove",
            other => return Err(format!("op {other:?}: Entra sends Add, Replace or Remove")),
        };
        let Some(path) = op["path"].as_str().filter(|p| !p.is_empty()) else {
            return Err(format!("an op without a path: {op}"));
        };
        let value = &op["value"];
        let rfc_value = if lower == "remove" {
            Value::Null
        } else if path == "active" {
            match value.as_str() {
                Some("True") => json!(true),
                Some("False") => json!(false),
                _ => return Err(format!("active {value}: Entra sends \"True\" or \"False\"")),
            }
        } else if path == manager {
            match value.as_str() {
                Some(id) => json!({ "value": id }),
                None => return Err(format!("manager {value}: Entra sends the bare id")),
            }
        } else if path.starts_with("emails") {
            match (path, value.as_str()) {
                ("emails[type eq \"work\"].value", Some(v)) => {
                    json!([{"value": v, "type": "work", "primary": true}])
                }
                _ => {
                    return Err(format!(
                        "{path} {value}: Entra sends emails[type eq \"work\"].value"
                    ))
                }
            }
        } else if value.is_string() {
            value.clone()
        } else {
            return Err(format!("{path} {value}: Entra sends a string"));
        };
        let path = if path.starts_with("emails") {
            "emails"
        } else {
            path
        };
        out.push(json!({"op": lower, "path": path, "value": rfc_value}));
    }
    Ok(out)
}

/// RFC 7644 section 3.5.2 as a strict server reads it: lowercase ops, `active` a
/// boolean, the manager a complex value; anything else refused with why.
fn rfc_ops(ops: &[Value]) -> Result<(), String> {
    let manager = format!("{ENTERPRISE}:manager");
    for op in ops {
        let name = op["op"].as_str().unwrap_or_default();
        if !matches!(name, "add" | "replace" | "remove") {
            return Err(format!("op {name:?} is not one of add, remove, replace"));
        }
        let path = op["path"].as_str().unwrap_or_default();
        if path == "active" && !op["value"].is_boolean() {
            return Err(format!("active {}: a boolean", op["value"]));
        }
        if path == manager && name != "remove" && !op["value"].is_object() {
            return Err(format!("manager {}: a complex value", op["value"]));
        }
    }
    Ok(())
}

/// A path segment's percent-escapes decoded, as a provider reads an id from its URL.
fn decode_segment(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(s: &mut MockState, method: &Method, uri: &Uri, auth: &str, body: &[u8]) -> Response {
    if let Some(to) = &s.redirect_to {
        let location = format!("{to}{uri}");
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", location.as_str())],
            "",
        )
            .into_response();
    }
    if auth != format!("Bearer {}", s.token) || s.revoke_after_creates == Some(0) {
        return error(401, None, "Authorization failure");
    }
    let path = uri.path().trim_end_matches('/');
    let query: BTreeMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if s.no_discovery && matches!(path, "/ServiceProviderConfig" | "/ResourceTypes") {
        return error(404, None, "no such endpoint");
    }
    match (method.as_str(), path) {
        ("GET", "/ServiceProviderConfig") => scim(
            200,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "patch": {"supported": s.patch_supported}, "filter": {"supported": true, "maxResults": 200}}),
        ),
        ("GET", "/ResourceTypes") => list(vec![json!({"id": "User", "endpoint": "/Users",
            "schema": "urn:ietf:params:scim:schemas:core:2.0:User",
            "schemaExtensions": [{"schema": ENTERPRISE, "required": false}]})]),
        ("GET", "/Users") => {
            if s.ignore_filters {
                return list(s.users.values().cloned().collect());
            }
            let Some(filter) = query.get("filter") else {
                let count: usize = query
                    .get("count")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(100);
                return list(s.users.values().take(count).cloned().collect());
            };
            let Some((attr, value)) = parse_filter(filter) else {
                return error(400, Some("invalidFilter"), "bad filter");
            };
            let found = s
                .users
                .values()
                .filter(|u| {
                    let user_name = u["userName"].as_str().unwrap_or_default();
                    !s.lagging_index.contains(user_name)
                        && match attr.as_str() {
                            "userName" => user_name.eq_ignore_ascii_case(&value),
                            "emails.value" => u["emails"].as_array().is_some_and(|e| {
                                e.iter().any(|e| {
                                    e["value"]
                                        .as_str()
                                        .is_some_and(|v| v.eq_ignore_ascii_case(&value))
                                })
                            }),
                            other => u[other].as_str() == Some(value.as_str()),
                        }
                })
                .cloned()
                .collect();
            list(found)
        }
        ("POST", "/Users") => {
            if let Some(status) = s.echo_authorization {
                let scim_type = (status == 400).then_some("invalidValue");
                return error(
                    status,
                    scim_type,
                    &format!("request with Authorization: {auth} was refused"),
                );
            }
            if s.throttle_posts > 0 {
                s.throttle_posts -= 1;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [
                        ("retry-after", "0.2"),
                        ("content-type", "application/scim+json"),
                    ],
                    "{}",
                )
                    .into_response();
            }
            if s.fail_posts > 0 {
                s.fail_posts -= 1;
                return error(503, None, "try again");
            }
            let user_name = json_body["userName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if s.refuse.contains(&user_name) {
                return error(
                    400,
                    Some("invalidValue"),
                    &format!("userName {user_name} is not allowed by policy"),
                );
            }
            let taken = s.users.values().any(|u| {
                u["userName"]
                    .as_str()
                    .unwrap_or_default()
                    .eq_ignore_ascii_case(&user_name)
                    || (!json_body["externalId"].is_null()
                        && u["externalId"] == json_body["externalId"])
            });
            if taken {
                s.lagging_index.remove(&user_name);
                return error(
                    409,
                    Some("uniqueness"),
                    "One or more of the attribute values are already in use or are reserved",
                );
            }
            let id = insert(s, json_body);
            if let Some(n) = s.revoke_after_creates.as_mut() {
                *n = n.saturating_sub(1);
            }
            scim(201, s.users[&id].clone())
        }
        (m, p) if p.starts_with("/Users/") => {
            let id = decode_segment(p.trim_start_matches("/Users/"));
            let Some(existing) = s.users.get(&id).cloned() else {
                return error(404, None, &format!("Resource {id} not found"));
            };
            let user_name = existing["userName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            match m {
                "GET" => scim(200, existing),
                "DELETE" => {
                    s.users.remove(&id);
                    StatusCode::NO_CONTENT.into_response()
                }
                "PUT" => {
                    let new_name = json_body["userName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if s.refuse.contains(&new_name) {
                        return error(
                            400,
                            Some("invalidValue"),
                            &format!("userName {new_name} is not allowed by policy"),
                        );
                    }
                    let mut user = json_body;
                    user["id"] = json!(id);
                    user["meta"] = existing["meta"].clone();
                    s.users.insert(id.clone(), user.clone());
                    scim(200, user)
                }
                "PATCH" if s.patch_supported => {
                    if s.refuse.contains(&user_name) {
                        return error(
                            400,
                            Some("invalidValue"),
                            &format!("userName {user_name} is not allowed by policy"),
                        );
                    }
                    let mut user = existing;
                    let mut ops = json_body["Operations"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if s.entra_patch_only {
                        match entra_ops(&ops) {
                            Ok(rfc) => ops = rfc,
                            Err(why) => return error(400, Some("invalidSyntax"), &why),
                        }
                    } else if s.rfc_only {
                        if let Err(why) = rfc_ops(&ops) {
                            return error(400, Some("invalidValue"), &why);
                        }
                    } else if let Ok(rfc) = entra_ops(&ops) {
                        ops = rfc;
                    }
                    // No-path ops (RFC 7644 and Entra's 2020 flag): one op per key.
                    let ops: Vec<Value> = ops
                        .into_iter()
                        .flat_map(|op| match (op.get("path"), op["value"].as_object()) {
                            (None, Some(values)) => values
                                .iter()
                                .map(|(k, v)| {
                                    let v = match (k.as_str(), v) {
                                        ("active", Value::String(b)) => json!(b == "True"),
                                        (k, Value::String(e)) if k.starts_with("emails") => {
                                            json!([{"value": e, "type": "work", "primary": true}])
                                        }
                                        (_, v) => v.clone(),
                                    };
                                    let k = if k.starts_with("emails") { "emails" } else { k };
                                    json!({"op": op["op"], "path": k, "value": v})
                                })
                                .collect(),
                            _ => vec![op],
                        })
                        .collect();
                    for op in ops {
                        let path = op["path"].as_str().unwrap_or_default();
                        match op["op"].as_str() {
                            Some("replace") | Some("add") => {
                                set_path(&mut user, path, Some(op["value"].clone()))
                            }
                            Some("remove") => set_path(&mut user, path, None),
                            _ => return error(400, Some("invalidSyntax"), "bad op"),
                        }
                    }
                    s.users.insert(id, user);
                    StatusCode::NO_CONTENT.into_response()
                }
                _ => error(501, None, "not supported"),
            }
        }
        _ => error(404, None, "no such endpoint"),
    }
}
