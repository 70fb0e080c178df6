//! The Directory API calls we make (`users.list`, `members.list`), with serde types
//! for just the fields we map, and bounded exponential backoff with jitter.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Tokens;
use super::GoogleError;
use crate::http::Attempt;

/// `fields=` mask for `users.list`: only what the mapping reads, and `kind`, which
/// tells a users listing from any other 200 (a proxy's `{}` would otherwise read as
/// an empty last page).
pub const USER_FIELDS: &str = "nextPageToken,users(id,primaryEmail,name(givenName,familyName,fullName),suspended,archived,orgUnitPath,organizations(department,title,primary),externalIds(value,type),relations(value,type)),kind";
const MEMBER_FIELDS: &str = "nextPageToken,members(id,email,type),kind";
const USERS_KIND: &str = "admin#directory#users";
const USER_KIND: &str = "admin#directory#user";
const MEMBERS_KIND: &str = "admin#directory#members";
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

    fn retries(&self) -> crate::http::Retries {
        crate::http::Retries::new(self.base_delay, self.max_delay, self.max_retries + 1)
    }
}

/// How far one listing may go before it is refused as never-ending: far beyond the
/// largest real tenants, so only a paging loop or a hostile endpoint gets there.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub max_pages: usize,
    pub max_users: usize,
}

pub const MAX_PAGES: usize = 100_000;
pub const MAX_USERS: usize = 5_000_000;

impl ReadLimits {
    /// `LEARNER_SYNC_GOOGLE_MAX_PAGES` / `_MAX_USERS` can only lower the limits
    /// (tests reach them without 100,000 requests).
    pub fn from_env() -> ReadLimits {
        let lowered = |var: &str, max: usize| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .map_or(max, |v| v.clamp(1, max))
        };
        ReadLimits {
            max_pages: lowered("LEARNER_SYNC_GOOGLE_MAX_PAGES", MAX_PAGES),
            max_users: lowered("LEARNER_SYNC_GOOGLE_MAX_USERS", MAX_USERS),
        }
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
    limits: ReadLimits,
    /// Requests sent (an atomic so that a page can be fetched while the last is mapped).
    requests: std::sync::atomic::AtomicU64,
    /// Calls repeated after throttling, a server error or a broken body (shared with
    /// the source, which counts over its life).
    pub retries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// What the mappings and filters read: widens `fields` and is taken from each user.
    pub attributes: crate::mapping::Attributes,
}

/// A page of `users.list`. Users stay raw JSON until `checked_user` has found an
/// id and a primaryEmail, so a bad user is refused by its id, not by a parse error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsersPage {
    kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    users: Vec<serde_json::Value>,
    next_page_token: Option<String>,
}

/// A page type and the `kind` Google gives it.
trait Page {
    fn kind(&self) -> Option<&str>;
}

impl Page for UsersPage {
    fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }
}

/// The answer of `users.get`: one user resource, its fields kept raw for `checked_user`.
#[derive(Debug, Deserialize)]
struct UserResource {
    kind: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Page for UserResource {
    fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }
}

/// A listing's field mask (`nextPageToken,users(...),kind`) as the mask of one user
/// (`...,kind`), so `users.get` reads exactly what `users.list` reads.
fn single_user_fields(list: &str) -> String {
    let Some(start) = list.find("users(") else {
        return list.to_string();
    };
    let inner = &list[start + "users(".len()..];
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return format!("{},kind", &inner[..i]);
                }
            }
            _ => {}
        }
    }
    list.to_string()
}

/// `groups.list`: `{"kind":"admin#directory#groups","groups":[...],"nextPageToken":...}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupsPage {
    kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    groups: Vec<ApiGroup>,
    next_page_token: Option<String>,
}

impl Page for GroupsPage {
    fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }
}

/// A group (`groups.get` answers one, with `kind` `admin#directory#group`).
#[derive(Debug, Clone, Deserialize)]
pub struct ApiGroup {
    pub kind: Option<String>,
    pub id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

impl Page for ApiGroup {
    fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }
}

const GROUPS_KIND: &str = "admin#directory#groups";
const GROUP_KIND: &str = "admin#directory#group";
const GROUP_FIELDS: &str = "kind,id,email,name";

