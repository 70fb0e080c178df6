//! A small Microsoft Graph client: authenticated GETs of JSON pages, retries on
//! throttling (honouring `Retry-After`, decimals included) and server errors with
//! jittered exponential backoff, and Graph's error bodies turned into typed errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::auth::{AuthError, TokenProvider};
use crate::config::Secret;

/// Attempts per request before a throttled or failing endpoint fails the run.
const MAX_ATTEMPTS: usize = 6;

/// The most pages one read follows: a million-user tenant is a few thousand pages, so
/// more means paging that never ends.
pub const MAX_PAGES_PER_READ: u64 = 100_000;
/// The most items (users, members, assignments) one read holds, for the same reason;
/// the largest tenants have a few million users.
pub const MAX_ITEMS_PER_READ: u64 = 5_000_000;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("Graph answered {status} {code} for {path}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        path: String,
    },
    #[error("reading {path} failed: {detail}")]
    Transport { path: String, detail: String },
    #[error("Graph sent a malformed page for {path}: {detail}")]
    Malformed { path: String, detail: String },
    /// A paging or delta link to another scheme, host or port than `graph_url`: it is
    /// neither followed (the request would carry the token) nor stored.
    #[error("Graph sent a link to another server for {path}: {detail}")]
    ForeignLink { path: String, detail: String },
    /// The same link twice, or more pages or items than any tenant has.
    #[error("Graph's paging of {path} does not end: {detail}")]
    Endless { path: String, detail: String },
}

impl GraphError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GraphError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// An expired or reset delta token: the caller starts a fresh delta round.
    pub fn needs_resync(&self) -> bool {
        self.status() == Some(410)
            || matches!(self.code(), Some("syncStateNotFound" | "resyncRequired"))
    }
}

/// One page of a Graph collection.
#[derive(Debug, Default, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub value: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "@odata.nextLink")]
    pub next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    pub delta_link: Option<String>,
}

/// The Graph client of one directory.
pub struct Graph {
    http: reqwest::Client,
    tokens: TokenProvider,
    /// Graph root with version, e.g. `https://graph.microsoft.com/v1.0`.
    pub base: reqwest::Url,
    requests: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
}

impl Graph {
    pub fn new(http: reqwest::Client, tokens: TokenProvider, base: reqwest::Url) -> Self {
        Graph {
            http,
            tokens,
            base,
            requests: Arc::default(),
            retries: Arc::default(),
        }
    }

    /// Requests made so far (token requests excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that were repeats after throttling or a server error.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// `{base}/{path}` with the query pairs given.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        crate::http::join(&self.base, path, query)
    }

    pub async fn token(&mut self) -> Result<Secret, AuthError> {
        self.tokens.token().await
    }

    /// Forget the cached token (Graph answered 401 to it).
    pub fn invalidate_token(&mut self) {
        self.tokens.invalidate();
    }

    /// A fetcher that can run on another task (to prefetch the next page).
    pub fn fetcher(&self, token: Secret) -> Fetcher {
        Fetcher {
            http: self.http.clone(),
            base: self.base.clone(),
            token,
            requests: self.requests.clone(),
            retries: self.retries.clone(),
        }
    }

    /// GET one page, renewing the token once if Graph says it is no longer valid.
    pub async fn page(&mut self, url: &str) -> Result<Page, GraphError> {
        self.get(url).await
    }

    /// GET one JSON resource (a page, or a single object such as `/users/{id}`),
    /// renewing the token once if Graph says it is no longer valid.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &mut self,
        url: &str,
    ) -> Result<T, GraphError> {
        let token = self.tokens.token().await?;
        match self.fetcher(token).get(url).await {
            Err(GraphError::Status { status: 401, .. }) => {
                self.invalidate_token();
                let token = self.tokens.token().await?;
                self.fetcher(token).get(url).await
            }
            other => other,
        }
    }

    /// Every item of a paged collection (following `@odata.nextLink`).
    pub async fn collect(
        &mut self,
        url: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, GraphError> {
        let path = reqwest::Url::parse(url)
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        let mut bounds = Bounds::new(path);
        let mut items = Vec::new();
        let mut next = Some(url.to_string());
        while let Some(url) = next {
            bounds.follow(&url)?;
            let page = self.page(&url).await?;
            bounds.items(page.value.len())?;
            items.extend(page.value);
            next = page.next_link;
        }
        Ok(items)
    }
}

/// What keeps one read finite: no link followed twice, at most [`MAX_PAGES_PER_READ`]
/// pages and [`MAX_ITEMS_PER_READ`] items.
pub struct Bounds {
    path: String,
    /// Hashes of the links followed (a link is long; 100,000 hashes are 800 KiB).
    seen: std::collections::HashSet<u64>,
    pages: u64,
    items: u64,
    max_pages: u64,
    max_items: u64,
}

