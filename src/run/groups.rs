//! The group step of a run (issue 16), after the learners are committed: read the
//! directory's selected groups, keep the members that are learners in scope, plan
//! against the store's groups, hold mass removals, apply with a run key of its own.
//!
//! The step never touches learners. When it fails (the groups cannot be read, the
//! provider refuses /Groups) the run's learners stand and the step is recorded failed;
//! the next run plans against the store again, so a crash or a failure mid-way
//! converges.

use std::collections::BTreeMap;

use crate::config::{Config, DirectoryConfig};
use crate::groups::{self, GroupCounts, GroupOp, RemovalLimits};
use crate::plan::Operation;
use crate::source::Source;
use crate::state::groups::GroupFinish;
use crate::state::State;
use crate::store::Store;

/// What a group step did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct GroupReport {
    pub counts: GroupCounts,
    /// The operations applied (in a dry run: planned).
    pub ops: Vec<GroupOp>,
    /// Why removals were held.
    pub hold_reason: Option<String>,
    /// Why the step failed; the learners are not affected.
    pub error: Option<String>,
}

/// What the run's learner part did, as the group step needs it.
#[derive(Debug, Clone, Copy)]
pub struct UserRun<'a> {
    /// The learner operations applied (in a dry run: planned), so that a dry run limits
    /// members as the real run would; empty when the store already holds them.
    pub applied: &'a [Operation],
    /// The users were read whole: so are the groups.
    pub full: bool,
    /// Some learner changed (a member may have come or gone).
    pub learners_changed: bool,
}

/// Run the group step of `dir`, if it selects groups and the store takes them.
pub async fn step(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    store: &mut Store,
    state: Option<&mut State>,
    run: UserRun<'_>,
) -> Option<GroupReport> {
    if dir.groups.is_none() {
        return None;
    }
    let name = dir.name.as_str();
    if !store.takes_groups() {
        tracing::debug!(
            directory = name,
            "groups selected, but the store does not take them ([store] groups = false)"
        );
        return None;
    }
    let mut report = GroupReport::default();
    let mut state = state;
    match plan_and_apply(config, dir, source, store, state.as_deref_mut(), run).await {
        Ok(r) => report = r,
        Err(error) => {
            // It may quote what a remote sent: never a secret of this process.
            let error = crate::redact::scrub(&error);
            tracing::warn!(directory = name, %error, "group step failed; the learners are not affected");
            if let Some(st) = state {
                let key = uuid::Uuid::new_v4().to_string();
                if let Err(e) = st.record_failed_group_run(name, &key, &error) {
                    tracing::warn!(directory = name, error = %e, "cannot record the failed group step");
                }
            }
            report.error = Some(error);
        }
    }
    Some(report)
}

/// What a stored group read was made for: the selection and the scope it may name.
fn selection_key(dir: &DirectoryConfig) -> String {
    use crate::config::DirectoryKind;
    match &dir.kind {
        DirectoryKind::Entra(e) => format!("{:?} {:?}", dir.groups, e.scope),
        DirectoryKind::Google(g) => format!("{:?} {:?}", dir.groups, g.scope),
        DirectoryKind::Csv { .. } => format!("{:?}", dir.groups),
    }
}