impl Page for MembersPage {
    fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }
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
    /// The mapped attributes, under `mapping::attr::PREFIX` (taken from the raw user).
    #[serde(skip)]
    pub attributes: crate::model::Extra,
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
    kind: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
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
            limits: ReadLimits::from_env(),
            requests: Default::default(),
            retries: Default::default(),
            attributes: Default::default(),
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
            let (fields, schemas) = self.attributes.google_query(USER_FIELDS);
            q.append_pair("fields", &fields);
            if !schemas.is_empty() {
                // Custom attributes come only with a projection that names their schemas.
                q.append_pair("projection", "custom");
                q.append_pair("customFieldMask", &schemas.join(","));
            }
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
    /// as its page arrives (so raw pages are not all held at once). The next page is
    /// asked for as soon as a page's `nextPageToken` is known, and is in flight while
    /// this one is mapped. Any failed page fails the lot.
    pub async fn list_users<T>(
        &mut self,
        tokens: &Tokens,
        mut map: impl FnMut(ApiUser) -> T,
    ) -> Result<Vec<T>, GoogleError> {
        let this = &*self;
        let mut users = Vec::new();
        let mut paging = Paging::new("users.list", this.limits);
        let fetch = |token: Option<&str>| {
            let url = this.users_url(MAX_USERS_PER_PAGE, None, token);
            async move {
                this.get_json::<UsersPage>(tokens, url?, "users.list", USERS_KIND)
                    .await
            }
        };
        let mut page = fetch(None).await?;
        loop {
            paging.count(page.users.len())?;
            let more = paging.next(page.next_page_token.take())?;
            let next = async {
                match more {
                    true => Some(fetch(paging.token()).await),
                    false => None,
                }
            };
            let mapped = async {
                for raw in std::mem::take(&mut page.users) {
                    let mut attributes = crate::model::Extra::default();
                    if let Some(obj) = raw.as_object() {
                        this.attributes.capture(obj, false, &mut attributes);
                    }
                    let mut user = checked_user(raw)?;
                    user.attributes = attributes;
                    users.push(map(user));
                }
                Ok::<(), GoogleError>(())
            };
            // `next` goes first: its request is on its way before the mapping starts.
            let (next, mapped) = tokio::join!(next, mapped);
            mapped?;
            match next {
                Some(next) => page = next?,
                None => return Ok(users),
            }
        }
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One page of users (at most `max_results`), optionally filtered by `query`. For `check`.
    pub async fn sample_users(
        &mut self,
        tokens: &Tokens,
        max_results: u32,
        query: Option<&str>,
    ) -> Result<Vec<ApiUser>, GoogleError> {
        let url = self.users_url(max_results, query, None)?;
        let page: UsersPage = self.get_json(tokens, url, "users.list", USERS_KIND).await?;
        page.users.into_iter().map(checked_user).collect()
    }

    /// `users.get`: one user by id, primary email or alias, with the fields a listing
    /// asks for (`None`: Google knows no such user).
    pub async fn get_user(
        &mut self,
        tokens: &Tokens,
        key: &str,
    ) -> Result<Option<ApiUser>, GoogleError> {
        let mut url = self.endpoint(&["users", key])?;
        {
            let (fields, schemas) = self.attributes.google_query(USER_FIELDS);
            let mut q = url.query_pairs_mut();
            q.append_pair("fields", &single_user_fields(&fields));
            if !schemas.is_empty() {
                q.append_pair("projection", "custom");
                q.append_pair("customFieldMask", &schemas.join(","));
            }
        }
        let one: UserResource = match self.get_json(tokens, url, "users.get", USER_KIND).await {
            Ok(one) => one,
            Err(GoogleError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let raw = serde_json::Value::Object(one.rest);
        let mut attributes = crate::model::Extra::default();
        if let Some(obj) = raw.as_object() {
            self.attributes.capture(obj, false, &mut attributes);
        }
        let mut user = checked_user(raw)?;
        user.attributes = attributes;
        Ok(Some(user))
    }

    /// Every group of the customer or domain (`groups.list`).
    pub async fn list_groups(&mut self, tokens: &Tokens) -> Result<Vec<ApiGroup>, GoogleError> {
        let mut groups = Vec::new();
        let mut paging = Paging::new("groups.list", self.limits);
        loop {
            let mut url = self.endpoint(&["groups"])?;
            {
                let mut q = url.query_pairs_mut();
                match &self.tenant {
                    Tenant::Customer(c) => q.append_pair("customer", c),
                    Tenant::Domain(d) => q.append_pair("domain", d),
                };
                q.append_pair("maxResults", "200");
                q.append_pair(
                    "fields",
                    &format!("kind,nextPageToken,groups({GROUP_FIELDS})"),
                );
                if let Some(t) = paging.token() {
                    q.append_pair("pageToken", t);
                }
            }
            let page: GroupsPage = self
                .get_json(tokens, url, "groups.list", GROUPS_KIND)
                .await?;
            paging.count(page.groups.len())?;
            groups.extend(page.groups);
            if !paging.next(page.next_page_token)? {
                return Ok(groups);
            }
        }
    }

    /// One group by id or email (`groups.get`).
    pub async fn get_group(&mut self, tokens: &Tokens, key: &str) -> Result<ApiGroup, GoogleError> {
        let mut url = self.endpoint(&["groups", key])?;
        url.query_pairs_mut().append_pair("fields", GROUP_FIELDS);
        self.get_json(tokens, url, &format!("groups.get of {key}"), GROUP_KIND)
            .await
    }

    /// The user ids of a group, nested groups included (`includeDerivedMembership`).
    pub async fn group_user_ids(
        &mut self,
        tokens: &Tokens,
        group: &str,
        max_pages: Option<usize>,
    ) -> Result<Vec<String>, GoogleError> {
        let mut ids = Vec::new();
        let what = format!("members.list of group {group}");
        let mut paging = Paging::new(&what, self.limits);
        let mut pages = 0;
        loop {
            let mut url = self.endpoint(&["groups", group, "members"])?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("includeDerivedMembership", "true");
                q.append_pair("maxResults", &MAX_MEMBERS_PER_PAGE.to_string());
                q.append_pair("fields", MEMBER_FIELDS);
                if let Some(t) = paging.token() {
                    q.append_pair("pageToken", t);
                }
            }
            let page: MembersPage = self.get_json(tokens, url, &what, MEMBERS_KIND).await?;
            pages += 1;
            paging.count(page.members.len())?;
            for m in page.members {
                if m.kind.as_deref().is_some_and(|k| k != "USER") {
                    continue;
                }
                // Dropping it would put the user out of scope (and deactivate them).
                match m.id.filter(|id| !id.trim().is_empty()) {
                    Some(id) => ids.push(id),
                    None => {
                        return Err(GoogleError::Refused(format!(
                            "{what}: a user member without an id; refusing the listing (nothing was changed)"
                        )))
                    }
                }
            }
            if max_pages.is_some_and(|max| pages >= max) || !paging.next(page.next_page_token)? {
                return Ok(ids);
            }
        }
    }

    /// GET with a bearer token; retries throttling, 5xx, transport errors and broken
    /// bodies with backoff (the loop every remote shares, `http::retrying`).
    async fn get_json<T: DeserializeOwned + Page>(
        &self,
        tokens: &Tokens,
        url: reqwest::Url,
        what: &str,
        kind: &str,
    ) -> Result<T, GoogleError> {
        let sent = std::cell::Cell::new(0u64);
        let mut tries = 0usize;
        let this = self;
        let attempts = this.retry.max_retries + 1;
        let result = crate::http::retrying("the Directory API", this.retry.retries(), || {
            tries += 1;
            if tries > 1 {
                this.retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let sent = &sent;
            let url = &url;
            async move {
                match this.attempt(tokens, url, what, kind, sent).await {
                    Ok(v) => Attempt::Done(Ok(v)),
                    Err(Failure::Permanent(e)) => Attempt::Done(Err(e)),
                    Err(Failure::Transient(e, status, retry_after)) => {
                        tracing::warn!(request = what, error = %e, "Directory API call failed");
                        Attempt::Again {
                            status,
                            retry_after,
                            error: GoogleError::GaveUp {
                                what: what.to_string(),
                                attempts,
                                last: Box::new(e),
                            },
                        }
                    }
                }
            }
        })
        .await;
        self.requests
            .fetch_add(sent.get(), std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn attempt<T: DeserializeOwned + Page>(
        &self,
        tokens: &Tokens,
        url: &reqwest::Url,
        what: &str,
        kind: &str,
        sent: &std::cell::Cell<u64>,
    ) -> Result<T, Failure> {
        let token = tokens.token().await.map_err(|e| {
            if e.is_transient() {
                Failure::Transient(e, 0, None)
            } else {
                Failure::Permanent(e)
            }
        })?;
        sent.set(sent.get() + 1);
        let resp = self
            .http
            .get(url.clone())
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                // The cause (refused, reset, timed out), without the long URL.
                let cause = crate::http::error_chain(&e.without_url());
                Failure::Transient(GoogleError::Transport(format!("{what}: {cause}")), 0, None)
            })?;
        let status = resp.status();
        let code = status.as_u16();
        let retry_after = crate::http::retry_after(&resp);
        // A body cut short (connection closed before Content-Length) fails here.
        let body = crate::http::read_body(resp).await.map_err(|e| match e {
            // The same page would be as large next time.
            crate::http::BodyError::TooLarge => {
                Failure::Permanent(GoogleError::Malformed(format!("{what}: {e}")))
            }
            crate::http::BodyError::Read(_) => {
                Failure::Transient(GoogleError::Transport(format!("{what}: {e}")), 0, None)
            }
        })?;
        if status.is_success() {
            let page: T = body.json().map_err(|detail| {
                Failure::Transient(
                    GoogleError::Malformed(format!("{what}: {detail}")),
                    code,
                    None,
                )
            })?;
            // Asked for in the field mask, so Google always sends it; a 200 without
            // it is someone else's answer (and may be gone on the next try).
            if page.kind() != Some(kind) {
                return Err(Failure::Transient(
                    GoogleError::Malformed(format!(
                        "{what}: a 200 answer without kind \"{kind}\" is not a Directory API listing"
                    )),
                    code,
                    None,
                ));
            }
            return Ok(page);
        }
        let (message, reasons) = match serde_json::from_slice::<ApiErrorBody>(&body.bytes) {
            // The remote's words may echo the bearer token.
            Ok(b) => (
                crate::redact::scrub(&b.error.message),
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
            reason: crate::redact::scrub(&reasons.first().cloned().unwrap_or_default()),
            message,
        };
        if status.as_u16() == 429
            || status.is_server_error()
            || (status.as_u16() == 403 && throttled)
        {
            Err(Failure::Transient(err, code, retry_after))
        } else {
            Err(Failure::Permanent(err))
        }
    }
}

/// One try's failure: for good, or worth another try (with the status, 0 when no
/// answer came, and the remote's `Retry-After`).
enum Failure {
    Permanent(GoogleError),
    Transient(GoogleError, u16, Option<Duration>),
}

/// One listing's page tokens and counts: refuses a token seen before (the listing
/// loops) and a listing past `ReadLimits` (it never ends), before either can hold
/// a run forever or fill memory.
struct Paging<'a> {
    what: &'a str,
    limits: ReadLimits,
    token: Option<String>,
    seen: std::collections::BTreeSet<String>,
    pages: usize,
    items: usize,
}

impl<'a> Paging<'a> {
    fn new(what: &'a str, limits: ReadLimits) -> Paging<'a> {
        Paging {
            what,
            limits,
            token: None,
            seen: Default::default(),
            pages: 0,
            items: 0,
        }
    }

    /// The token for the next request (`None` for the first page).
    fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Count a page of `items` entries that just arrived.
    fn count(&mut self, items: usize) -> Result<(), GoogleError> {
        self.pages += 1;
        self.items = self.items.saturating_add(items);
        if self.items > self.limits.max_users {
            return Err(GoogleError::Refused(format!(
                "{}: more than {} entries in one listing; refusing it as never-ending (nothing was changed)",
                self.what, self.limits.max_users
            )));
        }
        Ok(())
    }

    /// Take the page's `nextPageToken`; whether there is another page to ask for.
    fn next(&mut self, next: Option<String>) -> Result<bool, GoogleError> {
        let Some(t) = next.filter(|t| !t.is_empty()) else {
            return Ok(false);
        };
        if self.pages >= self.limits.max_pages {
            return Err(GoogleError::Refused(format!(
                "{}: still a nextPageToken after {} pages; refusing the listing as never-ending (nothing was changed)",
                self.what, self.limits.max_pages
            )));
        }
        if !self.seen.insert(t.clone()) {
            return Err(GoogleError::Refused(format!(
                "{}: page {} gave a nextPageToken already seen; the listing loops, refusing it (nothing was changed)",
                self.what, self.pages
            )));
        }
        self.token = Some(t);
        Ok(true)
    }
}

/// A raw user as an `ApiUser`, refused (by its id) without a usable id and
/// primaryEmail: the primaryEmail is the learner's user_name, and a user written
/// without one would be a learner nobody can sign in as.
fn checked_user(raw: serde_json::Value) -> Result<ApiUser, GoogleError> {
    use serde_json::Value;
    let refused = |message: String| {
        GoogleError::Refused(format!("users.list: {message}; refusing the listing, like a bad row refuses a CSV file (nothing was changed)"))
    };
    let id = match raw.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        _ => return Err(refused("a user without a usable id".to_string())),
    };
    let problem = match raw.get("primaryEmail") {
        Some(Value::String(e)) if !e.trim().is_empty() => None,
        Some(Value::String(_)) => Some("an empty primaryEmail"),
        None | Some(Value::Null) => Some("no primaryEmail"),
        Some(_) => Some("a primaryEmail that is not a string"),
    };
    if let Some(problem) = problem {
        return Err(refused(format!("user id {id} has {problem}")));
    }
    serde_json::from_value(raw).map_err(|e| {
        // serde quotes the offending value; a long one is cut.
        let detail: String = e.to_string().chars().take(200).collect();
        refused(format!("user id {id} is malformed ({detail})"))
    })
}
