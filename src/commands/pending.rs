//! What `status` and `history` show of leavers inside their grace period
//! (`deactivate_after`): the pending count and entries, and when each is due.

use crate::config::Config;
use crate::state::pending::PendingRow;
use crate::state::query::{ActionRecord, HistoryFilter};
use crate::state::{State, StateError};

/// When a pending learner's deactivation is due (RFC 3339), if the time parses.
fn due(config: &Config, directory: &str, row: &PendingRow) -> Option<String> {
    let after = config
        .directory(directory)
        .map(|d| d.grace(&config.sync))
        .unwrap_or(config.sync.deactivate_after);
    let since = chrono::DateTime::parse_from_rfc3339(&row.since).ok()?;
    let due = since + chrono::Duration::from_std(after).ok()?;
    Some(
        due.to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// The pending learners of a directory, for `status --json`.
pub fn rows(st: Option<&State>, directory: &str) -> Result<Vec<PendingRow>, StateError> {
    Ok(match st {
        Some(st) => st.pending(directory)?.into_values().collect(),
        None => vec![],
    })
}

/// `status`'s lines for a directory's pending learners (none when nobody is pending).
pub fn status_lines(config: &Config, directory: &str, rows: &[PendingRow]) -> Vec<String> {
    if rows.is_empty() {
        return vec![];
    }
    let mut out = vec![format!(
        "  pending:   {} leavers in their grace period (deactivated if still gone when due)",
        rows.len()
    )];
    for r in rows.iter().take(20) {
        out.push(format!(
            "    {} ({}): {} since {}, due {}",
            crate::report::printable(&r.user_name),
            crate::report::printable(&r.external_id),
            r.reason,
            r.since,
            due(config, directory, r).unwrap_or_else(|| "unknown".to_string())
        ));
    }
    if rows.len() > 20 {
        out.push(format!("    ... and {} more", rows.len() - 20));
    }
    out
}

/// The action log with an entry per pending learner (action `pending`, at the time a
/// run first saw them gone), newest first, as the filter asks.
pub fn with_pending(
    config: &Config,
    st: &State,
    filter: &HistoryFilter,
    mut records: Vec<ActionRecord>,
) -> Result<Vec<ActionRecord>, StateError> {
    let user = filter.user.as_ref().map(|u| u.to_lowercase());
    for dir in &config.directories {
        if filter.directory.as_ref().is_some_and(|d| *d != dir.name) {
            continue;
        }
        for r in st.pending(&dir.name)?.into_values() {
            let user_ok = user.as_ref().is_none_or(|u| {
                r.user_name.to_lowercase().contains(u.as_str())
                    || r.external_id.to_lowercase().contains(u.as_str())
            });
            if !user_ok || filter.since.as_ref().is_some_and(|s| r.since < *s) {
                continue;
            }
            let due = due(config, &dir.name, &r).unwrap_or_else(|| "unknown".to_string());
            records.push(ActionRecord {
                time: r.since.clone(),
                run: 0,
                directory: dir.name.clone(),
                external_id: r.external_id,
                user_name: r.user_name,
                action: "pending".to_string(),
                fields: vec![],
                changes: vec![],
                reason: format!("{}; deactivated at {due} if still gone", r.reason),
            });
        }
    }
    // Stable: entries of one time keep the log's order.
    records.sort_by(|a, b| b.time.cmp(&a.time));
    if let Some(limit) = filter.limit {
        records.truncate(limit);
    }
    Ok(records)
}
