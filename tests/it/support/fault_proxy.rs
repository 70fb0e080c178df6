//! A fault-injecting HTTP proxy on 127.0.0.1: it forwards every request to one
//! upstream (a mock from tests/it/support) and, per a rule set the test changes while
//! the binary runs, breaks matching answers the ways real networks do: a connection
//! reset mid-body, JSON cut short under a 200, a server slower than the client's
//! timeout, 429/5xx storms with or without `Retry-After`, JSON sent as `text/plain`,
//! HTML pages from a corporate proxy or captive portal, and bodies past any size cap
//! (streamed, never held in memory).
//!
//! Rules match on a path prefix (and optionally a method) and fire on the Nth matching
//! request, on the next N, for a while, or always. The first rule that fires wins.
//! `pause` closes the listening socket, so connecting is refused (a host that is down),
//! and `resume` listens on the same port again.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::mock_server::MockServer;

/// What the proxy does instead of (or to) the upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward, then send the upstream's status and headers with the full
    /// `Content-Length`, half the body, and drop the connection.
    ResetMidBody,
    /// Forward, then answer 200 with the first half of the upstream body, a
    /// `Content-Length` that matches the cut, and a JSON content type.
    Truncate,
    /// Forward (the upstream does the work), then hold the answer this long.
    Delay(Duration),
    /// Answer this status without forwarding: a small JSON error body, and
    /// `Retry-After` when given (decimal seconds such as "0.05").
    Status {
        status: u16,
        retry_after: Option<&'static str>,
    },
    /// Forward, and replace the answer's `Content-Type` (the body is untouched).
    ContentType(&'static str),
    /// Answer this status with an HTML page (`text/html`) without forwarding, like a
    /// corporate proxy, a captive portal or a load balancer's error page.
    Html { status: u16 },
    /// Answer 200 `application/json` with `bytes` bytes of a JSON-looking body,
    /// streamed. `declared` sets a `Content-Length` (which may be far more than what
    /// is sent: the connection drops after `bytes`); `None` streams chunked.
    Oversized { bytes: u64, declared: Option<u64> },
}

impl Fault {
    /// A short name for logs and messages.
    pub fn name(&self) -> String {
        match self {
            Fault::ResetMidBody => "reset mid-body".into(),
            Fault::Truncate => "truncated body".into(),
            Fault::Delay(d) => format!("delay {d:?}"),
            Fault::Status {
                status,
                retry_after,
            } => match retry_after {
                Some(ra) => format!("{status} Retry-After {ra}"),
                None => format!("{status}"),
            },
            Fault::ContentType(ct) => format!("content type {ct}"),
            Fault::Html { status } => format!("{status} HTML page"),
            Fault::Oversized { bytes, declared } => match declared {
                Some(d) => format!("{bytes} bytes, Content-Length {d}"),
                None => format!("{bytes} bytes chunked"),
            },
        }
    }
}

/// When a rule fires, counting the requests that match it from when it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Only the Nth matching request (1 = the first).
    Nth(u32),
    /// The next N matching requests.
    Next(u32),
    /// Every matching request for this long after the first one that matches.
    For(Duration),
    /// Every matching request.
    Always,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// The request path must start with this (e.g. "/v1.0/users", "/token").
    pub path_prefix: String,
    pub method: Option<Method>,
    pub when: When,
    pub fault: Fault,
    /// Matching requests seen so far.
    seen: u32,
    /// When the first matching request came (for `When::For`).
    first: Option<Instant>,
    /// How many times this rule fired.
    fired: u32,
}

impl Rule {
    pub fn new(path_prefix: &str, when: When, fault: Fault) -> Rule {
        Rule {
            path_prefix: path_prefix.to_string(),
            method: None,
            when,
            fault,
            seen: 0,
            first: None,
            fired: 0,
        }
    }

    pub fn method(mut self, method: Method) -> Rule {
        self.method = Some(method);
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        path.starts_with(&self.path_prefix) && self.method.as_ref().is_none_or(|m| m == method)
    }

    /// Counts a matching request and says whether the fault applies to it.
    fn fires(&mut self, now: Instant) -> bool {
        self.seen += 1;
        let first = *self.first.get_or_insert(now);
        let fire = match self.when {
            When::Nth(n) => self.seen == n,
            When::Next(n) => self.seen <= n,
            When::For(d) => now.duration_since(first) < d,
            When::Always => true,
        };
        if fire {
            self.fired += 1;
        }
        fire
    }
}

/// One request through the proxy.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query as received.
    pub target: String,
    /// The fault injected, if any.
    pub fault: Option<String>,
    /// The status the client was sent (the upstream's unless the fault replaced it);
    /// 0 while the answer is still being prepared or held.
    pub status: u16,
}

