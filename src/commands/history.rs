//! `learner-sync history`: the action log, newest first.

use super::Exit;
use super::{known_directory, CommandError};
use crate::cli::HistoryArgs;
use crate::config::Config;
use crate::report::printable;
use crate::state::query::HistoryFilter;
use crate::state::State;

/// `--since`: RFC 3339, a date, or an age like `24h` / `7d`, as an RFC 3339 UTC bound.
pub fn parse_since(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<String, String> {
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(fmt(t.with_timezone(&chrono::Utc)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(fmt(t.and_utc()));
        }
    }
    if let Ok(age) = crate::config::schedule::parse_duration(text) {
        if let Ok(age) = chrono::Duration::from_std(age) {
            return Ok(fmt(now - age));
        }
    }
    Err(format!(
        "--since `{text}`: expected RFC 3339 (2026-11-01T08:00:00Z), a date (2026-11-01) or an age (24h, 7d)"
    ))
}

/// The changes as `field: before -> after` (what `--json` has too), then the reason.
fn details(r: &crate::state::query::ActionRecord) -> String {
    let mut parts: Vec<String> = r
        .changes
        .iter()
        .map(|c| {
            format!(
                "{}: {} -> {}",
                c.field,
                printable(c.before.as_deref().unwrap_or("(empty)")),
                printable(c.after.as_deref().unwrap_or("(empty)"))
            )
        })
        .collect();
    if !r.reason.is_empty() {
        parts.push(printable(&r.reason).to_string());
    }
    parts.join("; ")
}

pub fn run(config: &Config, args: HistoryArgs) -> Result<Exit, CommandError> {
    if let Some(d) = &args.directory {
        known_directory(config, d)?;
    }
    let since = match &args.since {
        Some(s) => Some(parse_since(s, chrono::Utc::now()).map_err(CommandError::Usage)?),
        None => None,
    };
    let filter = HistoryFilter {
        directory: args.directory,
        user: args.user,
        since,
        limit: args.limit,
    };
    let (records, approvals) = match State::open_read_only(&config.sync.state_db)? {
        Some(st) => (
            super::pending::with_pending(config, &st, &filter, st.history(&filter)?)?,
            st.approvals(filter.directory.as_deref())?,
        ),
        None => (vec![], vec![]),
    };
    // Who released the actions of an `approve` run, and when.
    let approved: std::collections::BTreeMap<i64, String> = approvals
        .iter()
        .filter_map(|a| {
            a.run_id.map(|id| {
                (
                    id,
                    format!(
                        "approved by {} at {}",
                        printable(&a.approved_by),
                        a.approved_at
                    ),
                )
            })
        })
        .collect();
    if args.json {
        // Each record with the store its directory writes to (`store`, issue 17).
        let with_store: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "store".into(),
                        config.store_named_for(&r.directory).0.into(),
                    );
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(&with_store).unwrap_or_else(|_| "[]".into())
        );
        return Ok(Exit::Ok);
    }
    if records.is_empty() {
        println!("no actions recorded");
        return Ok(Exit::Ok);
    }
    println!(
        "{:<20}  {:>5}  {:<12}  {:<11}  {:<32}  {:<24}  details",
        "time", "run", "directory", "action", "user", "external id"
    );
    for r in &records {
        println!(
            "{:<20}  {:>5}  {:<12}  {:<11}  {:<32}  {:<24}  {}",
            r.time,
            r.run,
            r.directory,
            r.action,
            printable(&r.user_name),
            printable(&r.external_id),
            match approved.get(&r.run) {
                Some(by) => format!("{}; {by}", details(r)),
                None => details(r),
            }
        );
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_accepts_timestamps_dates_and_ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_since("2026-11-01", now).unwrap(),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(parse_since("24h", now).unwrap(), "2026-11-21T12:00:00Z");
        assert_eq!(
            parse_since("2026-11-22T13:00:00+01:00", now).unwrap(),
            "2026-11-22T12:00:00Z"
        );
        assert!(parse_since("yesterday", now).is_err());
    }
}