async fn plan_and_apply(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    store: &mut Store,
    mut state: Option<&mut State>,
    run: UserRun<'_>,
) -> Result<GroupReport, String> {
    let UserRun {
        applied,
        full,
        learners_changed,
    } = run;
    let name = dir.name.as_str();
    let key = selection_key(dir);
    // The cursor of the last whole read, unless this run reads everything anew.
    let cursor = match state.as_deref() {
        Some(st) if !full => st
            .group_read_cursor(name, &key)
            .map_err(|e| e.to_string())?,
        _ => None,
    };
    let read = source
        .read_groups(&dir.groups, cursor.as_deref())
        .await
        .map_err(|e| format!("cannot read the directory's groups: {e}"))?;
    let read_whole = read.groups.is_some();
    // Whether the last step ended well: after a failed or interrupted one, this step is
    // recorded even when it changes nothing, so that `status` shows it recovered.
    let last = match state.as_deref() {
        Some(st) => st.last_group_run(name).map_err(|e| e.to_string())?,
        None => None,
    };
    let last_ok = last
        .as_ref()
        .is_some_and(|r| matches!(r.outcome.as_str(), "ok" | "held"));
    // No group changed and no learner did: nothing can have changed in the store's
    // groups (unless a hold waits, or the last step did not end well), so the step is
    // this one request.
    if let (false, false, Some(st), Some(c)) = (
        read_whole,
        learners_changed,
        state.as_deref_mut(),
        &read.cursor,
    ) {
        let waiting = st.group_hold(name).map_err(|e| e.to_string())?.is_some() || !last_ok;
        if !waiting {
            st.save_group_read(name, &key, c, None)
                .map_err(|e| e.to_string())?;
            let totals = last.as_ref().map(|r| r.counts).unwrap_or_default();
            return Ok(GroupReport {
                counts: GroupCounts {
                    groups: totals.groups,
                    memberships: totals.memberships,
                    ..GroupCounts::default()
                },
                ..GroupReport::default()
            });
        }
    }
    let stored = match (read_whole, state.as_deref()) {
        (false, Some(st)) => st.group_read(name, &key).map_err(|e| e.to_string())?,
        _ => None,
    };
    let mut wanted = match (read.groups, stored) {
        (Some(g), _) => g,
        (None, Some((_, g))) => g,
        (None, None) => {
            return Err(
                "the directory said its groups are unchanged, but no earlier read is kept"
                    .to_string(),
            )
        }
    };
    // Kept once the step went through, so that a failed step reads again.
    let keep = |st: &mut State, wanted: &groups::Groups| -> Result<(), String> {
        match &read.cursor {
            Some(c) => st
                .save_group_read(name, &key, c, read_whole.then_some(wanted))
                .map_err(|e| e.to_string()),
            None => Ok(()),
        }
    };
    let raw = read.cursor.as_ref().map(|_| wanted.clone());
    let in_scope = learners_in_scope(store, name, applied).await?;
    groups::limit_members(&mut wanted, &in_scope.keys().cloned().collect());
    let current = store
        .groups(name)
        .await
        .map_err(|e| format!("cannot read the store's groups: {e}"))?;
    let ops = groups::plan(&wanted, &current);
    let hold = match state.as_deref() {
        Some(st) => st.group_hold(name).map_err(|e| e.to_string())?,
        None => None,
    };
    let removals = ops
        .iter()
        .filter(|o| matches!(o, GroupOp::Remove { .. }))
        .count();
    let approved = hold
        .as_ref()
        .is_some_and(|h| h.approved_at.is_some() && removals <= h.removals);
    let limits = RemovalLimits {
        max: config.sync.max_deactivations,
        max_percent: config.sync.max_deactivation_percent,
    };
    let guarded = groups::guard(ops, current.len(), limits, approved);
    let mut after = current;
    for op in &guarded.apply {
        groups::apply_to(&mut after, op);
    }
    let mut counts = GroupCounts::of(&guarded.apply).with_totals(&after);
    counts.held = guarded.held.len();
    let report = GroupReport {
        counts,
        ops: guarded.apply,
        hold_reason: guarded.hold_reason,
        error: None,
    };
    let Some(st) = state.take() else {
        return Ok(report);
    };
    let quiet = last_ok || last.is_none();
    if report.ops.is_empty() && report.hold_reason.is_none() && hold.is_none() && quiet {
        if let Some(raw) = &raw {
            keep(st, raw)?;
        }
        return Ok(report);
    }
    let key = uuid::Uuid::new_v4().to_string();
    let user_name = |id: &str| in_scope.get(id).cloned().unwrap_or_else(|| id.to_string());
    let run_id = st
        .begin_group_run(name, &key, &report.ops, &user_name)
        .map_err(|e| e.to_string())?;
    crate::faults::point("after-group-begin");
    let applied = store.apply_groups(name, &key, &report.ops).await;
    let error = applied.as_ref().err().map(|e| e.to_string());
    if let Some(e) = &error {
        // What landed stays in the action log; the next run plans the rest.
        let landed = store
            .applied(&key)
            .await
            .unwrap_or(crate::applied::Applied::Nothing);
        st.resolve_unfinished(run_id, &landed)
            .map_err(|e| e.to_string())?;
        st.mark_failed(run_id, e).map_err(|e| e.to_string())?;
    } else {
        st.finish_group_run(
            run_id,
            GroupFinish {
                outcome: if report.hold_reason.is_some() {
                    "held"
                } else {
                    "ok"
                },
                counts: &report.counts,
                error: None,
                hold: report
                    .hold_reason
                    .as_deref()
                    .map(|r| (r, report.counts.held)),
            },
        )
        .map_err(|e| e.to_string())?;
    }
    if let Err(e) = store.forget_run(&key).await {
        tracing::warn!(directory = name, error = %e, "cannot tidy the store's record of the group step");
    }
    match error {
        Some(e) => Err(format!("cannot write the groups: {e}")),
        None => {
            if let Some(raw) = &raw {
                keep(st, raw)?;
            }
            Ok(report)
        }
    }
}