#[derive(Default)]
pub struct ProxyState {
    pub rules: Vec<Rule>,
    pub log: Vec<Logged>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    upstream: String,
    state: Arc<Mutex<ProxyState>>,
    server: MockServer,
}

impl FaultProxy {
    /// A proxy on a free 127.0.0.1 port in front of `upstream` (e.g. "http://127.0.0.1:4321").
    pub fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = state.clone();
        let base = upstream.clone();
        let server = MockServer::start(axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                let client = client.clone();
                let base = base.clone();
                async move { handle(state, client, base, method, uri, headers, body).await }
            },
        ));
        FaultProxy {
            addr: server.addr,
            upstream,
            state,
            server,
        }
    }

    /// Close the listening socket: new connections to the proxy's port are refused
    /// (as from a host that is down) until [`FaultProxy::resume`].
    pub fn pause(&self) {
        self.server.pause();
    }

    /// Listen again on the same port.
    pub fn resume(&self) {
        self.server.resume();
    }

    pub fn base(&self) -> String {
        self.server.base()
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn state(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().expect("proxy state")
    }

    /// Add a rule (after the existing ones).
    pub fn add(&self, rule: Rule) {
        self.state().rules.push(rule);
    }

    /// Remove every rule: from now on, everything is forwarded untouched.
    pub fn clear(&self) {
        self.state().rules.clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state().log.clone()
    }

    pub fn clear_log(&self) {
        self.state().log.clear();
    }

    /// The log, one short line a request: `GET /path -> 200 [fault]`.
    pub fn summary(&self) -> String {
        self.log()
            .iter()
            .map(|l| {
                let path: String = l
                    .target
                    .split('?')
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(60)
                    .collect();
                match &l.fault {
                    Some(f) => format!("{} {path} -> {} [{f}]", l.method, l.status),
                    None => format!("{} {path} -> {}", l.method, l.status),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many answers were faulted since the log was last cleared.
    pub fn injected(&self) -> usize {
        self.state()
            .log
            .iter()
            .filter(|l| l.fault.is_some())
            .count()
    }
}

const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "host",
];

async fn handle(
    state: Arc<Mutex<ProxyState>>,
    client: reqwest::Client,
    upstream: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    // Logged on arrival (a held answer may outlive the client's patience).
    let (fault, entry) = {
        let mut s = state.lock().expect("proxy state");
        let now = Instant::now();
        let mut chosen = None;
        for rule in s.rules.iter_mut() {
            if rule.matches(&method, uri.path()) && rule.fires(now) && chosen.is_none() {
                chosen = Some(rule.fault.clone());
            }
        }
        s.log.push(Logged {
            method: method.to_string(),
            target: target.clone(),
            fault: chosen.as_ref().map(Fault::name),
            status: 0,
        });
        (chosen, s.log.len() - 1)
    };
    let response = match &fault {
        None => forward(&client, &upstream, &method, &target, &headers, body).await,
        Some(f) => inject(f, &client, &upstream, &method, &target, &headers, body).await,
    };
    if let Some(l) = state.lock().expect("proxy state").log.get_mut(entry) {
        if l.target == target {
            l.status = response.status().as_u16();
        }
    }
    response
}

/// The upstream's answer, whole: (status, headers without hop-by-hop ones, body).
async fn fetch(
    client: &reqwest::Client,
    upstream: &str,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), String> {
    let method =
        reqwest::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method, format!("{upstream}{target}"));
    for (name, value) in headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            req = req.header(name.as_str(), value.as_bytes());
        }
    }
    let resp = req.body(body).send().await.map_err(|e| e.to_string())?;
    let status = StatusCode::from_u16(resp.status().as_u16()).map_err(|e| e.to_string())?;
    let mut out = HeaderMap::new();
    for (name, value) in resp.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(n, v);
        }
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, out, bytes))
}

fn respond(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match fetch(client, upstream, method, target, headers, body).await {
        Ok((status, headers, bytes)) => respond(status, headers, Body::from(bytes)),
        Err(e) => respond(
            StatusCode::BAD_GATEWAY,
            HeaderMap::new(),
            Body::from(format!("fault proxy: upstream failed: {e}")),
        ),
    }
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("header value"),
    )
}