impl Bounds {
    /// Bounds for the read of `path` (named in the error).
    pub fn new(path: impl Into<String>) -> Bounds {
        // Tests lower the caps (never raise them) so that hitting one takes a few pages.
        let lowered = |name: &str, max: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(max, |v| v.min(max))
        };
        Bounds {
            path: path.into(),
            seen: Default::default(),
            pages: 0,
            items: 0,
            max_pages: lowered("LEARNER_SYNC_TEST_MAX_PAGES", MAX_PAGES_PER_READ),
            max_items: lowered("LEARNER_SYNC_TEST_MAX_ITEMS", MAX_ITEMS_PER_READ),
        }
    }

    /// Before following `link`: refuse one seen before in this read, or one page too many.
    pub fn follow(&mut self, link: &str) -> Result<(), GraphError> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        link.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return Err(self.endless(format!(
                "page {} links back to a page already read",
                self.pages
            )));
        }
        self.pages += 1;
        if self.pages > self.max_pages {
            return Err(self.endless(format!("more than {} pages", self.max_pages)));
        }
        Ok(())
    }

    /// After a page of `n` items: refuse one item too many.
    pub fn items(&mut self, n: usize) -> Result<(), GraphError> {
        self.items += n as u64;
        if self.items > self.max_items {
            return Err(self.endless(format!("more than {} items", self.max_items)));
        }
        Ok(())
    }

    fn endless(&self, detail: String) -> GraphError {
        GraphError::Endless {
            path: self.path.clone(),
            detail,
        }
    }
}

/// What a spawned page fetch needs: a client, a token and the request counter.
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
    /// `graph_url`: the only origin the token is sent to.
    base: reqwest::Url,
    token: Secret,
    requests: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
}

impl Fetcher {
    /// GET a JSON page, retrying throttling and server errors. Every request passes
    /// here, so this is where a link to another origin is refused before the token
    /// leaves.
    pub async fn page(&self, url: &str) -> Result<Page, GraphError> {
        self.get(url).await
    }

    /// GET any JSON answer, with the same origin check and retries as a page.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, GraphError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| GraphError::Malformed {
            path: "a paging link".into(),
            detail: format!("bad link: {e}"),
        })?;
        let path = parsed.path().to_string();
        if !crate::http::same_origin(&self.base, &parsed) {
            return Err(GraphError::ForeignLink {
                detail: foreign(&self.base, &parsed),
                path,
            });
        }
        let retries = Retries::new(
            Duration::from_secs(1),
            Duration::from_secs(32),
            MAX_ATTEMPTS,
        );
        let mut tries = 0u32;
        crate::http::retrying("Graph", retries, || {
            tries += 1;
            if tries > 1 {
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.try_once(&parsed, &path)
        })
        .await
    }

    async fn try_once<T: serde::de::DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        path: &str,
    ) -> Attempt<T, GraphError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |detail: String| {
            Attempt::Done(Err(GraphError::Transport {
                path: path.to_string(),
                detail,
            }))
        };
        let resp = match self
            .http
            .get(url.clone())
            .bearer_auth(self.token.expose())
            .header("Accept", "application/json")
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) => return transport(error_chain(&e.without_url())),
        };
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            // The client follows redirects on graph_url's origin only: this one leads
            // elsewhere.
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok());
            return Attempt::Done(Err(GraphError::ForeignLink {
                path: path.to_string(),
                detail: match to {
                    Some(to) => format!("a {status} redirect: {}", foreign(&self.base, &to)),
                    None => format!("a {status} redirect without a usable Location"),
                },
            }));
        }
        let retry_after = retry_after(&resp);
        let body = match read_body(resp).await {
            Ok(body) => body,
            Err(e) => return transport(e.to_string()),
        };
        if (200..300).contains(&status) {
            return Attempt::Done(body.json().map_err(|detail| GraphError::Malformed {
                path: path.to_string(),
                detail,
            }));
        }
        let error = status_error(status, &body, path);
        if is_retryable(status) {
            Attempt::Again {
                status,
                retry_after,
                error,
            }
        } else {
            Attempt::Done(Err(error))
        }
    }
}

/// Why `link` is refused: its origin and the configured one (never its query, which
/// may hold a delta token).
pub fn foreign(base: &reqwest::Url, link: &reqwest::Url) -> String {
    format!(
        "the link points at {}, not at graph_url's {}; refusing to send the token there",
        link.origin().ascii_serialization(),
        base.origin().ascii_serialization()
    )
}

fn status_error(status: u16, body: &Body, path: &str) -> GraphError {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    // A gateway may quote the request, token included.
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&body.bytes) {
        Ok(b) => (
            crate::redact::scrub(&b.error.code),
            crate::redact::scrub(&b.error.message),
        ),
        Err(_) => (String::new(), body.excerpt()),
    };
    GraphError::Status {
        status,
        code,
        message,
        path: path.to_string(),
    }
}

pub use crate::http::parse_retry_after;
use crate::http::{error_chain, is_retryable, read_body, retry_after, Attempt, Body, Retries};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_whole_and_decimal_seconds() {
        assert_eq!(parse_retry_after("10"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn expired_and_reset_tokens_ask_for_a_resync() {
        let e = |status, code: &str| GraphError::Status {
            status,
            code: code.into(),
            message: String::new(),
            path: String::new(),
        };
        assert!(e(400, "syncStateNotFound").needs_resync());
        assert!(e(400, "resyncRequired").needs_resync());
        assert!(e(410, "").needs_resync());
        assert!(!e(400, "Request_UnsupportedQuery").needs_resync());
    }
}
