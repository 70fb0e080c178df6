//! `learner-sync status`: per directory, the last run, the next one, consecutive
//! failures and what the guards hold (deactivations, field changes, a directory's
//! creates), read from the state DB; and directories the state DB knows that the
//! config no longer has. Whether a daemon runs (and so what "next run" means) comes
//! from the daemon's row in the state DB and whether its pid is alive.

use serde::Serialize;

use super::{known_directory, CommandError, Exit};
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::report::printable;
use crate::state::daemon::{DaemonRow, OpenRun};
use crate::state::query::{DirectoryHold, HeldRow, HeldUpdateRow, RunRow};
use crate::state::State;

/// A heartbeat older than this (the daemon writes one every 10 s) means the daemon's
/// scheduler is stuck even if its pid is alive.
const STALE_AFTER_SECONDS: i64 = 60;

#[derive(Serialize, Clone)]
struct DaemonStatus {
    running: bool,
    /// "running", "not running", or "not responding" (pid alive, heartbeat stale).
    state: &'static str,
    #[serde(flatten)]
    row: Option<DaemonRow>,
    heartbeat_age_seconds: Option<i64>,
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
fn pid_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; no memory is involved.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn daemon_status(row: Option<DaemonRow>, now: chrono::DateTime<chrono::Utc>) -> DaemonStatus {
    let age = row.as_ref().and_then(|r| {
        chrono::DateTime::parse_from_rfc3339(&r.heartbeat_at)
            .ok()
            .map(|t| (now - t.with_timezone(&chrono::Utc)).num_seconds().max(0))
    });
    let alive = row.as_ref().is_some_and(|r| pid_alive(r.pid));
    let state = match (alive, age) {
        (true, Some(a)) if a <= STALE_AFTER_SECONDS => "running",
        (true, _) => "not responding",
        _ => "not running",
    };
    DaemonStatus {
        running: state == "running",
        state,
        // A row whose pid is gone is a daemon killed before it could clear it.
        row: if alive { row } else { None },
        heartbeat_age_seconds: if alive { age } else { None },
    }
}

#[derive(Serialize)]
struct RunningStatus {
    run: Option<OpenRun>,
    holder: String,
}

#[derive(Serialize)]
struct DirectoryStatus {
    directory: String,
    kind: &'static str,
    /// The store the directory writes to (`default` for `[store]`).
    store: String,
    /// The same for every directory: kept in each so `--json` stays an array.
    daemon: DaemonStatus,
    last_run: Option<RunRow>,
    /// A run in progress (its directory lock is held): when it started, by whom.
    running: Option<RunningStatus>,
    /// From the daemon's schedule; `None` when no daemon runs.
    next_run: Option<String>,
    consecutive_failures: u32,
    held: Vec<HeldRow>,
    held_updates: Vec<HeldUpdateRow>,
    /// Every create held: the directory looks renamed.
    directory_hold: Option<DirectoryHold>,
    /// Leavers inside their grace period.
    pending: Vec<crate::state::pending::PendingRow>,
    /// The latest `approve` of this directory: who, when, what.
    last_approval: Option<crate::state::daemon::Approval>,
    /// The directory's groups, when it selects some (issue 16).
    groups: Option<GroupsStatus>,
    /// On a PostgreSQL store: the daemons sharing it, which runs this directory, and
    /// the directory's lease.
    shared: Option<crate::store::postgres::lease::Sharing>,
}

#[derive(Serialize)]
struct GroupsStatus {
    /// The last group step that changed something (or failed).
    last_step: Option<crate::state::groups::GroupRunRow>,
    /// Group removals held for `approve`.
    hold: Option<crate::state::groups::GroupHold>,
}

/// The sharing of each directory's PostgreSQL store; a store that cannot be reached
/// shows none (status never fails on it).
async fn sharing(
    config: &Config,
    directories: &[&crate::config::DirectoryConfig],
) -> std::collections::BTreeMap<String, crate::store::postgres::lease::Sharing> {
    let mut stores: std::collections::BTreeMap<String, Option<crate::store::Store>> =
        Default::default();
    let mut out = std::collections::BTreeMap::new();
    for dir in directories {
        let (name, settings) = config.store_named_for(&dir.name);
        if !matches!(settings, crate::config::StoreConfig::Postgres { .. }) {
            continue;
        }
        if !stores.contains_key(name) {
            let opened = crate::store::Store::open(settings, &config.sync, true)
                .await
                .map_err(
                    |e| tracing::warn!(store = name, error = %e, "cannot read the store's sharing"),
                )
                .ok();
            stores.insert(name.to_string(), opened);
        }
        if let Some(Some(store)) = stores.get(name) {
            if let Ok(Some(s)) = store.sharing(&dir.name).await {
                out.insert(dir.name.clone(), s);
            }
        }
    }
    out
}

pub async fn run(config: &Config, args: StatusArgs) -> Result<Exit, CommandError> {
    if let Some(d) = &args.directory {
        known_directory(config, d)?;
    }
    let state = State::open_read_only(&config.sync.state_db)?;
    let daemon = daemon_status(
        match &state {
            Some(st) => st.daemon()?,
            None => None,
        },
        chrono::Utc::now(),
    );
    let mut out = Vec::new();
    let wanted: Vec<&crate::config::DirectoryConfig> = config
        .directories
        .iter()
        .filter(|d| args.directory.as_ref().is_none_or(|n| *n == d.name))
        .collect();
    let mut shared = sharing(config, &wanted).await;
    for dir in wanted {
        let (last_run, failures, held, held_updates, directory_hold, open_run) = match &state {
            Some(st) => (
                st.recent_runs(&dir.name, 1)?.into_iter().next(),
                st.consecutive_failures(&dir.name)?,
                st.held(&dir.name)?,
                st.held_updates(&dir.name)?,
                st.directory_hold(&dir.name)?,
                st.open_run(&dir.name)?,
            ),
            None => (None, 0, vec![], vec![], None, None),
        };
        let last_approval = match &state {
            Some(st) => st.approvals(Some(&dir.name))?.into_iter().next(),
            None => None,
        };
        let running = crate::run::lock_holder(config, &dir.name).map(|holder| RunningStatus {
            run: open_run,
            holder,
        });
        // Only the daemon schedules: a manual sync's time says nothing about the next.
        let next_run = if daemon.running {
            daemon
                .row
                .as_ref()
                .and_then(|r| r.next_runs.get(&dir.name).cloned())
        } else {
            None
        };
        out.push(DirectoryStatus {
            directory: dir.name.clone(),
            kind: dir.kind.name(),
            store: dir.store.clone(),
            daemon: daemon.clone(),
            last_run,
            running,
            next_run,
            consecutive_failures: failures,
            held,
            held_updates,
            directory_hold,
            pending: super::pending::rows(state.as_ref(), &dir.name)?,
            last_approval,
            groups: match (&state, dir.groups.is_none()) {
                (Some(st), false) => Some(GroupsStatus {
                    last_step: st.last_group_run(&dir.name)?,
                    hold: st.group_hold(&dir.name)?,
                }),
                (None, false) => Some(GroupsStatus {
                    last_step: None,
                    hold: None,
                }),
                _ => None,
            },
            shared: shared.remove(&dir.name),
        });
    }
    // What a directory renamed or removed in the config left behind.
    let unconfigured: Vec<String> = match &state {
        Some(_) if args.directory.is_some() => vec![],
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
    match (&daemon.row, daemon.heartbeat_age_seconds) {
        (Some(r), Some(age)) => {
            println!(
                "daemon: {} (pid {}, heartbeat {age}s ago, config generation {})",
                daemon.state, r.pid, r.generation
            );
            if let Some(e) = &r.last_reload_error {
                println!("  last reload failed: {}", printable(e));
            }
        }
        _ => println!("daemon: not running"),
    }
    for s in &out {
        if config.stores.len() > 1 {
            println!("{} ({}, store {})", s.directory, s.kind, s.store);
        } else {
            println!("{} ({})", s.directory, s.kind);
        }
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
        if let Some(g) = &s.groups {
            match &g.last_step {
                Some(r) if r.outcome == "failed" => println!(
                    "  groups:    FAILED at {}: {} (the learners are not affected)",
                    r.finished_at.as_deref().unwrap_or("?"),
                    printable(r.error.as_deref().unwrap_or(""))
                ),
                Some(r) => println!(
                    "  groups:    {} groups, {} memberships (last change at {}: {})",
                    r.counts.groups,
                    r.counts.memberships,
                    r.finished_at.as_deref().unwrap_or("?"),
                    r.counts
                ),
                None => println!("  groups:    none synced yet"),
            }
            if let Some(h) = &g.hold {
                let approved = h
                    .approved_at
                    .as_ref()
                    .map(|t| format!(" (approved {t}: the next run removes them)"))
                    .unwrap_or_else(|| {
                        format!("; release with `learner-sync approve {}`", s.directory)
                    });
                println!(
                    "  groups held: {} removals: {}{approved}",
                    h.removals,
                    printable(&h.reason)
                );
            }
        }
        if let Some(sh) = &s.shared {
            let runs_on = sh.runs_on.as_deref().unwrap_or("no daemon alive");
            println!(
                "  shared:    {} daemons alive on the store; this directory runs on {runs_on}",
                sh.daemons.len()
            );
            if let Some(l) = &sh.lease {
                let state = if l.held { "held" } else { "free" };
                println!(
                    "  lease:     {state}: last taken by {} (token {}), until {}",
                    l.holder, l.token, l.until
                );
            }
        }
        if let Some(r) = &s.running {
            match &r.run {
                Some(run) => println!(
                    "  running:   #{} {} since {}{}",
                    run.id, run.kind, run.started_at, r.holder
                ),
                None => println!("  running:   now{}", r.holder),
            }
        }
        match (&s.next_run, daemon.running) {
            (Some(t), _) => println!("  next run:  {t}"),
            (None, true) => println!("  next run:  not scheduled yet (its run is in progress or starting)"),
            (None, false) => println!(
                "  next run:  none scheduled (no daemon running; start one with `systemctl start learner-sync`)"
            ),
        }
        if let Some(a) = &s.last_approval {
            println!(
                "  approved:  {} by {} at {}",
                a.what,
                printable(&a.approved_by),
                a.approved_at
            );
        }
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
