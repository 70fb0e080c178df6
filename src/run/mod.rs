//! One run of one directory, as named steps: lock -> open -> settle -> read -> stage
//! -> plan -> guard -> begin -> apply -> commit.
//!
//! The steps that decide (`snapshot`, `summary`, the plan and the guards) are pure;
//! the steps that write go through `journal`, which makes a crash at any point
//! something the next run completes.

pub mod binding;
pub mod grace;
pub mod groups;
pub mod journal;
pub mod lock;
pub mod on_demand;
pub mod snapshot;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

pub use lock::{holder as lock_holder, lock_directory, lock_path, DirectoryLock, LockError};
pub use snapshot::merge;

use crate::config::{Config, DirectoryConfig};
use crate::error::RunError;
use crate::guard::{guard, rename_suspect, window_start, Context, Guarded, HoldReason, Limits};
use crate::mapping::{desired, Desired};
use crate::model::{DeactivationReason, LearnerFields};
use crate::plan::{Operation, Planner};
use crate::progress::Progress;
use crate::source::{Listing, PreviousUsers, ReadRequest, Snapshot, Source, SourceRead};
use crate::state::{Binding, Counts, Outcome, RunCommit, SnapshotReader, State};
use crate::store::Store;
use snapshot::{Needed, Previous, Staged};

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
    /// Everything held: deactivations, field changes (`Update`s carrying only the
    /// held changes) and the creates of a directory that looks renamed.
    pub held: Vec<Operation>,
    /// Why deactivations were held.
    pub hold_reason: Option<HoldReason>,
    /// Why field changes or creates were held, each with the command that settles it.
    pub other_holds: Vec<String>,
    pub full_read: bool,
    pub error: Option<RunError>,
    /// The group step, when the directory selects groups and the store takes them.
    pub groups: Option<groups::GroupReport>,
}

impl RunReport {
    pub fn failed(directory: &str, started: Instant, requests: u64, error: RunError) -> RunReport {
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
            other_holds: vec![],
            full_read: false,
            error: Some(error),
            groups: None,
        }
    }
}

/// The files a run holds open: the lock, the state DB (absent in a dry run before the
/// first sync) and the store.
pub struct Opened {
    _lock: Option<DirectoryLock>,
    state: Option<State>,
    store: Store,
    dry_run: bool,
}

