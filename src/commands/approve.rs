//! `learner-sync approve NAME`: apply the deactivations a guard held back.

use super::{known_directory, CommandError, Exit};
use crate::cli::ApproveArgs;
use crate::config::Config;
use crate::model::DeactivationReason;
use crate::plan::Operation;
use crate::run::{journal, lock_directory};
use crate::state::{Counts, Outcome, RunCommit, State};
use crate::store::Store;

pub async fn run(config: &Config, args: ApproveArgs) -> Result<Exit, CommandError> {
    known_directory(config, &args.name)?;
    let name = args.name.as_str();
    let _lock = lock_directory(config, name)?;
    let mut state = State::open(&config.sync.state_db)?;
    let held = state.held(name)?;
    if held.is_empty() {
        println!("{name}: no deactivations are held");
        return Ok(Exit::Ok);
    }
    let mut store = Store::open(&config.store, &config.sync, false).await?;
    // A crash may have left a run open: settle it first, like a sync does.
    journal::settle_unfinished(&mut state, &mut store, name).await?;
    let learners = store.load(name).await?;
    // Only learners that are still active: a later run or an admin may have settled some.
    let operations: Vec<Operation> = held
        .iter()
        .filter_map(|h| {
            let l = learners.get(&h.external_id).filter(|l| l.active)?;
            Some(Operation::Deactivate {
                external_id: h.external_id.clone(),
                fields: l.fields.clone(),
                changes: vec![],
                reason: DeactivationReason::parse(&h.reason)
                    .unwrap_or(DeactivationReason::DeletedInDirectory),
            })
        })
        .collect();
    let begun = journal::begin(&mut state, name, "approve", false, &operations, &[])?;
    let report = journal::apply(&mut state, &mut store, name, &begun, &operations).await?;
    let counts = Counts {
        deactivated: operations.len() - report.failed.len(),
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
        failed: &report.failed,
        error: None,
    };
    journal::commit(&mut state, &mut store, name, begun, commit).await?;
    println!(
        "{name}: approved {} held deactivations: deactivated {}, already inactive {}, failed {}",
        held.len(),
        counts.deactivated,
        held.len() - operations.len(),
        counts.failed
    );
    Ok(if report.failed.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