async fn inject(
    fault: &Fault,
    client: &reqwest::Client,
    upstream: &str,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    match fault {
        Fault::ResetMidBody => {
            let Ok((status, mut h, bytes)) =
                fetch(client, upstream, method, target, headers, body).await
            else {
                return forward_failed();
            };
            let (n, v) = header("content-length", &bytes.len().max(2).to_string());
            h.insert(n, v);
            let half = bytes.slice(..bytes.len() / 2);
            respond(status, h, Body::from_stream(HalfThenReset(Some(half))))
        }
        Fault::Truncate => {
            let Ok((_, mut h, bytes)) =
                fetch(client, upstream, method, target, headers, body).await
            else {
                return forward_failed();
            };
            let (n, v) = header("content-type", "application/json; charset=utf-8");
            h.insert(n, v);
            respond(
                StatusCode::OK,
                h,
                Body::from(bytes.slice(..bytes.len() / 2)),
            )
        }
        Fault::Delay(d) => {
            let answer = forward(client, upstream, method, target, headers, body).await;
            tokio::time::sleep(*d).await;
            answer
        }
        Fault::Status {
            status,
            retry_after,
        } => {
            let mut h = HeaderMap::new();
            let (n, v) = header("content-type", "application/json");
            h.insert(n, v);
            if let Some(ra) = retry_after {
                let (n, v) = header("retry-after", ra);
                h.insert(n, v);
            }
            let code = if *status == 429 {
                "TooManyRequests"
            } else {
                "ServiceUnavailable"
            };
            let text = serde_json::json!({"error": {"code": code, "message": format!("injected {status}")}});
            respond(
                StatusCode::from_u16(*status).expect("status"),
                h,
                Body::from(text.to_string()),
            )
        }
        Fault::ContentType(ct) => {
            let Ok((status, mut h, bytes)) =
                fetch(client, upstream, method, target, headers, body).await
            else {
                return forward_failed();
            };
            let (n, v) = header("content-type", ct);
            h.insert(n, v);
            respond(status, h, Body::from(bytes))
        }
        Fault::Html { status } => {
            let title = if *status == 200 {
                "Web Gateway - Sign in to continue".to_string()
            } else {
                format!(
                    "{status} {}",
                    StatusCode::from_u16(*status)
                        .ok()
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Error")
                )
            };
            let page = format!(
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body><h1>{title}</h1><p>The corporate web gateway blocked or could not complete this request.</p><hr><address>gateway.corp.example</address></body></html>\n"
            );
            let mut h = HeaderMap::new();
            let (n, v) = header("content-type", "text/html; charset=utf-8");
            h.insert(n, v);
            respond(
                StatusCode::from_u16(*status).expect("status"),
                h,
                Body::from(page),
            )
        }
        Fault::Oversized { bytes, declared } => {
            let mut h = HeaderMap::new();
            let (n, v) = header("content-type", "application/json");
            h.insert(n, v);
            if let Some(d) = declared {
                let (n, v) = header("content-length", &d.to_string());
                h.insert(n, v);
            }
            respond(
                StatusCode::OK,
                h,
                Body::from_stream(Filler {
                    left: *bytes,
                    started: false,
                    reset_at_end: declared.is_some_and(|d| d > *bytes),
                }),
            )
        }
    }
}

fn forward_failed() -> Response {
    respond(
        StatusCode::BAD_GATEWAY,
        HeaderMap::new(),
        Body::from("fault proxy: upstream failed"),
    )
}

/// Half a body, then an error: hyper drops the connection mid-body.
struct HalfThenReset(Option<Bytes>);

impl futures_core::Stream for HalfThenReset {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(b))),
            None => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fault proxy resets the connection",
            )))),
        }
    }
}

/// 64 KiB of JSON-looking filler, shared by every chunk (nothing big is allocated).
fn filler_chunk() -> Bytes {
    static CHUNK: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    CHUNK
        .get_or_init(|| {
            let item = br#"{"id":"00000000-0000-0000-0000-000000000000","displayName":"filler"},"#;
            let mut v = Vec::with_capacity(64 * 1024);
            while v.len() + item.len() <= 64 * 1024 {
                v.extend_from_slice(item);
            }
            v.resize(64 * 1024, b' ');
            Bytes::from(v)
        })
        .clone()
}

/// `{"value":[` then filler until `left` bytes are sent; then, if the declared length
/// is longer, the connection drops.
struct Filler {
    left: u64,
    started: bool,
    reset_at_end: bool,
}

impl futures_core::Stream for Filler {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.left == 0 {
            if self.reset_at_end {
                self.reset_at_end = false;
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "fault proxy ends the oversized body",
                ))));
            }
            return Poll::Ready(None);
        }
        let chunk = if self.started {
            filler_chunk()
        } else {
            self.started = true;
            Bytes::from_static(b"{\"value\":[")
        };
        let n = (chunk.len() as u64).min(self.left);
        self.left -= n;
        Poll::Ready(Some(Ok(chunk.slice(..n as usize))))
    }
}