impl Opened {
    /// The state DB, when the run may write it.
    fn writable(&mut self) -> Option<&mut State> {
        self.state.as_mut().filter(|_| !self.dry_run)
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
    let opened = match open(config, &dir.name, opts.dry_run).await {
        Ok(o) => o,
        Err(error) => return RunReport::failed(&dir.name, started, 0, error),
    };
    run_opened(config, dir, source, opts, opened, started).await
}

/// Lock the directory, then open the state DB and the store (read-only in a dry run).
async fn open(config: &Config, name: &str, dry_run: bool) -> Result<Opened, RunError> {
    let lock = if dry_run {
        None
    } else {
        Some(lock_directory(config, name)?)
    };
    let state = if dry_run {
        State::open_read_only(&config.sync.state_db)?
    } else {
        Some(State::open(&config.sync.state_db)?)
    };
    let mut store = Store::open(config.store_for(name), &config.sync, dry_run).await?;
    if !dry_run {
        // Another machine's daemon may run this directory into the same store.
        store.take_lease(name).await?;
    }
    Ok(Opened {
        _lock: lock,
        state,
        store,
        dry_run,
    })
}

/// The run once its files are open; what a test drives with an in-memory store.
pub async fn run_opened(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    opts: RunOptions,
    mut opened: Opened,
    started: Instant,
) -> RunReport {
    let report = match steps(config, dir, source, opts, &mut opened, started).await {
        Ok(report) => report,
        Err(error) => RunReport::failed(&dir.name, started, 0, error),
    };
    opened.store.release_lease().await;
    report
}

async fn steps(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    opts: RunOptions,
    o: &mut Opened,
    started: Instant,
) -> Result<RunReport, RunError> {
    let name = dir.name.as_str();
    // Settle runs a crash left open before anything else.
    if let Some(st) = o.state.as_mut().filter(|_| !o.dry_run) {
        journal::settle_unfinished(st, &mut o.store, name).await?;
    }
    // State bound to another origin or store: drop the cursor, read everything.
    let (bound, rebind) = check_binding(config, dir, o).await?;
    if let Some(why) = &rebind {
        tracing::warn!(directory = name, reason = %why, "reading the whole directory");
    }
    let opts = RunOptions {
        full: opts.full || rebind.is_some(),
        ..opts
    };
    let cursor = usable_cursor(o.state.as_ref(), name, config, opts, chrono::Utc::now())?;
    let progress = Progress::new(name, opts.progress);
    progress.phase(if cursor.is_some() {
        "reading changes"
    } else {
        "reading the directory"
    });
    let mut phases = Phases::new();
    let retries_before = source.retries();
    let read = read(config, o.state.is_some(), source, name, cursor.as_deref()).await;
    let retries = source.retries() - retries_before;
    let read = match read {
        Ok(r) => r,
        Err(error) => {
            if let Some(st) = o.writable() {
                let key = uuid::Uuid::new_v4().to_string();
                st.record_failed_run(name, &key, 0, &error.to_string())?;
            }
            let mut report = RunReport::failed(name, started, 0, error);
            report.retries = retries;
            return Ok(report);
        }
    };
    let full_read = matches!(read.listing, Listing::Complete(_));
    let empty_read = matches!(&read.listing, Listing::Complete(u) if u.is_empty());
    let (requests, scope, next_cursor) = (read.requests, read.scope, read.next_cursor);
    phases.mark("read");

    // What the directory says now, the snapshot rows to stage (in a temp table, until
    // the run commits) and, on a delta run, the only learners that can have changed.
    let previous = previous(o, name, snapshot::needed(&read.listing, &scope))?;
    let staged = snapshot::stage(previous, read.listing, &scope);
    if let Some(st) = o.writable() {
        st.stage_snapshot(name, &staged.before, &staged.after)?;
    }
    let Staged {
        after,
        deletes,
        only,
        ..
    } = staged;
    phases.mark("stage");

    let wanted: BTreeMap<String, Desired> = after
        .into_iter()
        .map(|(id, u)| {
            let d = desired(u, scope.includes(&id), &dir.mapping);
            (id, d)
        })
        .collect();
    phases.mark("map");
    let guarded = plan_and_guard(
        config,
        name,
        &mut o.store,
        o.state.as_ref(),
        wanted,
        only.as_ref(),
        empty_read,
    )
    .await?;
    phases.mark("plan");
    if let Some(id) = blank_user_name(&guarded) {
        // Refuse rather than write a learner without a user name; a full read (the
        // cursor is dropped) brings the whole user.
        let error = RunError::NoUserName(id);
        if let Some(st) = o.writable() {
            st.drop_cursor(name)?;
            let key = uuid::Uuid::new_v4().to_string();
            st.record_failed_run(name, &key, requests, &error.to_string())?;
        }
        let mut report = RunReport::failed(name, started, requests, error);
        report.retries = retries;
        return Ok(report);
    }
    // A delta run looks at the learners in the delta only: the holds of the others
    // stand, and the run reports them.
    let carried = match (&only, o.state.as_ref()) {
        (Some(ids), Some(st)) => carried_holds(st, name, ids)?,
        _ => vec![],
    };
    // Nothing of a run held as a rename is kept: `rename-directory` moves the old
    // directory's snapshot and cursor here.
    let renamed = guarded.rename.is_some();
    if let (true, Some(st)) = (renamed, o.writable()) {
        st.stage_snapshot(name, &BTreeMap::new(), &Snapshot::new())?;
    }
    let carried_learners = carried
        .iter()
        .map(Operation::external_id)
        .filter(|id| !guarded.all_held().any(|h| h.external_id() == *id))
        .collect::<BTreeSet<_>>()
        .len();
    let planned = summary::carry_holds(summary::planned(&guarded), carried_learners);
    let update_hold_reasons: BTreeMap<String, String> = guarded
        .update_holds
        .iter()
        .map(|h| (h.field.clone(), h.to_string()))
        .collect();
    let all_held: Vec<Operation> = guarded.all_held().cloned().collect();
    let finish = |(counts, outcome), error, guarded: Guarded| RunReport {
        directory: name.to_string(),
        outcome,
        counts,
        duration: started.elapsed(),
        requests,
        retries,
        applied: guarded.apply.operations,
        other_holds: summary::other_holds(name, &guarded.update_holds, guarded.rename.as_ref()),
        held: guarded
            .held
            .into_iter()
            .chain(guarded.held_updates)
            .chain(guarded.held_creates)
            .chain(carried)
            .collect(),
        hold_reason: guarded.hold_reason,
        full_read,
        error,
        groups: None,
    };
    let Opened {
        state,
        store,
        dry_run,
        ..
    } = o;
    let Some(st) = state.as_mut().filter(|_| !*dry_run) else {
        let mut report = finish(planned, None, guarded);
        if !renamed {
            report.groups = groups::step(
                config,
                dir,
                source,
                store,
                None,
                groups::UserRun {
                    applied: &report.applied,
                    full: report.full_read,
                    learners_changed: !report.applied.is_empty(),
                },
            )
            .await;
        }
        return Ok(report);
    };

    progress.phase(format!(
        "applying {} changes",
        guarded.apply.operations.len()
    ));
    let operations = &guarded.apply.operations;
    let begun = journal::begin(
        st,
        name,
        "sync",
        full_read && !renamed,
        operations,
        &all_held,
    )?;
    phases.mark("journal");
    let report = match journal::apply(st, store, name, &begun, operations).await {
        Ok(r) => r,
        Err(error) => return Ok(RunReport::failed(name, started, requests, error)),
    };
    phases.mark("apply");
    let (counts, outcome) = summary::applied(operations, planned, &report);
    let bound = Binding {
        store_learners: Some(store.counts(name).await?.0 as u64),
        ..bound
    };
    let error = (!report.failed.is_empty()).then(|| RunError::Refused(report.failed.len()));
    progress.phase("committing");
    let commit = RunCommit {
        run_id: begun.run_id,
        directory: name,
        outcome,
        counts: counts.clone(),
        requests,
        snapshot_deletes: if renamed { &[] } else { &deletes },
        cursor: (!renamed).then_some(next_cursor),
        full_read: full_read && !renamed,
        held: &guarded.held,
        evaluated: only.as_ref(),
        // A run held as a rename records nothing of where it read from, like its snapshot.
        binding: (!renamed).then_some(bound),
        hold_reason: guarded.hold_reason.as_ref().map(|r| r.to_string()),
        held_updates: &guarded.held_updates,
        update_hold_reasons: &update_hold_reasons,
        directory_hold: Some(guarded.rename.as_ref().map(|r| r.to_string())),
        failed: &report.failed,
        error: error.as_ref().map(|e| e.to_string()),
    };
    journal::commit(st, store, name, begun, commit).await?;
    phases.mark("commit");
    let mut report = finish((counts, outcome), error, guarded);
    if !renamed {
        // The store holds this run's learners now.
        let changed = !report.applied.is_empty();
        report.groups = groups::step(
            config,
            dir,
            source,
            store,
            Some(st),
            groups::UserRun {
                applied: &[],
                full: report.full_read,
                learners_changed: changed,
            },
        )
        .await;
        phases.mark("groups");
    }
    phases.log(name);
    Ok(report)
}

/// Where a run's time goes, step by step, for the debug log (see BENCHMARKS.md).
struct Phases {
    last: Instant,
    /// Each step's time and the process's resident set (MiB) and peak at its end.
    took: Vec<(&'static str, Duration, u64, u64)>,
}

/// `(VmRSS, VmHWM)` of this process in MiB (Linux; zeros elsewhere).
fn resident_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Phases {
    fn new() -> Phases {
        Phases {
            last: Instant::now(),
            took: Vec::new(),
        }
    }

    /// The step `name` ended now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        let (rss, peak) = resident_mib();
        self.took.push((name, now - self.last, rss, peak));
        self.last = now;
    }

