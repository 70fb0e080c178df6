//! `learner-sync check`: like Entra's "Test Connection", one line per directory and store.

use super::CommandError;
use super::Exit;
use crate::check::CheckLine;
use crate::config::Config;
use crate::source::Source;
use crate::state::State;
use crate::store::Store;

fn print(subject: &str, lines: &[CheckLine]) -> bool {
    let mut ok = true;
    for line in lines {
        let mark = match (line.ok, &line.hint) {
            (false, _) => "FAIL",
            (true, Some(_)) => "warn",
            (true, None) => "ok  ",
        };
        println!("{mark} {subject}: {}", line.message);
        if let Some(hint) = &line.hint {
            println!("     hint: {hint}");
        }
        ok &= line.ok;
    }
    ok
}

pub async fn run(config: &Config, args: crate::cli::CheckArgs) -> Result<Exit, CommandError> {
    super::configured(config)?;
    println!(
        "ok   config {}: {} directories",
        config.path.display(),
        config.directories.len()
    );
    let mut all_ok = true;
    for dir in &config.directories {
        let subject = format!("directory {} ({})", dir.name, dir.kind.name());
        let lines = match Source::for_directory(dir, config.sync.request_timeout) {
            Ok(mut source) => {
                let mut lines = source.check().await;
                if !dir.groups.is_none() && lines.iter().all(|l| l.ok) {
                    lines.push(source.check_groups(&dir.groups).await);
                }
                lines
            }
            Err(e) => vec![CheckLine::failed(
                e.to_string(),
                "fix the directory's settings",
            )],
        };
        all_ok &= print(&subject, &lines);
    }
    for (name, store) in &config.stores {
        let lines = match Store::open(store, &config.sync, true).await {
            Ok(mut store) => store.check().await,
            Err(e) => vec![CheckLine::failed(e.to_string(), "fix the store's settings")],
        };
        let subject = if config.stores.len() == 1 {
            "store".to_string()
        } else {
            let users: Vec<&str> = config
                .directories
                .iter()
                .filter(|d| d.store == *name)
                .map(|d| d.name.as_str())
                .collect();
            format!("store {name} (for {})", users.join(", "))
        };
        all_ok &= print(&subject, &lines);
    }
    for (subject, line) in crate::notify::check(config) {
        all_ok &= print(&subject, &[line]);
    }
    if let Some(user) = &args.as_service {
        let needs = crate::service_access::needs(config);
        all_ok &= print(
            &format!("as {user}"),
            &crate::service_access::check(user, &needs),
        );
        all_ok &= print("units", &crate::unit_credentials::check(config));
    }
    print_holds(config);
    Ok(if all_ok { Exit::Ok } else { Exit::Failed })
}

/// What the guards hold and what a renamed directory left behind: not faults of the
/// setup (the exit code ignores them), but each waits for an admin's decision, so each
/// line names the command that settles it.
fn print_holds(config: &Config) {
    let Ok(Some(state)) = State::open_read_only(&config.sync.state_db) else {
        return;
    };
    for dir in &config.directories {
        let name = &dir.name;
        if let Ok(Some(h)) = state.directory_hold(name) {
            if h.approved_at.is_none() {
                println!("note directory {name}: every create held: {}", h.reason);
            }
        }
        let release = format!(
            "review with `learner-sync status`, release with `learner-sync approve {name}`"
        );
        if let Ok(held) = state.held(name) {
            if let Some(first) = held.first() {
                println!(
                    "note directory {name}: {} deactivations held ({}); {release}",
                    held.len(),
                    first.hold_reason
                );
            }
        }
        if let Ok(updates) = state.held_updates(name) {
            let mut fields: Vec<&str> = updates.iter().map(|h| h.field.as_str()).collect();
            fields.dedup();
            for field in fields {
                let n = updates.iter().filter(|h| h.field == field).count();
                println!("note directory {name}: {n} changes of {field} held; {release}");
            }
        }
    }
    for d in state.known_directories().unwrap_or_default() {
        if config.directory(&d).is_none() {
            println!(
                "note state: directory `{d}` is not in the config; its learners stay as they are; if it was renamed, run `learner-sync rename-directory {d} NEW`"
            );
        }
    }
}