/// The learners in scope once this run's operations are applied: the store's active
/// learners (in a dry run, adjusted by the plan), by external id, with user names.
async fn learners_in_scope(
    store: &mut Store,
    name: &str,
    applied: &[Operation],
) -> Result<BTreeMap<String, String>, String> {
    let mut in_scope = BTreeMap::new();
    store
        .for_each_learner(name, &mut |l| {
            if l.active {
                in_scope.insert(l.external_id, l.fields.user_name);
            }
        })
        .await
        .map_err(|e| format!("cannot read the store's learners: {e}"))?;
    for op in applied {
        match op {
            Operation::Deactivate { .. } => {
                in_scope.remove(op.external_id());
            }
            Operation::Create { .. } | Operation::Reactivate { .. } => {
                in_scope.insert(op.external_id().to_string(), op.fields().user_name.clone());
            }
            Operation::Update { .. } => {}
        }
    }
    Ok(in_scope)
}

/// For `--dry-run`: one line per group operation.
pub fn plan_lines(directory: &str, report: &GroupReport) -> String {
    use std::fmt::Write;
    let p = crate::report::printable;
    let mut out = String::new();
    for op in &report.ops {
        let (id, group) = (p(op.external_id()), p(op.display_name()));
        let _ = match op {
            GroupOp::Create { .. } => writeln!(out, "{directory}: create group {group} ({id})"),
            GroupOp::Rename { before, .. } => writeln!(
                out,
                "{directory}: rename group {} -> {group} ({id})",
                p(before)
            ),
            GroupOp::AddMembers { members, .. } => {
                writeln!(
                    out,
                    "{directory}: add {} members to group {group}",
                    members.len()
                )
            }
            GroupOp::RemoveMembers { members, .. } => writeln!(
                out,
                "{directory}: remove {} members from group {group}",
                members.len()
            ),
            GroupOp::Remove { .. } => writeln!(out, "{directory}: remove group {group} ({id})"),
        };
    }
    out
}

/// The lines a run prints after its summary for its group step.
pub fn summary_lines(directory: &str, report: &GroupReport) -> String {
    let mut out = match &report.error {
        Some(e) => format!(
            "{directory}: groups FAILED: {} (the learners are not affected)",
            crate::report::printable(e)
        ),
        None => format!("{directory}: {}", report.counts),
    };
    if let Some(reason) = &report.hold_reason {
        out.push_str(&format!(
            "\n{directory}: group removals held: {reason}; review with `learner-sync status`, release with `learner-sync approve {directory}`"
        ));
    }
    out
}
