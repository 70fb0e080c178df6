//! `learner-sync status`: per directory, the last run, the next one, consecutive
//! failures and what the guards hold (deactivations, field changes, a directory's
//! creates), read from the state DB; and directories the state DB knows that the
//! config no longer has.

use serde::Serialize;

use super::CommandError;
use super::Exit;
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::report::printable;
use crate::state::query::{DirectoryHold, HeldRow, HeldUpdateRow, RunRow};
use crate::state::State;

#[derive(Serialize)]
struct DirectoryStatus {
    directory: String,
    kind: &'static str,
    last_run: Option<RunRow>,
    next_run: Option<String>,
    consecutive_failures: u32,
    held: Vec<HeldRow>,
    held_updates: Vec<HeldUpdateRow>,
    /// Every create held: the directory looks renamed.
    directory_hold: Option<DirectoryHold>,
    /// Leavers inside their grace period.
    pending: Vec<crate::state::pending::PendingRow>,
}

pub fn run(config: &Config, args: StatusArgs) -> Result<Exit, CommandError> {
    let state = State::open_read_only(&config.sync.state_db)?;
    let mut out = Vec::new();
    for dir in &config.directories {
        let (last_run, failures, held, held_updates, directory_hold) = match &state {
            Some(st) => (
                st.recent_runs(&dir.name, 1)?.into_iter().next(),
                st.consecutive_failures(&dir.name)?,
                st.held(&dir.name)?,
                st.held_updates(&dir.name)?,
                st.directory_hold(&dir.name)?,
            ),
            None => (None, 0, vec![], vec![], None),
        };
        let schedule = dir.schedule.as_ref().unwrap_or(&config.sync.schedule);
        let next_run = match last_run.as_ref().and_then(|r| r.finished_at.as_deref()) {
            Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .and_then(|t| {
                    // What the daemon would do: next tick, after the failure backoff.
                    let t = t.with_timezone(&chrono::Utc);
                    crate::daemon::schedule::next_run(
                        schedule,
                        t,
                        t,
                        failures,
                        std::time::Duration::ZERO,
                    )
                })
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            None => Some("at daemon start".to_string()),
        };
        out.push(DirectoryStatus {
            directory: dir.name.clone(),
            kind: dir.kind.name(),
            last_run,
            next_run,
            consecutive_failures: failures,
            held,
            held_updates,
            directory_hold,
            pending: super::pending::rows(state.as_ref(), &dir.name)?,
        });
    }
    // What a directory renamed or removed in the config left behind.
    let unconfigured: Vec<String> = match &state {
        Some(st) => st
            .known_directories()?
            .into_iter()
            .filter(|d| config.directory(d).is_none())
            .collect(),
        None => vec![],
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    for s in &out {
        println!("{} ({})", s.directory, s.kind);
        match &s.last_run {
            Some(r) => {
                let c = &r.counts;
                println!(
                    "  last run:  #{} {} at {}: created {}, updated {}, deactivated {}, reactivated {}, held {}, unchanged {}{}",
                    r.id,
                    r.outcome,
                    r.finished_at.as_deref().unwrap_or(&r.started_at),
                    c.created, c.updated, c.deactivated, c.reactivated, c.held, c.unchanged,
                    r.error.as_ref().map(|e| format!(" ({})", printable(e))).unwrap_or_default()
                );
            }
            None => println!("  last run:  never"),
        }
        println!(
            "  next run:  {}",
            s.next_run.as_deref().unwrap_or("unknown")
        );
        for line in super::pending::status_lines(config, &s.directory, &s.pending) {
            println!("{line}");
        }
        if s.consecutive_failures > 0 {
            println!("  failing:   {} runs in a row", s.consecutive_failures);
        }
        if let Some(h) = &s.directory_hold {
            match &h.approved_at {
                None => println!("  held:      every create: {}", h.reason),
                Some(t) => println!(
                    "  approved:  as a new directory at {t}: the next run creates its learners"
                ),
            }
        }
        let mut fields: Vec<&str> = s.held_updates.iter().map(|h| h.field.as_str()).collect();
        fields.dedup();
        for field in fields {
            let rows: Vec<&HeldUpdateRow> =
                s.held_updates.iter().filter(|h| h.field == field).collect();
            println!(
                "  held:      {} changes of {field} ({}); release with `learner-sync approve {}`",
                rows.len(),
                rows[0].hold_reason,
                s.directory
            );
            for h in rows.iter().take(20) {
                println!(
                    "    {} ({}): {} -> {}",
                    printable(&h.user_name),
                    printable(&h.external_id),
                    printable(h.before.as_deref().unwrap_or("(none)")),
                    printable(h.after.as_deref().unwrap_or("(none)"))
                );
            }
            if rows.len() > 20 {
                println!("    ... and {} more", rows.len() - 20);
            }
        }
        if s.held.is_empty() && s.held_updates.is_empty() && s.directory_hold.is_none() {
            println!("  held:      none");
        } else if !s.held.is_empty() {
            println!(
                "  held:      {} deactivations ({}); release with `learner-sync approve {}`",
                s.held.len(),
                printable(&s.held[0].hold_reason),
                s.directory
            );
            for h in s.held.iter().take(20) {
                println!(
                    "    {} ({}): {}",
                    printable(&h.user_name),
                    printable(&h.external_id),
                    printable(&h.reason)
                );
            }
            if s.held.len() > 20 {
                println!("    ... and {} more", s.held.len() - 20);
            }
        }
    }
    for d in &unconfigured {
        println!("{d} (not in the config)");
        println!(
            "  its learners stay as they are; if it was renamed, run `learner-sync rename-directory {d} NEW`"
        );
    }
    Ok(Exit::Ok)
}
