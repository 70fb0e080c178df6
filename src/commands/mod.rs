//! The subcommands. Each loads what it needs and returns the process's exit code.

mod approve;
mod check;
mod daemon;
mod docs;
mod history;
pub mod reload;
mod status;
mod sync;

use crate::cli::{Cli, Command, Exit};
use crate::config::Config;

pub async fn dispatch(cli: Cli) -> Exit {
    // These describe the program itself and need no config.
    match &cli.command {
        Command::Completions { shell } => return docs::completions(*shell),
        Command::Manpage => return docs::manpage(),
        _ => {}
    }
    let path = Config::resolve_path(cli.config.as_deref());
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            crate::logging::error_line(&e.to_string());
            return Exit::Usage;
        }
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let result = match cli.command {
        Command::Sync(args) => {
            sync::run(&config, args, cli.log_format == crate::cli::LogFormat::Text).await
        }
        Command::Check => check::run(&config).await,
        Command::Daemon => daemon::run(config, path).await,
        Command::Status(args) => status::run(&config, args),
        Command::History(args) => history::run(&config, args),
        Command::Approve(args) => approve::run(&config, args).await,
        Command::Reload(args) => reload::run(&config, args),
        Command::Completions { .. } | Command::Manpage => Ok(Exit::Ok),
    };
    match result {
        Ok(exit) => exit,
        Err(CommandError::Usage(msg)) => {
            crate::logging::error_line(&msg);
            Exit::Usage
        }
        Err(CommandError::Failed(msg)) => {
            crate::logging::error_line(&msg);
            Exit::Failed
        }
    }
}

#[derive(Debug)]
pub enum CommandError {
    /// Bad usage or config: exit 2.
    Usage(String),
    /// The command could not do its work: exit 3.
    Failed(String),
}

impl<E: std::fmt::Display> From<E> for CommandError
where
    E: std::error::Error,
{
    fn from(e: E) -> Self {
        CommandError::Failed(e.to_string())
    }
}

/// A config without any `[[directory]]` (as the package installs it) has nothing to do.
fn configured(config: &Config) -> Result<(), CommandError> {
    if config.directories.is_empty() {
        return Err(CommandError::Usage(format!(
            "not configured yet: {} has no [[directory]]; add one (see the commented examples in it, or config.example.toml) and run `learner-sync check` again",
            config.path.display()
        )));
    }
    Ok(())
}

/// Names given with `--directory` must exist in the config.
fn known_directory(config: &Config, name: &str) -> Result<(), CommandError> {
    if config.directory(name).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = config.directories.iter().map(|d| d.name.as_str()).collect();
    Err(CommandError::Usage(format!(
        "no directory named `{name}` in {} (configured: {})",
        config.path.display(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}
