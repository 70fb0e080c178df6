//! `learner-sync sync`: one run for every configured directory, or the named ones.

use super::Exit;
use super::{known_directory, CommandError};
use crate::cli::SyncArgs;
use crate::config::Config;
use crate::report::{plan_lines, summary_line};
use crate::run::{run_directory, RunOptions};
use crate::source::Source;
use crate::state::Outcome;

pub async fn run(config: &Config, args: SyncArgs, progress: bool) -> Result<Exit, CommandError> {
    super::configured(config)?;
    for name in &args.directories {
        known_directory(config, name)?;
    }
    if let Some(who) = &args.user {
        let dir = match (args.directories.as_slice(), config.directories.as_slice()) {
            ([name], _) => config.directories.iter().find(|d| &d.name == name),
            ([], [only]) => Some(only),
            _ => None,
        };
        let Some(dir) = dir else {
            return Err(CommandError::Usage(
                "--user provisions one user of one directory: name it with one --directory NAME"
                    .to_string(),
            ));
        };
        return super::on_demand::run(config, dir, who, args.dry_run).await;
    }
    let selected: Vec<_> = config
        .directories
        .iter()
        .filter(|d| args.directories.is_empty() || args.directories.contains(&d.name))
        .collect();
    let opts = RunOptions {
        dry_run: args.dry_run,
        full: args.full,
        progress,
    };
    let mut exit = Exit::Ok;
    for dir in selected {
        let report = match Source::for_directory(dir, config.sync.request_timeout) {
            Ok(mut source) => run_directory(config, dir, &mut source, opts).await,
            Err(e) => {
                println!("{}: FAILED: {e}", dir.name);
                exit = exit.worst(Exit::Failed);
                continue;
            }
        };
        if args.dry_run {
            print!("{}", plan_lines(&report));
            if let Some(g) = &report.groups {
                print!("{}", crate::run::groups::plan_lines(&report.directory, g));
            }
            // The SCIM store's takeover of existing users (read-only lookups).
            if let Ok(mut store) =
                crate::store::Store::open(config.store_for(&report.directory), &config.sync, true)
                    .await
            {
                for line in store.preview(&report.directory, &report.applied).await {
                    println!("{line}");
                }
            }
        } else {
            crate::notify::after_run(config, &crate::notify::RunEnd::from_report(&report));
        }
        println!("{}", summary_line(&report, args.dry_run));
        if let Some(g) = &report.groups {
            println!(
                "{}",
                crate::run::groups::summary_lines(&report.directory, g)
            );
            // A group step that failed or held removals counts like a directory's.
            if g.error.is_some() {
                exit = exit.worst(Exit::Failed);
            } else if g.hold_reason.is_some() {
                exit = exit.worst(Exit::Held);
            }
        }
        match report.outcome {
            Outcome::Ok => {
                tracing::info!(directory = %report.directory, created = report.counts.created, updated = report.counts.updated, deactivated = report.counts.deactivated, reactivated = report.counts.reactivated, unchanged = report.counts.unchanged, "run finished")
            }
            Outcome::Held => {
                tracing::warn!(directory = %report.directory, held = report.counts.held, reason = %report.hold_reason.as_ref().map(|r| r.to_string()).unwrap_or_default(), "deactivations held")
            }
            Outcome::Failed => {
                // `permanent`: the same run fails again until someone fixes the cause.
                let permanent = report.error.as_ref().is_some_and(|e| e.is_permanent());
                tracing::error!(directory = %report.directory, error = %report.error.as_ref().map(|e| e.to_string()).unwrap_or_default(), permanent, "run failed")
            }
        }
        exit = exit.worst(match report.outcome {
            Outcome::Ok => Exit::Ok,
            Outcome::Held => Exit::Held,
            Outcome::Failed => Exit::Failed,
        });
    }
    // Delivery never changes the exit code; a receiver that hangs costs a bounded wait.
    crate::notify::flush(crate::notify::flush_limit()).await;
    Ok(exit)
}
