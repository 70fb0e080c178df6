//! Command-line interface: argument definitions and dispatch to commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "learner-sync",
    version,
    about = "Pulls users from Entra ID, Google Workspace or a CSV export into a learner store",
    long_about = None
)]
pub struct Cli {
    /// Config file [default: $LEARNER_SYNC_CONFIG, then /etc/learner-sync/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every configured directory (or the named ones) once, then exit
    Sync(SyncArgs),
    /// Verify config, credentials, permissions and store reachability
    Check,
    /// Run every directory on its schedule until SIGTERM (SIGHUP reloads the config)
    Daemon,
    /// Show the last run per directory, the next run and held deactivations
    Status(StatusArgs),
    /// Show the action log: who was created, updated, deactivated, when and why
    History(HistoryArgs),
    /// Apply the deactivations a safety guard held back for a directory
    Approve(ApproveArgs),
    /// Validate the config, then make the daemon re-read it (the unit's ExecReload=)
    Reload(commands::reload::ReloadArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the learner-sync(1) man page (roff) to stdout
    Manpage,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Only this directory (repeat for several)
    #[arg(long = "directory", value_name = "NAME")]
    pub directories: Vec<String>,
    /// Print the plan and change nothing (neither store nor snapshot)
    #[arg(long)]
    pub dry_run: bool,
    /// Ignore delta cursors and re-read everything
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Only this directory
    #[arg(long, value_name = "NAME")]
    pub directory: Option<String>,
    /// Only users whose user name or external id contains TEXT
    #[arg(long, value_name = "TEXT")]
    pub user: Option<String>,
    /// Only actions at or after TIME: RFC 3339, a date (2026-11-01) or an age (24h, 7d)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// At most N records (newest first)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON array instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The directory whose held deactivations to release
    pub name: String,
}

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

pub fn run() -> ExitCode {
    let cli = Cli::parse();
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
    let exit = runtime.block_on(commands::dispatch(cli));
    // A daemon run abandoned at shutdown may still hold a blocking thread; the
    // stores are crash-safe, so the process does not wait on it for long.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    exit.into()
}
