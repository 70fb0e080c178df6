//! Command-line interface: the clap argument definitions, nothing else (dispatch and
//! exit codes live in `commands`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

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
    Check(CheckArgs),
    /// Run every directory on its schedule until SIGTERM (SIGHUP reloads the config)
    Daemon,
    /// Show the last run per directory, the next run and held deactivations
    Status(StatusArgs),
    /// Show the action log: who was created, updated, deactivated, when and why
    History(HistoryArgs),
    /// Apply what a safety guard held back for a directory (deactivations, mass field changes, a new directory's creates)
    Approve(ApproveArgs),
    /// Give a directory a new name: move its learners and state from OLD to NEW (then rename it in the config)
    RenameDirectory(RenameArgs),
    /// Validate the config, then make the daemon re-read it (the unit's ExecReload=)
    Reload(ReloadArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the learner-sync(1) man page (roff) to stdout
    Manpage,
    /// `check --as-service`'s probe, run as the service user (not for direct use)
    #[command(name = "__probe-access", hide = true)]
    ProbeAccess { items: Vec<String> },
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Also try every file the config names as the service's user (default
    /// learner-sync; needs root), as the unit will read them
    #[arg(long, value_name = "USER", num_args = 0..=1, require_equals = true,
          default_missing_value = crate::service_access::SERVICE_USER)]
    pub as_service: Option<String>,
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
    /// Provision one user now (an id, user name or email), like Entra's "Provision on
    /// demand"; needs one --directory when several are configured; cursors stay as
    /// they are
    #[arg(long, value_name = "ID|UPN|EMAIL", conflicts_with = "full")]
    pub user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Only this directory
    #[arg(long = "directory", value_name = "NAME")]
    pub directory: Option<String>,
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
    /// Print what would be released and write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct RenameArgs {
    /// The directory's name until now
    pub old: String,
    /// Its new name (nothing may use it yet)
    pub new: String,
}

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The daemon's process id (the unit passes $MAINPID)
    #[arg(long, value_name = "PID")]
    pub pid: i32,
}
