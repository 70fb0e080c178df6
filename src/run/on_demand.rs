//! Provision on demand (`sync --directory NAME --user ID|UPN|EMAIL`): one user read
//! from the directory, mapped, planned against their learner and guarded like a run's
//! operation, then applied through the same journal (so a crash is settled by the next
//! run and `history` records it). Cursors, the snapshot and the directory's binding
//! stay as they are: the next scheduled run reads exactly what it would have.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::{journal, open, plan_and_guard, summary};
use crate::config::{Config, DirectoryConfig};
use crate::error::RunError;
use crate::mapping::desired;
use crate::model::Learner;
use crate::plan::Operation;
use crate::source::Source;
use crate::state::{Outcome, RunCommit};

/// What provisioning one user did, step by step, for the report.
#[derive(Debug)]
pub struct OnDemand {
    pub directory: String,
    pub who: String,
    /// `None`: the directory has no user with that id, user name or email.
    pub found: Option<Found>,
    /// The learner the store holds for the user before this run.
    pub learner: Option<Learner>,
    /// What the plan would do to the learner (`None`: nothing to change).
    pub operation: Option<Operation>,
    /// Why the operation is not applied: a guard, or an earlier hold `approve` settles.
    pub held: Option<String>,
    /// The store's answer: `None` when nothing was sent (dry run, no change, held).
    pub result: Option<Result<(), String>>,
    pub dry_run: bool,
    pub requests: u64,
}

#[derive(Debug)]
pub struct Found {
    pub external_id: String,
    pub user_name: String,
    pub matched_by: &'static str,
    pub in_scope: bool,
    pub scope: String,
    /// The reason the learner is to be inactive, if so (disabled, out of scope, ...).
    pub inactive: Option<String>,
}

pub async fn provision(
    config: &Config,
    dir: &DirectoryConfig,
    source: &mut Source,
    who: &str,
    dry_run: bool,
) -> Result<OnDemand, RunError> {
    let started = Instant::now();
    let name = dir.name.as_str();
    let mut o = open(config, name, dry_run).await?;
    if let Some(st) = o.state.as_mut().filter(|_| !dry_run) {
        journal::settle_unfinished(st, &mut o.store, name).await?;
    }
    let mut report = OnDemand {
        directory: name.to_string(),
        who: who.to_string(),
        found: None,
        learner: None,
        operation: None,
        held: None,
        result: None,
        dry_run,
        requests: 0,
    };
    let Some(one) = source.read_one(who).await? else {
        return Ok(report);
    };
    report.requests = one.requests;
    let id = one.user.external_id.clone();
    let only: BTreeSet<String> = [id.clone()].into();
    o.store
        .learners_by_id(name, &only, &mut |l| report.learner = Some(l))
        .await?;
    let want = desired(one.user.clone(), one.in_scope, &dir.mapping);
    report.found = Some(Found {
        external_id: id.clone(),
        user_name: one.user.fields.user_name.clone(),
        matched_by: one.matched_by,
        in_scope: one.in_scope,
        scope: one.scope,
        inactive: want.inactive.as_ref().map(|r| r.as_str().to_string()),
    });
    let wanted = BTreeMap::from([(id.clone(), want)]);
    let guarded = plan_and_guard(
        config,
        name,
        &mut o.store,
        o.state.as_ref(),
        wanted,
        Some(&only),
        false,
    )
    .await?;
    let held_before = match o.state.as_ref() {
        Some(st) => {
            st.held(name)?.iter().any(|h| h.external_id == id)
                || st.held_updates(name)?.iter().any(|h| h.external_id == id)
        }
        None => false,
    };
    report.operation = guarded
        .apply
        .operations
        .first()
        .or_else(|| guarded.all_held().next())
        .cloned();
    if let Some(reason) = &guarded.hold_reason {
        report.held = Some(reason.to_string());
    } else if let Some(hold) = guarded.update_holds.first() {
        report.held = Some(hold.to_string());
    } else if guarded.rename.is_some() {
        report.held = Some(format!(
            "the directory looks renamed; see `learner-sync status` for the `rename-directory` or `approve --directory {name}` command"
        ));
    } else if held_before && report.operation.is_some() {
        // A held deactivation or field change stays held: `approve` releases it, an
        // on-demand run does not.
        report.held = Some(format!(
            "this learner has held changes: `learner-sync approve --directory {name}` releases them"
        ));
    }
    let operations: Vec<Operation> = match (&report.held, &report.operation) {
        (None, Some(op)) => vec![op.clone()],
        _ => vec![],
    };
    let Some(st) = o.state.as_mut().filter(|_| !dry_run) else {
        return Ok(report);
    };
    if operations.is_empty() {
        return Ok(report);
    }
    let begun = journal::begin(st, name, "on-demand", false, &operations, &[])?;
    let applied = match journal::apply(st, &mut o.store, name, &begun, &operations).await {
        Ok(r) => r,
        Err(e) => {
            report.result = Some(Err(e.to_string()));
            return Ok(report);
        }
    };
    let planned = summary::planned(&guarded);
    let (counts, outcome) = summary::applied(&operations, planned, &applied);
    let error = applied.failed.first().map(|(_, why)| why.clone());
    report.result = Some(match &error {
        None => Ok(()),
        Some(why) => Err(why.clone()),
    });
    let commit = RunCommit {
        run_id: begun.run_id,
        directory: name,
        outcome: if error.is_some() {
            Outcome::Failed
        } else {
            outcome
        },
        counts,
        requests: report.requests,
        // The snapshot, the cursor and the binding belong to the scheduled runs.
        snapshot_deletes: &[],
        cursor: None,
        full_read: false,
        held: &[],
        // Only this learner was evaluated; its holds were left alone above.
        evaluated: Some(&BTreeSet::new()),
        hold_reason: None,
        binding: None,
        held_updates: &[],
        update_hold_reasons: &BTreeMap::new(),
        directory_hold: None,
        failed: &applied.failed,
        error: error.clone(),
    };
    journal::commit(st, &mut o.store, name, begun, commit).await?;
    o.store.release_lease().await;
    tracing::debug!(directory = name, elapsed = ?started.elapsed(), "provisioned on demand");
    Ok(report)
}
