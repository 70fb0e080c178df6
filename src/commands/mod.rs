//! The process's edge: parse the command line, dispatch to the subcommand, turn its
//! result into an exit code. Each subcommand loads what it needs.

mod approve;
mod check;
mod daemon;
mod docs;
mod history;
mod on_demand;
mod pending;
mod reload;
mod rename;
mod status;
mod sync;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;

/// Exit codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    Usage = 2,
    Failed = 3,
    Held = 4,
}

impl Exit {
    /// Combine the outcomes of several directories: a failure outranks a held guard.
    pub fn worst(self, other: Exit) -> Exit {
        let rank = |e: Exit| match e {
            Exit::Ok => 0,
            Exit::Held => 1,
            Exit::Failed => 2,
            Exit::Usage => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// The program: parse the arguments, run the command on a runtime, exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Status(_) | Command::History(_) | Command::Completions { .. } | Command::Manpage
    ) {
        quiet_on_closed_pipe();
    }
    crate::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("learner-sync: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let exit = runtime.block_on(dispatch(cli));
    // A daemon run abandoned at shutdown may still hold a blocking thread; the
    // stores are crash-safe, so the process does not wait on it for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}

/// For the commands that only print (`status | grep -q ...`, `history | head`): a reader
/// that stops early ends the process quietly, as for any Unix filter, instead of a
/// panic in `println!`. Commands that write to a store keep Rust's default (SIGPIPE
/// ignored, EPIPE as an error), so a closed terminal never kills a run mid-apply.
fn quiet_on_closed_pipe() {
    // SAFETY: called once at start-up, before any thread is spawned; restoring the
    // default disposition of SIGPIPE has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub async fn dispatch(cli: Cli) -> Exit {
    // These describe the program itself and need no config.
    match &cli.command {
        Command::Completions { shell } => return docs::completions(*shell),
        Command::Manpage => return docs::manpage(),
        Command::ProbeAccess { items } => {
            crate::service_access::probe(items);
            return Exit::Ok;
        }
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
        Command::Check(args) => check::run(&config, args).await,
        Command::Daemon => daemon::run(config, path).await,
        Command::Status(args) => status::run(&config, args).await,
        Command::History(args) => history::run(&config, args),
        Command::Approve(args) => approve::run(&config, args).await,
        Command::RenameDirectory(args) => rename::run(&config, args).await,
        Command::Reload(args) => reload::run(&config, args),
        Command::Completions { .. } | Command::Manpage | Command::ProbeAccess { .. } => {
            Ok(Exit::Ok)
        }
    };
    match result {
        Ok(exit) => exit,
        Err(CommandError::Usage(msg)) => {
            crate::logging::error_line(&msg);
            Exit::Usage
        }
        Err(CommandError::Failed(e)) => {
            crate::logging::error_line(&e.to_string());
            Exit::Failed
        }
    }
}

/// How a command failed. The typed cause is kept until here, the edge, where it is
/// printed and becomes the exit code.
#[derive(Debug)]
pub enum CommandError {
    /// Bad usage or config: exit 2.
    Usage(String),
    /// The command could not do its work: exit 3.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl<E> From<E> for CommandError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Self {
        CommandError::Failed(Box::new(e))
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
