//! One run of one directory: read -> plan -> guard -> apply -> commit.
//!
//! Crash safety: the run and its planned actions are recorded in the state DB first,
//! then the store applies the operations together with the run's key, then the
//! snapshot and cursor are committed. A run killed anywhere is resolved by the next
//! one (the store tells whether the operations landed), and because the plan diffs
//! against the store itself, re-running converges on the right learners.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::{Config, DirectoryConfig};
use crate::guard::{guard, HoldReason, Limits};
use crate::mapping::{desired, Desired};
use crate::plan::{ActionKind, Operation, Plan, Planner};
use crate::progress::Progress;
use crate::source::{Change, Listing, PreviousUsers, ReadRequest, Scope, Snapshot, Source};
use crate::state::{Counts, Outcome, RunCommit, SnapshotReader, State};
use crate::store::Store;

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Ignore the stored cursor and read everything.
    pub full: bool,
    /// Show a spinner with the current phase when stderr is a terminal.
    pub progress: bool,
}

/// What one run did, for the summary line, `--dry-run` output and exit codes.
#[derive(Debug)]
pub struct RunReport {
    pub directory: String,
    pub outcome: Outcome,
    pub counts: Counts,
    pub duration: Duration,
    pub requests: u64,
    /// Requests the source repeated after throttling or a server error.
    pub retries: u64,
    /// The operations applied (or, in a dry run, that would be).
    pub applied: Vec<Operation>,
    pub held: Vec<Operation>,
    pub hold_reason: Option<HoldReason>,
    pub full_read: bool,
    pub error: Option<String>,
}

impl RunReport {
    fn failed(directory: &str, started: Instant, requests: u64, error: String) -> RunReport {
        RunReport {
            directory: directory.to_string(),
            outcome: Outcome::Failed,
            counts: Counts::default(),
            duration: started.elapsed(),
            requests,
            retries: 0,
            applied: vec![],
            held: vec![],
            hold_reason: None,
            full_read: false,
            error: Some(error),
        }
    }
}

/// Merge what the source returned into the previous snapshot. Pure.
pub fn merge(previous: Snapshot, listing: Listing) -> Snapshot {
    match listing {
        Listing::Complete(users) => users
            .into_iter()
            .map(|u| (u.external_id.clone(), u))
            .collect(),
        Listing::Changes(changes) => {
            let mut next = previous;
            for change in changes {
                match change {
                    Change::Upsert(u) => {
                        next.insert(u.external_id.clone(), *u);
                    }
                    Change::Removed { external_id } => {
                        next.remove(&external_id);
                    }
                }
            }
            next
        }
    }
}

fn digest(json: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    json.hash(&mut h);
    h.finish()
}

/// Digests of the JSON form of each user, as the state DB stores them.
fn snapshot_digests(snapshot: &Snapshot) -> BTreeMap<String, u64> {
    snapshot
        .iter()
        .map(|(id, u)| {
            (
                id.clone(),
                digest(&serde_json::to_string(u).unwrap_or_default()),
            )
        })
        .collect()
}

/// Per-directory lock, so that a `sync` and a daemon never run one directory at once.
pub struct DirectoryLock {
    _file: std::fs::File,
}

pub fn lock_path(config: &Config, directory: &str) -> PathBuf {
    let mut name = config.sync.state_db.as_os_str().to_owned();
    name.push(".locks");
    PathBuf::from(name).join(format!("{directory}.lock"))
}

