//! The Directory API calls we make (`users.list`, `members.list`), with serde types
//! for just the fields we map, and bounded exponential backoff with jitter.

use std::time::Duration;

use backon::BackoffBuilder;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Tokens;
use super::GoogleError;

/// `fields=` mask for `users.list`: only what the mapping reads.
pub const USER_FIELDS: &str = "nextPageToken,users(id,primaryEmail,name(givenName,familyName,fullName),suspended,archived,orgUnitPath,organizations(department,title,primary),externalIds(value,type),relations(value,type))";
const MEMBER_FIELDS: &str = "nextPageToken,members(id,email,type)";
pub const MAX_USERS_PER_PAGE: u32 = 500;
const MAX_MEMBERS_PER_PAGE: u32 = 200;

/// How failed calls are retried. The base delay is a parameter so tests stay fast.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl RetryPolicy {
    /// Google's advice: `2^n s + random ms`, here capped at 32 s and 6 retries.
    /// `LEARNER_SYNC_GOOGLE_RETRY_BASE_MS` shortens the base delay (tests only).
    pub fn from_env() -> RetryPolicy {
        let base_ms = std::env::var("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000);
        RetryPolicy {
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(base_ms.saturating_mul(32)),
            max_retries: 6,
        }
    }

    fn delays(&self) -> impl Iterator<Item = Duration> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.base_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
            .build()
    }
}

/// Where users are listed: `customer=` or `domain=`.
#[derive(Debug, Clone)]
pub enum Tenant {
    Customer(String),
    Domain(String),
}

