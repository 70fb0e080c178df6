//! Small HTTP helpers every remote (Graph, the Directory API, SCIM) shares.

use std::time::Duration;

use serde::de::DeserializeOwned;

/// The largest answer any remote may send. A Graph page of 999 users or a Directory
/// page of 500 is a few MiB; anything this big is a broken proxy or a hostile server,
/// and reading it whole could exhaust the VM's memory.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A connection that takes longer than this to open fails even when the request
/// timeout is longer: an unreachable host should not hold a run for minutes.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Redirects followed per request, all on the request's own origin.
const MAX_REDIRECTS: usize = 5;

/// The client every remote uses: one request (body included) may take `timeout`. A
/// redirect is followed only to the same scheme, host and port, as a paging link is
/// ([`same_origin`]); a redirect elsewhere comes back as the 3xx answer it is, and the
/// caller fails on it.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let from = attempt.previous().last().cloned();
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.stop()
        } else if from.is_some_and(|from| same_origin(&from, attempt.url())) {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .timeout(timeout)
        .redirect(redirects)
        .user_agent(concat!("learner-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Why an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than {} MiB", MAX_RESPONSE_BYTES >> 20)]
    TooLarge,
    /// Cut short, reset or too slow (the request timeout covers the body too).
    #[error("reading the answer: {0}")]
    Read(String),
}

/// An answer's body, read whole but never past [`MAX_RESPONSE_BYTES`].
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// Read `resp`'s body, refusing a declared or actual size over the cap before the
/// excess is held in memory.
pub async fn read_body(mut resp: reqwest::Response) -> Result<Body, BodyError> {
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let declared = resp.content_length().unwrap_or(0);
    if declared > MAX_RESPONSE_BYTES as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(declared as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Read(error_chain(&e.without_url())))?
    {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        content_type,
    })
}

impl Body {
    /// The body as JSON. Any content type is accepted when the body parses (some
    /// providers send JSON as `text/plain`); when it does not, the error says what
    /// came instead, e.g. an HTML page from a proxy in the way.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.bytes).map_err(|e| match self.foreign_type() {
            Some(ct) => format!("the answer is {ct}, not JSON{}", self.title_note()),
            None => format!("unreadable JSON: {e}"),
        })
    }

    /// A short, printable account of an error body that is not the remote's JSON
    /// error: an HTML page's title, else the start of the text, secrets masked.
    pub fn excerpt(&self) -> String {
        if let Some(title) = self.html_title() {
            return format!("an HTML page titled \"{title}\"");
        }
        // Scrubbed before it is cut short, so that no part of an echoed secret is left.
        let text: String = crate::redact::scrub(&String::from_utf8_lossy(&self.bytes))
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        text.trim().to_string()
    }

    /// The content type when it is declared and is not JSON.
    fn foreign_type(&self) -> Option<&str> {
        let ct = self.content_type.as_deref()?;
        let essence = ct.split(';').next().unwrap_or(ct).trim();
        (!essence.to_ascii_lowercase().contains("json")).then_some(essence)
    }

    fn title_note(&self) -> String {
        self.html_title()
            .map(|t| format!(" (an HTML page titled \"{t}\": is a proxy or firewall in the way?)"))
            .unwrap_or_default()
    }

    fn html_title(&self) -> Option<String> {
        let head = &self.bytes[..self.bytes.len().min(64 * 1024)];
        let text = String::from_utf8_lossy(head);
        let lower = text.to_ascii_lowercase();
        let start = lower.find("<title")?;
        let open_end = start + lower[start..].find('>')? + 1;
        let close = open_end + lower[open_end..].find("</title")?;
        let title: String = crate::redact::scrub(&text[open_end..close])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(120)
            .collect();
        Some(title)
    }
}

