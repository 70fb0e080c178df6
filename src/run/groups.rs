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

/// Run the group step of `dir`, if it selects groups and the store takes them.
/// `applied` are the learner operations this run applied (in a dry run: planned), so
/// that a dry run limits members as the real run would.
pub async fn step(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    store: &mut Store,
    state: Option<&mut State>,
    applied: &[Operation],
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
    match plan_and_apply(config, dir, source, store, state.as_deref_mut(), applied).await {
        Ok(r) => report = r,
        Err(error) => {
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

async fn plan_and_apply(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    store: &mut Store,
    state: Option<&mut State>,
    applied: &[Operation],
) -> Result<GroupReport, String> {
    let name = dir.name.as_str();
    let mut wanted = source
        .read_groups(&dir.groups)
        .await
        .map_err(|e| format!("cannot read the directory's groups: {e}"))?;
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
    let Some(st) = state else {
        return Ok(report);
    };
    if report.ops.is_empty() && report.hold_reason.is_none() && hold.is_none() {
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
        None => Ok(report),
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
