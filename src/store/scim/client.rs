//! A small SCIM 2.0 client (RFC 7644): bearer-authenticated JSON requests below the
//! configured base, retries on throttling (honouring `Retry-After`) and server errors
//! with jittered exponential backoff, and SCIM error bodies (`detail`, `scimType`)
//! turned into typed errors. The token is only ever put in the `Authorization` header.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::rate::RateLimit;
use crate::config::Secret;

/// Attempts per request before a throttled or failing provider fails the run.
const MAX_ATTEMPTS: usize = 6;
/// The first backoff delay when the provider gives no `Retry-After`.
const MIN_DELAY: Duration = Duration::from_millis(500);

pub const CONTENT_TYPE: &str = "application/scim+json";

#[derive(Debug, thiserror::Error)]
pub enum ScimError {
    #[error("the SCIM provider answered {status}{} for {method} {path}: {detail}", scim_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Status {
        status: u16,
        scim_type: Option<String>,
        detail: String,
        method: String,
        path: String,
    },
    #[error("{method} {path} failed: {detail}")]
    Transport {
        method: String,
        path: String,
        detail: String,
    },
    #[error("the SCIM provider sent a malformed answer for {path}: {detail}")]
    Malformed { path: String, detail: String },
    /// Refused here, before anything was written: linking would give this learner a
    /// resource that belongs to another learner.
    #[error("{detail}")]
    Refused { detail: String },
}

impl ScimError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Status { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// The provider's explanation (its `detail`), or the whole message, secrets
    /// masked: it goes to the action log and the state DB.
    pub fn detail(&self) -> String {
        let text = match self {
            ScimError::Status {
                status,
                scim_type,
                detail,
                ..
            } => match scim_type {
                Some(t) => format!("{status} {t}: {detail}"),
                None => format!("{status}: {detail}"),
            },
            other => other.to_string(),
        };
        crate::redact::scrub(&text)
    }

    /// A refusal that concerns one user (bad value, conflict, ...) rather than the
    /// whole provider (token refused, throttled or down for good, unreachable).
    pub fn is_per_user(&self) -> bool {
        matches!(self, ScimError::Refused { .. })
            || matches!(self.status(), Some(s) if (400..500).contains(&s) && !matches!(s, 401 | 403 | 429))
    }
}

/// The SCIM client of one store. Cheap to clone (shared connection pool and counter).
#[derive(Clone)]
pub struct ScimClient {
    http: reqwest::Client,
    /// The SCIM base, e.g. `https://lms.example.com/scim/v2`.
    base: reqwest::Url,
    token: Secret,
    requests: Arc<AtomicU64>,
    /// Shared by every clone: the store's `max_requests_per_second`.
    rate: Arc<RateLimit>,
}

impl ScimClient {
    pub fn new(
        base: reqwest::Url,
        token: Secret,
        request_timeout: Duration,
    ) -> Result<Self, String> {
        let http = http_client(&base, request_timeout)?;
        Ok(ScimClient {
            http,
            base,
            token,
            requests: Arc::default(),
            rate: Arc::new(RateLimit::per_second(f64::INFINITY)),
        })
    }

    /// Send at most `per_second` requests a second, all clones together and every
    /// other client of this provider in the process (runs of several directories at
    /// once in the daemon share the provider's budget).
    pub fn with_rate_limit(self, per_second: f64) -> Self {
        let provider = super::mirror::provider_key(&self.base);
        ScimClient {
            rate: RateLimit::shared(&provider, per_second),
            ..self
        }
    }

    pub fn base(&self) -> &reqwest::Url {
        &self.base
    }