/// The longest `Retry-After` any remote is waited for; a longer one fails the run, and
/// the next run (the next tick, in the daemon) tries again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// The statuses that say "try again later".
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// An answer's `Retry-After`, when it gives one in seconds.
pub fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// When to try a throttled or failing request again: after the remote's `Retry-After`
/// (up to [`MAX_RETRY_AFTER`]), else after an exponential, jittered delay; `attempts`
/// tries in all.
pub struct Retries(backon::ExponentialBackoff);

impl Retries {
    pub fn new(min_delay: Duration, max_delay: Duration, attempts: usize) -> Retries {
        use backon::BackoffBuilder as _;
        Retries(
            backon::ExponentialBuilder::default()
                .with_min_delay(min_delay)
                .with_max_delay(max_delay)
                .with_max_times(attempts.saturating_sub(1))
                .with_jitter()
                .build(),
        )
    }

    /// How long to wait before the next try; `None`: give up.
    pub fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        match (retry_after, self.0.next()) {
            (Some(after), Some(_)) if after <= MAX_RETRY_AFTER => Some(after),
            (None, Some(delay)) => Some(delay),
            _ => None,
        }
    }
}

/// What one try of a request came to.
pub enum Attempt<T, E> {
    /// An answer to keep, good or bad.
    Done(Result<T, E>),
    /// "Try again later" (`status`, with the remote's `Retry-After` if it gave one;
    /// `status` is 0 when no answer came: a transport error or a broken body);
    /// `error` is the run's error when no try is left.
    Again {
        status: u16,
        retry_after: Option<Duration>,
        error: E,
    },
}

