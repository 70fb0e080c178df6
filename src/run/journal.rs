//! The crash-safe write of a run, for `sync` and `approve` alike: settle what a crash
//! left open, begin (record the run and its operations), apply them to the store with
//! the run's key, then commit (or, when the store failed, settle) and forget the key.
//!
//! A run killed anywhere is resolved by the next one: the store tells whether the
//! operations landed (`Store::applied`), and the plan, made against the store itself,
//! converges on the right learners.

use crate::applied::Applied;
use crate::error::RunError;
use crate::plan::Operation;
use crate::state::{RunCommit, State};
use crate::store::{ApplyReport, Store};

/// A run recorded in the state DB, its operations not yet applied.
pub struct Begun {
    pub run_id: i64,
    pub run_key: String,
}

/// Close the runs of `directory` a crash left open, by what of them reached the store.
pub async fn settle_unfinished(
    state: &mut State,
    store: &mut Store,
    directory: &str,
) -> Result<(), RunError> {
    for (run_id, key) in state.unfinished_runs(directory)? {
        let applied = store.applied(&key).await?;
        state.resolve_unfinished(run_id, &applied)?;
        store.forget_run(&key).await?;
        tracing::warn!(
            directory,
            run = run_id,
            applied = ?applied,
            "settled a run left unfinished by a crash"
        );
    }
    Ok(())
}

/// Record the run and the operations it is about to apply, before the store sees any.
pub fn begin(
    state: &mut State,
    directory: &str,
    kind: &str,
    full_read: bool,
    operations: &[Operation],
    held: &[Operation],
) -> Result<Begun, RunError> {
    let run_key = uuid::Uuid::new_v4().to_string();
    let run_id = state.begin_run(directory, &run_key, kind, full_read, operations, held)?;
    crate::faults::point("after-begin");
    Ok(Begun { run_id, run_key })
}

/// Apply the operations. When the store fails, the run is settled by what landed (a
/// SCIM store may have written some learners first) and marked failed.
pub async fn apply(
    state: &mut State,
    store: &mut Store,
    directory: &str,
    begun: &Begun,
    operations: &[Operation],
) -> Result<ApplyReport, RunError> {
    crate::faults::pause("before-apply");
    match store.apply(directory, &begun.run_key, operations).await {
        Ok(report) => {
            crate::faults::point("after-apply");
            Ok(report)
        }
        Err(e) => {
            let applied = store
                .applied(&begun.run_key)
                .await
                .unwrap_or(Applied::Nothing);
            state.resolve_unfinished(begun.run_id, &applied)?;
            state.mark_failed(begun.run_id, &e.to_string())?;
            Err(e.into())
        }
    }
}

/// Commit the run in the state DB, then let the store forget its key.
pub async fn commit(
    state: &mut State,
    store: &mut Store,
    directory: &str,
    begun: Begun,
    commit: RunCommit<'_>,
) -> Result<(), RunError> {
    state.commit_run(commit)?;
    // Best effort: what a store kept to settle this run after a crash is not needed now.
    if let Err(e) = store.forget_run(&begun.run_key).await {
        tracing::warn!(directory, error = %e, "cannot tidy the store's record of the run");
    }
    Ok(())
}