pub fn lock_directory(config: &Config, directory: &str) -> Result<DirectoryLock, String> {
    let path = lock_path(config, directory);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DirectoryLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another learner-sync process is syncing directory `{directory}` (lock {})",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Run one directory once.
pub async fn run_directory(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    opts: RunOptions,
) -> RunReport {
    let started = Instant::now();
    match run_inner(config, dir, source, opts, started).await {
        Ok(report) => report,
        Err(error) => RunReport::failed(&dir.name, started, 0, error),
    }
}

async fn run_inner(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    opts: RunOptions,
    started: Instant,
) -> Result<RunReport, String> {
    let name = dir.name.as_str();
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock_directory(config, name)?)
    };
    let mut state = if opts.dry_run {
        State::open_read_only(&config.sync.state_db).map_err(|e| e.to_string())?
    } else {
        Some(State::open(&config.sync.state_db).map_err(|e| e.to_string())?)
    };
    let mut store = Store::open(&config.store, &config.sync, opts.dry_run)
        .await
        .map_err(|e| e.to_string())?;

    // Settle runs a crash left open before anything else.
    if let (Some(st), false) = (state.as_mut(), opts.dry_run) {
        for (run_id, key) in st.unfinished_runs(name).map_err(|e| e.to_string())? {
            let applied = store.applied(&key).await.map_err(|e| e.to_string())?;
            st.resolve_unfinished(run_id, &applied)
                .map_err(|e| e.to_string())?;
            store.forget_run(&key).await.map_err(|e| e.to_string())?;
            tracing::warn!(
                directory = name,
                run = run_id,
                applied = ?applied,
                "settled a run left unfinished by a crash"
            );
        }
    }

    let (cursor, full_read_at) = match &state {
        Some(st) => st.cursor(name).map_err(|e| e.to_string())?,
        None => (None, None),
    };
    let resync_due = full_read_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            let age = chrono::Utc::now().signed_duration_since(t);
            age.to_std().unwrap_or_default() >= config.sync.full_resync
        })
        .unwrap_or(true);
    let use_cursor = !opts.full && !resync_due;
    let cursor = if use_cursor { cursor.as_deref() } else { None };
    // A source that merges partial changes looks up the previous users it needs in the
    // state DB, one by one; nobody else needs them.
    let reader = match (&state, source.needs_snapshot(cursor)) {
        (Some(_), true) => {
            SnapshotReader::open(&config.sync.state_db, name).map_err(|e| e.to_string())?
        }
        _ => None,
    };
    let no_previous = Snapshot::new();
    let previous: &dyn PreviousUsers = match &reader {
        Some(r) => r,
        None => &no_previous,
    };
    let progress = Progress::new(name, opts.progress);
    progress.phase(if cursor.is_some() {
        "reading changes"
    } else {
        "reading the directory"
    });
    let retries_before = source.retries();
    let read = source
        .read(ReadRequest {
            snapshot: previous,
            cursor,
        })
        .await;
    let retries = source.retries() - retries_before;
    let read: Result<_, String> = match (read, reader.as_ref().and_then(|r| r.error())) {
        (Ok(r), None) => Ok(r),
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), Some(e)) => Err(e),
    };
    let read = match read {
        Ok(r) => r,
        Err(error) => {
            if let (Some(st), false) = (state.as_mut(), opts.dry_run) {
                let key = uuid::Uuid::new_v4().to_string();
                st.record_failed_run(name, &key, 0, &error)
                    .map_err(|e| e.to_string())?;
            }
            let mut report = RunReport::failed(name, started, 0, error);
            report.retries = retries;
            return Ok(report);
        }
    };
    drop(reader);
    let full_read = matches!(read.listing, Listing::Complete(_));
    let empty_read = matches!(&read.listing, Listing::Complete(u) if u.is_empty());
    let requests = read.requests;
    let scope = read.scope;
    let next_cursor = read.next_cursor;

    // What the directory says now, the snapshot rows to stage (in a temp table, until the
    // run commits) and, on a delta run, the only learners that can have changed.
    // A scoped delta run merges into the whole previous snapshot.
    let mut scoped_previous = match (&read.listing, &scope, &state) {
        (Listing::Changes(_), Scope::Only(_), Some(st)) => {
            Some(st.load_snapshot(name).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let writable = state.as_mut().filter(|_| !opts.dry_run);
    let (snapshot_after, snapshot_deletes, only) = match read.listing {
        Listing::Complete(users) => {
            let after: Snapshot = users
                .into_iter()
                .map(|u| (u.external_id.clone(), u))
                .collect();
            let deletes = match writable {
                Some(st) => {
                    let before = st.snapshot_digests(name).map_err(|e| e.to_string())?;
                    st.stage_snapshot(name, &before, &after, digest)
                        .map_err(|e| e.to_string())?
                }
                None => vec![],
            };
            (after, deletes, None)
        }
        Listing::Changes(changes) if scope == Scope::All => {
            // Only the users in the delta can change: plan just them.
            let mut upserts = Snapshot::new();
            let mut removed = Vec::new();
            for change in changes {
                match change {
                    Change::Upsert(u) => {
                        upserts.insert(u.external_id.clone(), *u);
                    }
                    Change::Removed { external_id } => {
                        upserts.remove(&external_id);
                        removed.push(external_id);
                    }
                }
            }
            removed.retain(|id| !upserts.contains_key(id));
            if let Some(st) = writable {
                st.stage_snapshot(name, &BTreeMap::new(), &upserts, digest)
                    .map_err(|e| e.to_string())?;
            }
            let only: BTreeSet<String> = upserts.keys().chain(&removed).cloned().collect();
            (upserts, removed, Some(only))
        }
        changes => {
            // Scoped: a membership change can move anyone, so evaluate everyone.
            let previous = scoped_previous.take().unwrap_or_default();
            let before = snapshot_digests(&previous);
            let after = merge(previous, changes);
            let deletes = match writable {
                Some(st) => st
                    .stage_snapshot(name, &before, &after, digest)
                    .map_err(|e| e.to_string())?,
                None => vec![],
            };
            (after, deletes, None)
        }
    };

    let wanted: BTreeMap<String, Desired> = snapshot_after
        .into_iter()
        .map(|(id, u)| {
            let d = desired(u, scope.includes(&id), &dir.mapping);
            (id, d)
        })
        .collect();
    let mut planner = Planner::new(wanted);
    let visit = &mut |l| planner.visit(l);
    let (active, untouched) = match &only {
        None => {
            store
                .for_each_learner(name, visit)
                .await
                .map_err(|e| e.to_string())?;
            (planner.active_before(), 0)
        }
        Some(ids) => {
            store
                .learners_by_id(name, ids, visit)
                .await
                .map_err(|e| e.to_string())?;
            let (total, active) = store.counts(name).await.map_err(|e| e.to_string())?;
            (active, total.saturating_sub(planner.visited()))
        }
    };
    let mut full_plan: Plan = planner.finish();
    full_plan.unchanged += untouched;
    let limits = Limits {
        max_deactivations: config.sync.max_deactivations,
        max_deactivation_percent: config.sync.max_deactivation_percent,
    };
    let guarded = guard(full_plan, active, empty_read, limits);
    let mut counts = Counts {
        created: guarded.apply.count(ActionKind::Created),
        updated: guarded.apply.count(ActionKind::Updated),
        deactivated: guarded.apply.count(ActionKind::Deactivated),
        reactivated: guarded.apply.count(ActionKind::Reactivated),
        held: guarded.held.len(),
        unchanged: guarded.apply.unchanged,
        failed: 0,
    };
    // A held deactivation that still applies its field changes counts once, as held.
    counts.updated -= guarded
        .apply
        .operations
        .iter()
        .filter(|o| {
            matches!(o, Operation::Update { .. })
                && guarded
                    .held
                    .iter()
                    .any(|h| h.external_id() == o.external_id())
        })
        .count();
    let outcome = if guarded.held.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Held
    };
    let hold_reason_text = guarded.hold_reason.as_ref().map(|r| r.to_string());

    let finish = |outcome, counts, error, guarded: crate::guard::Guarded| RunReport {
        directory: name.to_string(),
        outcome,
        counts,
        duration: started.elapsed(),
        requests,
        retries,
        applied: guarded.apply.operations,
        held: guarded.held,
        hold_reason: guarded.hold_reason,
        full_read,
        error,
    };
    let Some(st) = state.as_mut().filter(|_| !opts.dry_run) else {
        return Ok(finish(outcome, counts, None, guarded));
    };

    let run_key = uuid::Uuid::new_v4().to_string();
    progress.phase(format!(
        "applying {} changes",
        guarded.apply.operations.len()
    ));
    let run_id = st
        .begin_run(
            name,
            &run_key,
            "sync",
            full_read,
            &guarded.apply.operations,
            &guarded.held,
        )
        .map_err(|e| e.to_string())?;
    crate::faults::point("after-begin");
    let report = match store.apply(name, &run_key, &guarded.apply.operations).await {
        Ok(r) => r,
        Err(e) => {
            // A SCIM store may have written some learners before it failed.
            let applied = store
                .applied(&run_key)
                .await
                .unwrap_or(crate::store::Applied::Nothing);
            st.resolve_unfinished(run_id, &applied)
                .map_err(|e| e.to_string())?;
            let error = e.to_string();
            st.mark_failed(run_id, &error).map_err(|e| e.to_string())?;
            return Ok(RunReport::failed(name, started, requests, error));
        }
    };
    crate::faults::point("after-apply");
    counts.failed = report.failed.len();
    // A learner the store refused was not created, updated, ...: it counts as failed only.
    let failed: std::collections::BTreeSet<&str> =
        report.failed.iter().map(|(id, _)| id.as_str()).collect();
    for op in guarded
        .apply
        .operations
        .iter()
        .filter(|o| failed.contains(o.external_id()))
    {
        let counter = match op.kind() {
            ActionKind::Created => &mut counts.created,
            ActionKind::Updated => &mut counts.updated,
            ActionKind::Deactivated => &mut counts.deactivated,
            ActionKind::Reactivated => &mut counts.reactivated,
            _ => continue,
        };
        *counter = counter.saturating_sub(1);
    }
    let outcome = if counts.failed > 0 {
        Outcome::Failed
    } else {
        outcome
    };
    let error = (!report.failed.is_empty()).then(|| {
        format!(
            "{} learners could not be written to the store",
            report.failed.len()
        )
    });
    progress.phase("committing");
    st.commit_run(RunCommit {
        run_id,
        directory: name,
        outcome,
        counts: counts.clone(),
        requests,
        snapshot_deletes: &snapshot_deletes,
        cursor: Some(next_cursor),
        full_read,
        held: &guarded.held,
        hold_reason: hold_reason_text,
        failed: &report.failed,
        error: error.clone(),
    })
    .map_err(|e| e.to_string())?;
    // Best effort: what a store kept to settle this run after a crash is not needed now.
    if let Err(e) = store.forget_run(&run_key).await {
        tracing::warn!(directory = name, error = %e, "cannot tidy the store's record of the run");
    }
    Ok(finish(outcome, counts, error, guarded))
}