/// Run `attempt` until it is done or `retries` gives up, waiting as [`Retries`] says in
/// between: the one send/classify/sleep loop of the remotes. `remote` names the remote
/// in the log line of each wait.
pub async fn retrying<T, E, F, Fut>(
    remote: &str,
    mut retries: Retries,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T, E>>,
{
    loop {
        match attempt().await {
            Attempt::Done(result) => return result,
            Attempt::Again {
                status,
                retry_after,
                error,
            } => {
                let Some(wait) = retries.next_wait(retry_after) else {
                    return Err(error);
                };
                tracing::info!(
                    remote,
                    status,
                    wait_ms = wait.as_millis() as u64,
                    "the remote asked us to wait; retrying"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `Retry-After` in (possibly decimal) seconds, e.g. `10` or `2.128`. An HTTP date is
/// not understood: the caller falls back to its own backoff.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// An error with its causes, `outer: inner: innermost`, for messages that must say
/// what actually failed (reqwest hides the cause of a connection error one level down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::redact::scrub(&text)
}

/// `{base}/{path}` with the query pairs given (`path` may hold several segments).
pub fn join(base: &reqwest::Url, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
    let mut url = base.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty().extend(path.split('/'));
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

/// Whether `link` has the scheme, host and port of `base` (the configured API address).
/// A paging or delta link is followed, and stored as a cursor, only when it does: the
/// request carries the bearer token, and a link to anywhere else would hand it over.
pub fn same_origin(base: &reqwest::Url, link: &reqwest::Url) -> bool {
    // Tuple origins compare scheme, host and port (the default port filled in), so
    // `https://h` and `https://h:443` agree; an opaque origin (`data:`, `file:`) equals
    // nothing.
    let (a, b) = (base.origin(), link.origin());
    a.is_tuple() && a == b
}

/// `link` parsed and checked against `base` with [`same_origin`]; the error names the
/// link's origin only (never its query, which may hold a cursor).
pub fn checked_link(base: &reqwest::Url, link: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(link).map_err(|e| format!("the link is not a URL: {e}"))?;
    if same_origin(base, &url) {
        Ok(url)
    } else {
        Err(format!(
            "the link points at {}, not at the configured {}: refusing to send the token there",
            url.origin().ascii_serialization(),
            base.origin().ascii_serialization()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_whole_and_decimal_seconds_only() {
        assert_eq!(parse_retry_after("10"), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_retry_after("2.128"),
            Some(Duration::from_millis(2128))
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    }

    #[test]
    fn retries_honour_retry_after_up_to_the_cap_and_stop_after_the_attempts() {
        let mut r = Retries::new(Duration::from_millis(1), Duration::from_millis(2), 3);
        assert_eq!(
            r.next_wait(Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert!(r
            .next_wait(None)
            .is_some_and(|d| d <= Duration::from_millis(4)));
        assert_eq!(r.next_wait(None), None, "three tries in all");
        let mut r = Retries::new(Duration::from_millis(1), Duration::from_millis(2), 3);
        assert_eq!(r.next_wait(Some(MAX_RETRY_AFTER * 2)), None);
    }

    fn body(ct: Option<&str>, text: &str) -> Body {
        Body {
            bytes: text.as_bytes().to_vec(),
            content_type: ct.map(str::to_string),
        }
    }

    #[test]
    fn json_with_a_foreign_content_type_is_accepted_when_it_parses() {
        let v: serde_json::Value = body(Some("text/plain"), r#"{"a":1}"#).json().unwrap();
        assert_eq!(v["a"], 1);
    }

    #[test]
    fn an_html_page_is_named_as_such_with_its_title() {
        let page = "<html><head><TITLE>\n  Access   Denied </TITLE></head><body>x</body></html>";
        let err = body(Some("text/html; charset=utf-8"), page)
            .json::<serde_json::Value>()
            .unwrap_err();
        assert!(
            err.starts_with("the answer is text/html, not JSON"),
            "{err}"
        );
        assert!(err.contains("\"Access Denied\""), "{err}");
        assert_eq!(
            body(Some("text/html"), page).excerpt(),
            "an HTML page titled \"Access Denied\""
        );
    }

    #[test]
    fn truncated_json_with_a_json_type_says_where_it_broke() {
        let err = body(Some("application/json"), r#"{"value":[{"id":"#)
            .json::<serde_json::Value>()
            .unwrap_err();
        assert!(err.starts_with("unreadable JSON: EOF"), "{err}");
    }

    #[test]
    fn join_appends_segments_to_a_base_with_or_without_a_trailing_slash() {
        for base in ["http://127.0.0.1:1/scim/v2", "http://127.0.0.1:1/scim/v2/"] {
            let base = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                join(&base, "Users/abc", &[("count", "1")]).as_str(),
                "http://127.0.0.1:1/scim/v2/Users/abc?count=1"
            );
        }
    }

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        let base = reqwest::Url::parse("https://graph.microsoft.com/v1.0").unwrap();
        let ok = |l: &str| same_origin(&base, &reqwest::Url::parse(l).unwrap());
        assert!(ok("https://graph.microsoft.com/v1.0/users?$skiptoken=x"));
        assert!(ok("https://GRAPH.microsoft.com:443/v1.0/users"));
        assert!(!ok("http://graph.microsoft.com/v1.0/users"), "scheme");
        assert!(
            !ok("https://graph.microsoft.com.evil.test/v1.0/users"),
            "host"
        );
        assert!(!ok("https://evil.test/v1.0/users"), "host");
        assert!(!ok("https://graph.microsoft.com:8443/v1.0/users"), "port");
        assert!(!ok("data:text/plain,x"), "opaque");
        let local = reqwest::Url::parse("http://127.0.0.1:8080/").unwrap();
        assert!(same_origin(
            &local,
            &reqwest::Url::parse("http://127.0.0.1:8080/a").unwrap()
        ));
        assert!(!same_origin(
            &local,
            &reqwest::Url::parse("http://127.0.0.1:8081/a").unwrap()
        ));
        assert!(!same_origin(
            &local,
            &reqwest::Url::parse("http://localhost:8080/a").unwrap()
        ));
        let err = checked_link(&local, "http://127.0.0.2:8080/a?token=SECRET").unwrap_err();
        assert!(
            err.contains("http://127.0.0.2:8080") && !err.contains("SECRET"),
            "{err}"
        );
        assert!(checked_link(&local, "not a url").is_err());
    }
}