    fn log(&self, directory: &str) {
        let took: Vec<String> = self
            .took
            .iter()
            .map(|(n, d, rss, peak)| format!("{n}={}ms/{rss}MiB/{peak}MiB", d.as_millis()))
            .collect();
        tracing::debug!(directory, phases = %took.join(" "), "run steps");
    }
}

/// The binding of this run, and why the recorded one no longer holds (if so).
async fn check_binding(
    config: &Config,
    dir: &DirectoryConfig,
    o: &mut Opened,
) -> Result<(Binding, Option<String>), RunError> {
    let marker = o.store.marker().await?;
    let now = Binding {
        origin: Some(binding::origin(dir)),
        store: Some(binding::store(
            config.store_for(&dir.name),
            marker.as_deref(),
        )),
        store_learners: None,
    };
    let recorded = match o.state.as_ref() {
        Some(st) => st.binding(&dir.name)?,
        None => None,
    };
    let why = match recorded {
        Some(r) => {
            let (learners, _) = o.store.counts(&dir.name).await?;
            binding::mismatch(&r, &now, learners as u64)
        }
        None => None,
    };
    Ok((now, why))
}

/// The stored cursor, unless `--full`, no state yet, or a periodic full read is due.
fn usable_cursor(
    state: Option<&State>,
    name: &str,
    config: &Config,
    opts: RunOptions,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<String>, RunError> {
    let (cursor, full_read_at) = match state {
        Some(st) => st.cursor(name)?,
        None => (None, None),
    };
    let due = resync_due(full_read_at.as_deref(), now, config.sync.full_resync);
    Ok(cursor.filter(|_| !opts.full && !due))
}

/// Whether the last full read (RFC 3339, or never) is `full_resync` or more ago.
fn resync_due(
    full_read_at: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    full_resync: Duration,
) -> bool {
    full_read_at
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| now.signed_duration_since(t).to_std().unwrap_or_default() >= full_resync)
        .unwrap_or(true)
}

/// Read the directory. A source that merges partial changes looks up the previous
/// users it needs in the state DB, one by one; nobody else needs them.
async fn read(
    config: &Config,
    has_state: bool,
    source: &mut Source,
    name: &str,
    cursor: Option<&str>,
) -> Result<SourceRead, RunError> {
    let reader = if has_state && source.needs_snapshot(cursor) {
        SnapshotReader::open(&config.sync.state_db, name)?
    } else {
        None
    };
    let no_previous = Snapshot::new();
    let previous: &dyn PreviousUsers = match &reader {
        Some(r) => r,
        None => &no_previous,
    };
    let read = source
        .read(ReadRequest {
            snapshot: previous,
            cursor,
        })
        .await?;
    match reader.as_ref().and_then(|r| r.error()) {
        None => Ok(read),
        Some(e) => Err(RunError::Snapshot(e)),
    }
}

/// What of the previous snapshot this read needs (see `snapshot::needed`).
fn previous(o: &Opened, name: &str, needed: Needed) -> Result<Previous, RunError> {
    Ok(match (needed, o.state.as_ref()) {
        // A dry run stages nothing, so needs no digests.
        (Needed::Digests, Some(st)) if !o.dry_run => Previous::Digests(st.snapshot_digests(name)?),
        (Needed::Users, Some(st)) => Previous::Users(st.load_snapshot(name)?),
        _ => Previous::Nothing,
    })
}

/// The first learner the plan would write without a user name from the directory. A
/// deactivation that changes no field only repeats what the store holds.
fn blank_user_name(guarded: &Guarded) -> Option<String> {
    guarded
        .apply
        .operations
        .iter()
        .chain(&guarded.held)
        .filter(|o| !matches!(o, Operation::Deactivate { .. }) || !o.changes().is_empty())
        .find(|o| o.fields().user_name.trim().is_empty())
        .map(|o| o.external_id().to_string())
}

/// The held deactivations and field changes of learners a delta run did not evaluate.
fn carried_holds(
    st: &State,
    name: &str,
    evaluated: &BTreeSet<String>,
) -> Result<Vec<Operation>, RunError> {
    Ok(st
        .held(name)?
        .into_iter()
        .filter(|h| !evaluated.contains(&h.external_id))
        .map(|h| Operation::Deactivate {
            fields: LearnerFields {
                user_name: h.user_name,
                ..Default::default()
            },
            external_id: h.external_id,
            changes: vec![],
            reason: DeactivationReason::parse(&h.reason)
                .unwrap_or(DeactivationReason::DeletedInDirectory),
        })
        .chain(
            st.held_updates(name)?
                .into_iter()
                .filter(|h| !evaluated.contains(&h.external_id))
                .map(|h| Operation::Update {
                    fields: LearnerFields {
                        user_name: h.user_name,
                        ..Default::default()
                    },
                    external_id: h.external_id,
                    changes: vec![crate::plan::FieldChange {
                        field: h.field,
                        before: h.before,
                        after: h.after,
                    }],
                }),
        )
        .collect())
}

/// Diff the store's learners against what the directory wants, then apply the guards.
async fn plan_and_guard(
    config: &Config,
    name: &str,
    store: &mut Store,
    state: Option<&State>,
    wanted: BTreeMap<String, Desired>,
    only: Option<&BTreeSet<String>>,
    empty_read: bool,
) -> Result<Guarded, RunError> {
    let mut planner = Planner::new(wanted);
    let visit = &mut |l| planner.visit(l);
    let (active, learners, untouched) = match only {
        None => {
            store.for_each_learner(name, visit).await?;
            (planner.active_before(), planner.visited(), 0)
        }
        Some(ids) => {
            store.learners_by_id(name, ids, visit).await?;
            let (total, active) = store.counts(name).await?;
            (active, total, total.saturating_sub(planner.visited()))
        }
    };
    let mut full_plan = planner.finish();
    full_plan.unchanged += untouched;
    // Leavers inside their grace period wait; the guards see only due deactivations.
    let full_plan = grace::step(config, name, state, full_plan, only)?;
    let limits = Limits {
        max_deactivations: config.sync.max_deactivations,
        max_deactivation_percent: config.sync.max_deactivation_percent,
        max_deactivation_percent_per_day: config.sync.max_deactivation_percent_per_day,
        max_update_percent: config.sync.max_update_percent,
    };
    let mut ctx = Context {
        active,
        learners,
        empty_read,
        deactivated_in_window: 0,
    };
    // Without a state DB (a dry run before the first sync) there is no history.
    let Some(st) = state else {
        return Ok(guard(full_plan, ctx, limits, None));
    };
    ctx.deactivated_in_window = st.deactivated_since(name, &window_start(chrono::Utc::now()))?;
    let suspect = renamed_from(config, name, st, &ctx, &full_plan)?;
    Ok(guard(full_plan, ctx, limits, suspect))
}

/// Whether this directory, with no learners yet, is one renamed in the config: most
/// of its creates are users the snapshot holds under a directory the config no longer
/// has. Not asked again once `approve` said it is a new directory.
fn renamed_from(
    config: &Config,
    name: &str,
    st: &State,
    ctx: &Context,
    plan: &crate::plan::Plan,
) -> Result<Option<crate::guard::RenameSuspect>, RunError> {
    let creates: BTreeSet<&str> = plan
        .operations
        .iter()
        .filter(|o| matches!(o, Operation::Create { .. }))
        .map(Operation::external_id)
        .collect();
    if ctx.learners > 0 || creates.is_empty() {
        return Ok(None);
    }
    if st
        .directory_hold(name)?
        .is_some_and(|h| h.approved_at.is_some())
    {
        return Ok(None);
    }
    let configured: BTreeSet<&str> = config.directories.iter().map(|d| d.name.as_str()).collect();
    let shared = st.unconfigured_sharing(&configured, &creates)?;
    Ok(rename_suspect(name, ctx, creates.len(), &shared))
}

#[cfg(test)]
mod tests;