pub struct Directory {
    http: reqwest::Client,
    base: reqwest::Url,
    tenant: Tenant,
    retry: RetryPolicy,
    pub requests: u64,
    /// Calls repeated after throttling, a server error or a broken body (shared with
    /// the source, which counts over its life).
    pub retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersPage {
    #[serde(default)]
    users: Vec<ApiUser>,
    next_page_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiUser {
    pub id: String,
    pub primary_email: String,
    #[serde(default)]
    pub name: Option<ApiName>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub suspended: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub archived: bool,
    #[serde(default)]
    pub org_unit_path: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub organizations: Vec<ApiOrganization>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub external_ids: Vec<ApiTypedValue>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub relations: Vec<ApiTypedValue>,
}

/// A field sent as `null` reads like a missing one (the discovery document does not
/// say which Google sends for an empty list; tolerate both).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiName {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiOrganization {
    pub department: Option<String>,
    pub title: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub primary: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiTypedValue {
    pub value: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MembersPage {
    #[serde(default)]
    members: Vec<ApiMember>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiMember {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiErrorBody {
    error: ApiErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ApiErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ApiErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ApiErrorItem {
    #[serde(default)]
    reason: String,
}

impl Directory {
    pub fn new(
        base: reqwest::Url,
        tenant: Tenant,
        retry: RetryPolicy,
        request_timeout: Duration,
    ) -> Result<Directory, GoogleError> {
        let http = crate::http::client(request_timeout).map_err(GoogleError::Transport)?;
        Ok(Directory {
            http,
            base,
            tenant,
            retry,
            requests: 0,
            retries: Default::default(),
        })
    }

    fn endpoint(&self, segments: &[&str]) -> Result<reqwest::Url, GoogleError> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| {
                GoogleError::Transport(format!("directory_url {} cannot be a base", self.base))
            })?;
            path.pop_if_empty();
            path.extend(["admin", "directory", "v1"]);
            path.extend(segments);
        }
        Ok(url)
    }

    fn users_url(
        &self,
        max_results: u32,
        query: Option<&str>,
        page_token: Option<&str>,
    ) -> Result<reqwest::Url, GoogleError> {
        let mut url = self.endpoint(&["users"])?;
        {
            let mut q = url.query_pairs_mut();
            match &self.tenant {
                Tenant::Customer(c) => q.append_pair("customer", c),
                Tenant::Domain(d) => q.append_pair("domain", d),
            };
            q.append_pair("maxResults", &max_results.to_string());
            q.append_pair("fields", USER_FIELDS);
            if let Some(query) = query {
                q.append_pair("query", query);
            }
            if let Some(t) = page_token {
                q.append_pair("pageToken", t);
            }
        }
        Ok(url)
    }

    /// Every user of the customer or domain, page by page, each passed through `map`
    /// as its page arrives (so raw pages are not all held at once). Any failed page
    /// fails the lot.
    pub async fn list_users<T>(
        &mut self,
        tokens: &Tokens,
        mut map: impl FnMut(ApiUser) -> T,
    ) -> Result<Vec<T>, GoogleError> {
        let mut users = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let url = self.users_url(MAX_USERS_PER_PAGE, None, page_token.as_deref())?;
            let page: UsersPage = self.get_json(tokens, url, "users.list").await?;
            users.extend(page.users.into_iter().map(&mut map));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => page_token = Some(t),
                None => return Ok(users),
            }
        }
    }

    /// One page of users (at most `max_results`), optionally filtered by `query`. For `check`.
    pub async fn sample_users(
        &mut self,
        tokens: &Tokens,
        max_results: u32,
        query: Option<&str>,
    ) -> Result<Vec<ApiUser>, GoogleError> {
        let url = self.users_url(max_results, query, None)?;
        let page: UsersPage = self.get_json(tokens, url, "users.list").await?;
        Ok(page.users)
    }

    /// The user ids of a group, nested groups included (`includeDerivedMembership`).
    pub async fn group_user_ids(
        &mut self,
        tokens: &Tokens,
        group: &str,
        max_pages: Option<usize>,
    ) -> Result<Vec<String>, GoogleError> {
        let mut ids = Vec::new();
        let mut page_token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = self.endpoint(&["groups", group, "members"])?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("includeDerivedMembership", "true");
                q.append_pair("maxResults", &MAX_MEMBERS_PER_PAGE.to_string());
                q.append_pair("fields", MEMBER_FIELDS);
                if let Some(t) = &page_token {
                    q.append_pair("pageToken", t);
                }
            }
            let page: MembersPage = self
                .get_json(tokens, url, &format!("members.list of group {group}"))
                .await?;
            pages += 1;
            ids.extend(
                page.members
                    .into_iter()
                    .filter(|m| m.kind.as_deref().is_none_or(|k| k == "USER"))
                    .filter_map(|m| m.id),
            );
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if max_pages.is_none_or(|max| pages < max) => page_token = Some(t),
                _ => return Ok(ids),
            }
        }
    }

    /// GET with a bearer token; retries throttling, 5xx and broken bodies with backoff.
    async fn get_json<T: DeserializeOwned>(
        &mut self,
        tokens: &Tokens,
        url: reqwest::Url,
        what: &str,
    ) -> Result<T, GoogleError> {
        let mut delays = self.retry.delays();
        loop {
            let (err, retry_after) = match self.attempt(tokens, &url, what).await {
                Ok(v) => return Ok(v),
                Err(Attempt::Permanent(e)) => return Err(e),
                Err(Attempt::Transient(e, retry_after)) => (e, retry_after),
            };
            let Some(delay) = delays.next() else {
                return Err(GoogleError::GaveUp {
                    what: what.to_string(),
                    attempts: self.retry.max_retries + 1,
                    last: Box::new(err),
                });
            };
            // As for Graph and SCIM; `max_delay` bounds only the delays we choose.
            let delay =
                retry_after.map_or(delay, |ra| ra.min(crate::http::MAX_RETRY_AFTER).max(delay));
            tracing::warn!(
                request = what,
                error = %err,
                delay_ms = delay.as_millis() as u64,
                "Directory API call failed; retrying"
            );
            self.retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt<T: DeserializeOwned>(
        &mut self,
        tokens: &Tokens,
        url: &reqwest::Url,
        what: &str,
    ) -> Result<T, Attempt> {
        let token = tokens.token().await.map_err(|e| {
            if e.is_transient() {
                Attempt::Transient(e, None)
            } else {
                Attempt::Permanent(e)
            }
        })?;
        self.requests += 1;
        let resp = self
            .http
            .get(url.clone())
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                // The cause (refused, reset, timed out), without the long URL.
                let cause = crate::http::error_chain(&e.without_url());
                Attempt::Transient(GoogleError::Transport(format!("{what}: {cause}")), None)
            })?;
        let status = resp.status();
        let retry_after = crate::http::retry_after(&resp);
        // A body cut short (connection closed before Content-Length) fails here.
        let body = crate::http::read_body(resp).await.map_err(|e| match e {
            // The same page would be as large next time.
            crate::http::BodyError::TooLarge => {
                Attempt::Permanent(GoogleError::Malformed(format!("{what}: {e}")))
            }
            crate::http::BodyError::Read(_) => {
                Attempt::Transient(GoogleError::Transport(format!("{what}: {e}")), None)
            }
        })?;
        if status.is_success() {
            return body.json().map_err(|detail| {
                Attempt::Transient(GoogleError::Malformed(format!("{what}: {detail}")), None)
            });
        }
        let (message, reasons) = match serde_json::from_slice::<ApiErrorBody>(&body.bytes) {
            Ok(b) => (
                b.error.message,
                b.error
                    .errors
                    .into_iter()
                    .map(|e| e.reason)
                    .collect::<Vec<_>>(),
            ),
            Err(_) => (body.excerpt(), Vec::new()),
        };
        let throttled = reasons.iter().any(|r| {
            matches!(
                r.as_str(),
                "userRateLimitExceeded" | "quotaExceeded" | "rateLimitExceeded"
            )
        });
        let err = GoogleError::Api {
            what: what.to_string(),
            status: status.as_u16(),
            reason: reasons.first().cloned().unwrap_or_default(),
            message,
        };
        if status.as_u16() == 429
            || status.is_server_error()
            || (status.as_u16() == 403 && throttled)
        {
            Err(Attempt::Transient(err, retry_after))
        } else {
            Err(Attempt::Permanent(err))
        }
    }
}

enum Attempt {
    Permanent(GoogleError),
    Transient(GoogleError, Option<Duration>),
}
