//! `learner-sync rename-directory OLD NEW`: give a directory a new name without
//! creating its learners again. Moves the learners in the store and everything the
//! state DB keeps (snapshot, cursor, holds and the history) from OLD to NEW; the
//! admin then renames the directory in the config.

use super::{CommandError, Exit};
use crate::cli::RenameArgs;
use crate::config::Config;
use crate::run::{journal, lock_directory};
use crate::state::State;
use crate::store::Store;

fn valid(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub async fn run(config: &Config, args: RenameArgs) -> Result<Exit, CommandError> {
    let (old, new) = (args.old.as_str(), args.new.as_str());
    for name in [old, new] {
        if !valid(name) {
            return Err(CommandError::Usage(format!(
                "`{name}` is not a directory name: use only letters, digits, '-', '_' and '.'"
            )));
        }
    }
    if old == new {
        return Err(CommandError::Usage(format!(
            "`{old}` and `{new}` are the same name"
        )));
    }
    // Neither directory may run while its learners move.
    let _locks = (lock_directory(config, old)?, lock_directory(config, new)?);
    let mut state = State::open(&config.sync.state_db)?;
    // Both names must write to one store: the learners move within it.
    if config.store_named_for(old).0 != config.store_named_for(new).0 {
        return Err(CommandError::Usage(format!(
            "`{old}` and `{new}` write to different stores: a rename moves learners within one store"
        )));
    }
    let mut store = Store::open(config.store_for(new), &config.sync, false).await?;
    // On a store daemons of other machines share: none may be running OLD meanwhile.
    store.take_lease(old).await?;

    // A run of OLD a crash left open is settled first, as its next run would.
    journal::settle_unfinished(&mut state, &mut store, old).await?;
    let (old_learners, _) = store.counts(old).await?;
    let (new_learners, _) = store.counts(new).await?;
    let old_state = state.known_directories()?.iter().any(|d| d == old);
    if state.has_data(new)? {
        return Err(CommandError::Usage(format!(
            "directory `{new}` already has a snapshot in {}: it has been synced under that name; rename to a name nothing uses yet",
            state.path().display()
        )));
    }
    // Learners under NEW but no state is what a rename stopped after the store leaves:
    // finish it. Otherwise NEW is taken.
    let resuming = old_learners == 0 && new_learners > 0 && state.has_data(old)?;
    if new_learners > 0 && !resuming {
        return Err(CommandError::Usage(format!(
            "directory `{new}` already has {new_learners} learners in the store; rename to a name nothing uses yet"
        )));
    }
    if old_learners == 0 && !old_state {
        let mut known = state.known_directories()?;
        known.retain(|d| d != new);
        return Err(CommandError::Usage(format!(
            "unknown directory `{old}`: neither the store nor the state DB has anything under that name (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let moved = if resuming {
        new_learners
    } else {
        store.rename_directory(old, new).await?
    };
    let renamed = state.rename_directory(old, new)?;
    store.release_lease().await;
    println!(
        "renamed directory `{old}` to `{new}`: {moved} learners in the store, {} users of the snapshot, {} runs and {} actions of history",
        renamed.snapshot, renamed.runs, renamed.actions
    );
    let path = config.path.display();
    match (config.directory(old).is_some(), config.directory(new).is_some()) {
        (_, false) => println!(
            "now rename the directory in {path}: name = \"{new}\" instead of \"{old}\"; its next run picks up where `{old}` left off"
        ),
        (true, true) => println!(
            "now remove the directory `{old}` from {path}: a run of it would create its learners again"
        ),
        (false, true) => println!("the next run of `{new}` picks up where `{old}` left off"),
    }
    Ok(Exit::Ok)
}
