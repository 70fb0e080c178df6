//! Small HTTP helpers every remote (Graph, the Directory API, SCIM) shares.

use std::time::Duration;

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
    text
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
    fn join_appends_segments_to_a_base_with_or_without_a_trailing_slash() {
        for base in ["http://127.0.0.1:1/scim/v2", "http://127.0.0.1:1/scim/v2/"] {
            let base = reqwest::Url::parse(base).unwrap();
            assert_eq!(
                join(&base, "Users/abc", &[("count", "1")]).as_str(),
                "http://127.0.0.1:1/scim/v2/Users/abc?count=1"
            );
        }
    }
}
