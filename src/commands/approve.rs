//! `learner-sync approve NAME`: apply what the guards held back for a directory:
//! deactivations, mass changes of a field, and the creates of a directory that looked
//! renamed (those are released for the next run, which creates the learners).

use std::collections::{BTreeMap, BTreeSet};

use super::{known_directory, CommandError, Exit};
use crate::cli::ApproveArgs;
use crate::config::Config;
use crate::guard::{set_field, still_before};
use crate::model::{DeactivationReason, Learner};
use crate::plan::{FieldChange, Operation};
use crate::run::{journal, lock_directory};
use crate::state::daemon::{invoking_user, Approval};
use crate::state::query::{HeldRow, HeldUpdateRow};
use crate::state::{Counts, Outcome, RunCommit, State};
use crate::store::Store;

pub async fn run(config: &Config, args: ApproveArgs) -> Result<Exit, CommandError> {
    known_directory(config, &args.name)?;
    let name = args.name.as_str();
    if args.dry_run {
        return preview(config, name).await;
    }
    let _lock = lock_directory(config, name)?;
    let mut state = State::open(&config.sync.state_db)?;
    let held = state.held(name)?;
    let held_updates = state.held_updates(name)?;
    let directory_hold = state
        .directory_hold(name)?
        .filter(|h| h.approved_at.is_none());
    let group_hold = state.group_hold(name)?.filter(|h| h.approved_at.is_none());
    if held.is_empty()
        && held_updates.is_empty()
        && directory_hold.is_none()
        && group_hold.is_none()
    {
        println!("{name}: nothing is held");
        return Ok(Exit::Ok);
    }
    let mut exit = Exit::Ok;
    if !held.is_empty() || !held_updates.is_empty() {
        let mut store = Store::open(config.store_for(name), &config.sync, false).await?;
        // A daemon on another machine may be running this directory into the store.
        store.take_lease(name).await?;
        // A crash may have left a run open: settle it first, like a sync does.
        journal::settle_unfinished(&mut state, &mut store, name).await?;
        let learners = store.load(name).await?;
        let (operations, deactivating, stale_updates) =
            release_plan(&held, &held_updates, &learners);
        let begun = journal::begin(&mut state, name, "approve", false, &operations, &[])?;
        let report = journal::apply(&mut state, &mut store, name, &begun, &operations).await?;
        let failed: BTreeSet<&str> = report.failed.iter().map(|(id, _)| id.as_str()).collect();
        let landed = |kind: fn(&Operation) -> bool| {
            operations
                .iter()
                .filter(|o| kind(o) && !failed.contains(o.external_id()))
                .count()
        };
        let counts = Counts {
            deactivated: landed(|o| matches!(o, Operation::Deactivate { .. })),
            updated: landed(|o| matches!(o, Operation::Update { .. })),
            failed: report.failed.len(),
            ..Default::default()
        };
        let commit = RunCommit {
            run_id: begun.run_id,
            directory: name,
            outcome: if report.failed.is_empty() {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            counts: counts.clone(),
            requests: 0,
            snapshot_deletes: &[],
            cursor: None,
            full_read: false,
            held: &[],
            evaluated: None,
            hold_reason: None,
            binding: None,
            held_updates: &[],
            update_hold_reasons: &BTreeMap::new(),
            directory_hold: None,
            failed: &report.failed,
            error: None,
        };
        let run_id = begun.run_id;
        journal::commit(&mut state, &mut store, name, begun, commit).await?;
        store.release_lease().await;
        state.record_approval(&Approval {
            directory: name.to_string(),
            run_id: Some(run_id),
            approved_by: invoking_user(),
            approved_at: crate::db::now(),
            what: format!(
                "{} held deactivations, {} held changes",
                held.len(),
                held_updates.len()
            ),
        })?;
        if !held.is_empty() {
            println!(
                "{name}: approved {} held deactivations: deactivated {}, already inactive {}, failed {}",
                held.len(),
                counts.deactivated,
                held.len() - deactivating.len(),
                operations
                    .iter()
                    .filter(|o| deactivating.contains(o.external_id()) && failed.contains(o.external_id()))
                    .count()
            );
        }
        if !held_updates.is_empty() {
            let fields: BTreeSet<&str> = held_updates.iter().map(|h| h.field.as_str()).collect();
            // Every change an approve applies is a held one.
            let (failed_changes, applied): (Vec<&Operation>, Vec<&Operation>) = operations
                .iter()
                .partition(|o| failed.contains(o.external_id()));
            let changes =
                |ops: Vec<&Operation>| ops.iter().map(|o| o.changes().len()).sum::<usize>();
            println!(
                "{name}: approved {} held changes of {}: applied {}, changed since {}, failed {}",
                held_updates.len(),
                fields.into_iter().collect::<Vec<_>>().join(", "),
                changes(applied),
                stale_updates,
                changes(failed_changes)
            );
        }
        if !report.failed.is_empty() {
            exit = Exit::Failed;
        }
    }
    if let Some(h) = &group_hold {
        state.approve_group_hold(name, &invoking_user())?;
        println!(
            "{name}: approved {} held group removals: the next run removes them (`learner-sync sync --directory {name}`)",
            h.removals
        );
    }
    if directory_hold.is_some() {
        state.approve_directory_hold(name)?;
        state.record_approval(&Approval {
            directory: name.to_string(),
            run_id: None,
            approved_by: invoking_user(),
            approved_at: crate::db::now(),
            what: "as a new directory".to_string(),
        })?;
        println!(
            "{name}: approved as a new directory: the next run creates its learners (`learner-sync sync --directory {name}`)"
        );
    }
    Ok(exit)
}

/// What releasing the holds does now: the operations, the learners deactivated, and
/// the held changes a later run or an admin already settled.
fn release_plan(
    held: &[HeldRow],
    held_updates: &[HeldUpdateRow],
    learners: &BTreeMap<String, Learner>,
) -> (Vec<Operation>, BTreeSet<String>, usize) {
    // Per learner still in the store: its fields with the held changes that still
    // apply (a later run or an admin may have settled some), and whether to
    // deactivate it (only if it is still active).
    let mut planned: BTreeMap<&str, (crate::model::LearnerFields, Vec<FieldChange>)> =
        BTreeMap::new();
    let mut stale_updates = 0;
    for h in held_updates {
        let Some(l) = learners.get(&h.external_id) else {
            stale_updates += 1;
            continue;
        };
        let change = FieldChange {
            field: h.field.clone(),
            before: h.before.clone(),
            after: h.after.clone(),
        };
        if !still_before(&l.fields, &change) {
            stale_updates += 1;
            continue;
        }
        let entry = planned
            .entry(h.external_id.as_str())
            .or_insert_with(|| (l.fields.clone(), vec![]));
        set_field(&mut entry.0, &change.field, change.after.clone());
        entry.1.push(change);
    }
    let mut operations: Vec<Operation> = Vec::new();
    let mut deactivating = BTreeSet::new();
    for h in held {
        let Some(l) = learners.get(&h.external_id).filter(|l| l.active) else {
            continue;
        };
        let (fields, changes) = planned
            .remove(h.external_id.as_str())
            .unwrap_or_else(|| (l.fields.clone(), vec![]));
        deactivating.insert(h.external_id.clone());
        operations.push(Operation::Deactivate {
            external_id: h.external_id.clone(),
            fields,
            changes,
            reason: DeactivationReason::parse(&h.reason)
                .unwrap_or(DeactivationReason::DeletedInDirectory),
        });
    }
    operations.extend(
        planned
            .into_iter()
            .map(|(id, (fields, changes))| Operation::Update {
                external_id: id.to_string(),
                fields,
                changes,
            }),
    );
    operations.sort_by(|a, b| a.external_id().cmp(b.external_id()));
    (operations, deactivating, stale_updates)
}

/// `approve --dry-run`: what a release would do, from read-only state and store.
async fn preview(config: &Config, name: &str) -> Result<Exit, CommandError> {
    let Some(state) = State::open_read_only(&config.sync.state_db)? else {
        println!("{name}: nothing is held");
        return Ok(Exit::Ok);
    };
    let held = state.held(name)?;
    let held_updates = state.held_updates(name)?;
    let directory_hold = state
        .directory_hold(name)?
        .filter(|h| h.approved_at.is_none());
    let group_hold = state.group_hold(name)?.filter(|h| h.approved_at.is_none());
    if held.is_empty()
        && held_updates.is_empty()
        && directory_hold.is_none()
        && group_hold.is_none()
    {
        println!("{name}: nothing is held");
        return Ok(Exit::Ok);
    }
    if let Some(h) = &group_hold {
        println!(
            "{name} (dry run): would approve {} held group removals ({})",
            h.removals,
            crate::report::printable(&h.reason)
        );
    }
    if !held.is_empty() || !held_updates.is_empty() {
        let mut store = Store::open(config.store_for(name), &config.sync, true).await?;
        let learners = store.load(name).await?;
        let (operations, deactivating, stale_updates) =
            release_plan(&held, &held_updates, &learners);
        for op in &operations {
            let verb = match op {
                Operation::Deactivate { reason, .. } => format!("deactivate ({reason})"),
                _ => "update".to_string(),
            };
            let changes: Vec<String> = op
                .changes()
                .iter()
                .map(|c| {
                    format!(
                        "{}: {} -> {}",
                        c.field,
                        c.before.as_deref().unwrap_or("(empty)"),
                        c.after.as_deref().unwrap_or("(empty)")
                    )
                })
                .collect();
            let user = learners
                .get(op.external_id())
                .map(|l| l.fields.user_name.as_str())
                .unwrap_or("");
            println!(
                "  would {verb} {user} [{}]{}",
                op.external_id(),
                if changes.is_empty() {
                    String::new()
                } else {
                    format!(" {}", changes.join(", "))
                }
            );
        }
        println!(
            "{name}: would release {} held deactivations ({} to deactivate, {} already inactive) and {} held changes ({} changed since)",
            held.len(),
            deactivating.len(),
            held.len() - deactivating.len(),
            held_updates.len(),
            stale_updates
        );
    }
    if directory_hold.is_some() {
        println!("{name}: would approve it as a new directory (the next run creates its learners)");
    }
    println!("{name}: dry run, nothing was released (run without --dry-run to release)");
    Ok(Exit::Ok)
}