    /// Requests sent so far, retries included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `{base}/{path}` with the query pairs given.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        crate::http::join(&self.base, path, query)
    }

    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ScimError> {
        self.send(Method::GET, path, query, None)
            .await
            .map(|v| v.unwrap_or(Value::Null))
    }

    /// Send one request to an endpoint below the base (`Users`, `ServiceProviderConfig`).
    /// `Ok(None)` for an empty body (204).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, ScimError> {
        let shown = format!("/{}", path.trim_start_matches('/'));
        self.send_to(method, self.url(path, query), shown, body)
            .await
    }

    /// Send one request to the User resource with this SCIM id. The id is one path
    /// segment, escaped: whatever the provider put in it (`/`, `?`, `%`), the request
    /// goes to `{base}/Users/{id}` and never to another resource or host.
    pub async fn send_user(
        &self,
        method: Method,
        id: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ScimError> {
        let url = user_url(&self.base, id)?;
        self.send_to(method, url, format!("/Users/{id}"), body)
            .await
    }

    /// Send one request to the Group resource with this SCIM id (escaped like a user's).
    pub async fn send_group(
        &self,
        method: Method,
        id: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ScimError> {
        let url = resource_url(&self.base, "Groups", id)?;
        self.send_to(method, url, format!("/Groups/{id}"), body)
            .await
    }

    /// Send one request, retrying 429 and 5xx.
    async fn send_to(
        &self,
        method: Method,
        url: reqwest::Url,
        shown: String,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ScimError> {
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| ScimError::Malformed {
                path: shown.clone(),
                detail: e.to_string(),
            })?),
            None => None,
        };
        let retries = Retries::new(MIN_DELAY, Duration::from_secs(30), MAX_ATTEMPTS);
        crate::http::retrying("the SCIM provider", retries, || {
            self.try_once(&method, &url, &shown, bytes.as_deref())
        })
        .await
    }

    /// One request: its answer, or "again" for a 429/5xx (with its `Retry-After`).
    async fn try_once(
        &self,
        method: &Method,
        url: &reqwest::Url,
        shown: &str,
        body: Option<&[u8]>,
    ) -> Attempt<Option<Value>, ScimError> {
        self.rate.acquire().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some(bytes) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(bytes.to_vec());
        }
        let transport = |detail: String| {
            Attempt::Done(Err(ScimError::Transport {
                method: method.to_string(),
                path: shown.to_string(),
                detail,
            }))
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => return transport(error_chain(&e.without_url())),
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after(&resp);
        let body = match read_body(resp).await {
            Ok(body) => body,
            Err(e) => return transport(e.to_string()),
        };
        if (200..300).contains(&status) {
            if body.bytes.iter().all(u8::is_ascii_whitespace) {
                return Attempt::Done(Ok(None));
            }
            return Attempt::Done(
                body.json()
                    .map(Some)
                    .map_err(|detail| ScimError::Malformed {
                        path: shown.to_string(),
                        detail,
                    }),
            );
        }
        let error = status_error(status, &body, method.as_str(), shown);
        if is_retryable(status) {
            return Attempt::Again {
                status,
                retry_after,
                error,
            };
        }
        Attempt::Done(Err(error))
    }
}

/// `{base}/Users/{id}`, the id escaped as one segment. An id that cannot name a
/// resource that way (empty, `.` or `..`, which URLs resolve away) is malformed.
pub fn user_url(base: &reqwest::Url, id: &str) -> Result<reqwest::Url, ScimError> {
    resource_url(base, "Users", id)
}

/// `{base}/{kind}/{id}`, the id escaped as one segment (see `user_url`).
pub fn resource_url(base: &reqwest::Url, kind: &str, id: &str) -> Result<reqwest::Url, ScimError> {
    if matches!(id, "" | "." | "..") {
        return Err(ScimError::Malformed {
            path: format!("/{kind}"),
            detail: format!("the SCIM id {id:?} cannot name a resource"),
        });
    }
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| ScimError::Malformed {
            path: format!("/{kind}"),
            detail: "the SCIM base cannot have a path".to_string(),
        })?
        .pop_if_empty()
        .push(kind)
        .push(id);
    Ok(url)
}

/// Redirects are followed only within the base's origin (scheme, host and port): the
/// bearer token and the learners' data never go to a host the admin did not configure.
const MAX_REDIRECTS: usize = 10;

/// A redirect to another origin, refused.
#[derive(Debug, thiserror::Error)]
#[error("the SCIM provider redirected to {to}, another origin than the configured {from}; not followed (the token is only sent to [store] url's origin)")]
struct OffOrigin {
    from: String,
    to: String,
}

fn http_client(base: &reqwest::Url, timeout: Duration) -> Result<reqwest::Client, String> {
    let origin = base.origin();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        let to = attempt.url().origin();
        if to != origin {
            let error = OffOrigin {
                from: origin.ascii_serialization(),
                to: to.ascii_serialization(),
            };
            attempt.error(error)
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    // The settings of `crate::http::client`, plus the redirect policy.
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .timeout(timeout)
        .user_agent(concat!("learner-sync/", env!("CARGO_PKG_VERSION")))
        .redirect(policy)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A SCIM error body (`urn:ietf:params:scim:api:messages:2.0:Error`) into an error.
fn status_error(status: u16, body: &Body, method: &str, path: &str) -> ScimError {
    let parsed: Option<Value> = serde_json::from_slice(&body.bytes).ok();
    let text = |key: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_str)
            // The provider's words may echo the bearer token or a sent attribute.
            .map(crate::redact::scrub)
    };
    let detail = text("detail").unwrap_or_else(|| {
        let raw = body.excerpt();
        if raw.is_empty() {
            "no detail given".to_string()
        } else {
            raw
        }
    });
    ScimError::Status {
        status,
        scim_type: text("scimType"),
        detail,
        method: method.to_string(),
        path: path.to_string(),
    }
}

