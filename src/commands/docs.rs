//! `learner-sync completions SHELL` and `learner-sync manpage`: generated from the clap
//! definitions, so they never drift from the real arguments.

use std::io::Write;

use clap::CommandFactory;

use super::Exit;
use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> Exit {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "learner-sync", &mut std::io::stdout());
    Exit::Ok
}

/// What clap cannot know: the sections an admin looks for in learner-sync(1).
const EXTRA: &str = r#".SH "COMMANDS"
.TP
\fBsync\fR [\fB\-\-directory\fR NAME]... [\fB\-\-dry\-run\fR] [\fB\-\-full\fR]
One run for every configured directory (or the named ones), then exit. \fB\-\-dry\-run\fR prints the plan and changes nothing; \fB\-\-full\fR ignores delta cursors.
.TP
\fBcheck\fR
Verify config, credentials, permissions and store reachability, one line each, with a hint on failure.
.TP
\fBdaemon\fR
Run every directory on its schedule until SIGTERM or SIGINT; SIGHUP reloads the config (a bad one is logged and the old one kept). Serves /healthz and /metrics when \fB[daemon] listen\fR is set; speaks the systemd notify protocol.
.TP
\fBstatus\fR [\fB\-\-json\fR]
Last run per directory, next run, consecutive failures, and what the safety guards hold (deactivations, field changes, a directory's creates), with the command that releases it.
.TP
\fBhistory\fR [\fB\-\-directory\fR NAME] [\fB\-\-user\fR TEXT] [\fB\-\-since\fR TIME] [\fB\-\-limit\fR N] [\fB\-\-json\fR]
The action log, newest first.
.TP
\fBapprove\fR NAME
Apply what a safety guard held back for directory NAME: its held deactivations and held field changes; a directory held because it looked renamed is released as a new one, and its next run creates its learners.
.TP
\fBrename-directory\fR OLD NEW
Give a directory a new name: move its learners in the store and its snapshot, cursor, holds and history in the state DB from OLD to NEW, then rename it in the config. Refused when NEW already has learners or a snapshot, or OLD is unknown.
.TP
\fBreload\fR \fB\-\-pid\fR PID
Validate the config, then send the daemon (PID) SIGHUP to re\-read it; a bad config exits 2 and the daemon is not signalled. The unit's \fBExecReload=\fR, so \fBsystemctl reload learner\-sync\fR fails on a bad config.
.SH "EXIT STATUS"
.TP
\fB0\fR
Every directory synced.
.TP
\fB2\fR
Bad usage or config (the message names the file, line and key).
.TP
\fB3\fR
At least one directory failed (source, auth or store error); the others still ran.
.TP
\fB4\fR
A safety guard held something back (deactivations, a mass change of one field, or the creates of a directory that looks renamed); everything else was applied. A failure outranks a held guard.
.SH "ENVIRONMENT"
.TP
\fBLEARNER_SYNC_CONFIG\fR
Config file when \fB\-\-config\fR is not given.
.TP
\fBLEARNER_SYNC_LOG\fR
Log filter, e.g. \fBdebug\fR.
.SH "FILES"
.TP
\fI/etc/learner\-sync/config.toml\fR
The configuration (see the commented example shipped with the package).
.TP
\fI/var/lib/learner\-sync/\fR
State DB and the embedded SQLite learner store.
"#;

pub fn manpage() -> Exit {
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(Cli::command());
    let rendered = man
        .render_title(&mut out)
        .and_then(|_| man.render_name_section(&mut out))
        .and_then(|_| man.render_synopsis_section(&mut out))
        .and_then(|_| man.render_description_section(&mut out))
        .and_then(|_| man.render_options_section(&mut out))
        .and_then(|_| out.write_all(EXTRA.as_bytes()))
        .and_then(|_| man.render_version_section(&mut out));
    if let Err(e) = rendered {
        eprintln!("learner-sync: cannot render the man page: {e}");
        return Exit::Failed;
    }
    match std::io::stdout().write_all(&out) {
        Ok(()) => Exit::Ok,
        Err(_) => Exit::Failed,
    }
}
