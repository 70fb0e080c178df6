//! `learner-sync reload --pid PID`: the unit's `ExecReload=`. Validates the config the
//! daemon would re-read, then sends the daemon SIGHUP; needs no /bin/kill.
//!
//! The config was loaded before this runs (`dispatch`), so a bad one exits 2 with the
//! file, line and key, `systemctl reload` reports the failure, and the daemon is never
//! signalled: it keeps the running config, as it would on its own.

use super::{configured, CommandError, Exit};
use crate::cli::ReloadArgs;
use crate::config::Config;

pub fn run(config: &Config, args: ReloadArgs) -> Result<Exit, CommandError> {
    // kill(2) reads 0 and negative ids as process groups or "every process".
    if args.pid <= 0 {
        return Err(CommandError::Usage(format!(
            "--pid {}: not a process id",
            args.pid
        )));
    }
    configured(config)?;
    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    if unsafe { libc::kill(args.pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CommandError::Failed(
            format!("cannot signal the daemon (pid {}): {e}", args.pid).into(),
        ));
    }
    println!(
        "{}: valid ({} directories); the daemon re-reads it now",
        config.path.display(),
        config.directories.len()
    );
    Ok(Exit::Ok)
}