pub use crate::http::parse_retry_after;
use crate::http::{error_chain, is_retryable, read_body, retry_after, Attempt, Body, Retries};

#[cfg(test)]
mod tests {
    use super::*;

    fn body(bytes: &[u8]) -> Body {
        Body {
            bytes: bytes.to_vec(),
            content_type: Some("application/scim+json".into()),
        }
    }

    #[test]
    fn scim_error_body_gives_detail_and_scim_type() {
        let raw = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"userName taken"}"#;
        let e = status_error(409, &body(raw), "POST", "/Users");
        assert_eq!(e.scim_type(), Some("uniqueness"));
        assert_eq!(e.detail(), "409 uniqueness: userName taken");
        assert!(e.is_per_user());
    }

    #[test]
    fn token_refusal_and_throttling_are_not_per_user() {
        for s in [401, 403, 429, 500] {
            assert!(
                !status_error(s, &body(b""), "GET", "/Users").is_per_user(),
                "{s}"
            );
        }
    }

    /// A provider on 127.0.0.1 that moved below `/new`: everything else answers 307
    /// there (or, for `/away`, to `elsewhere`). Returns its base and what it was sent.
    async fn moved(elsewhere: String) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use axum::http::{HeaderMap, StatusCode, Uri};
        use axum::response::IntoResponse;
        let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let log = log.clone();
            let elsewhere = elsewhere.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                log.lock().unwrap().push(format!("{} {auth}", uri.path()));
                let path = uri.path().to_string();
                if let Some(rest) = path.strip_prefix("/new") {
                    return (StatusCode::OK, format!("{{\"at\": \"{rest}\"}}")).into_response();
                }
                let to = match path.strip_prefix("/away") {
                    Some(rest) => format!("{elsewhere}{rest}"),
                    None => format!("/new{path}"),
                };
                (StatusCode::TEMPORARY_REDIRECT, [("location", to)], "").into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    fn client(base: &str) -> ScimClient {
        ScimClient::new(
            reqwest::Url::parse(base).unwrap(),
            Secret::new("tok-1".into()),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_redirect_is_followed_with_the_token_only_within_the_base_origin() {
        let (other, other_seen) = moved(String::new()).await;
        let (base, seen) = moved(other.clone()).await;
        // Same origin: followed, and the token goes along.
        let got = client(&base)
            .get("ServiceProviderConfig", &[])
            .await
            .unwrap();
        assert_eq!(got["at"], "/ServiceProviderConfig");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/ServiceProviderConfig Bearer tok-1",
                "/new/ServiceProviderConfig Bearer tok-1"
            ]
        );
        // Another origin: refused, with why; nothing reaches it.
        let err = client(&format!("{base}/away"))
            .send_user(Method::PATCH, "u1", Some(&serde_json::json!({})))
            .await
            .unwrap_err();
        assert!(!err.is_per_user());
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "redirected to {other}, another origin than the configured {base}"
            )),
            "{text}"
        );
        assert!(other_seen.lock().unwrap().is_empty());
    }

    #[test]
    fn an_id_is_one_escaped_segment_below_users() {
        let base = reqwest::Url::parse("https://lms.example.com/scim/v2/").unwrap();
        let url = |id: &str| user_url(&base, id).map(|u| u.to_string());
        assert_eq!(
            url("u1").unwrap(),
            "https://lms.example.com/scim/v2/Users/u1"
        );
        assert_eq!(
            url("../u1").unwrap(),
            "https://lms.example.com/scim/v2/Users/..%2Fu1"
        );
        assert_eq!(
            url("a/b?c#d%2e").unwrap(),
            "https://lms.example.com/scim/v2/Users/a%2Fb%3Fc%23d%252e"
        );
        for bad in ["", ".", ".."] {
            assert!(url(bad).is_err(), "{bad:?}");
        }
    }
}
