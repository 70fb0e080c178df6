//! Logs: one event per line on stderr, text or JSON; journald-native under systemd.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Always in effect unless `LEARNER_SYNC_LOG` names the target itself: the migration
/// crate logs every migration step at info.
const QUIET_DEPENDENCIES: &str = "rusqlite_migration=warn";

/// Whether stderr is the journal, decided once (fd 2 does not change under us).
static JOURNAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// A command's closing error on stderr (`learner-sync: ...`): at priority err in the
/// journal, so `journalctl -p err` finds why a unit's command failed.
pub fn error_line(message: &str) {
    let message = crate::redact::scrub(message);
    if *JOURNAL.get_or_init(stderr_is_journal) {
        eprintln!("<3>learner-sync: {message}");
    } else {
        eprintln!("learner-sync: {message}");
    }
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::new(filter_spec(
        std::env::var("LEARNER_SYNC_LOG").ok().as_deref(),
    ));
    let journal = *JOURNAL.get_or_init(stderr_is_journal);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::Scrubbing(std::io::stderr))
        .with_target(false);
    let _ = match (format, journal) {
        // journald stamps every line itself; the `<N>` prefix gives it the priority.
        (LogFormat::Text, true) => builder
            .with_ansi(false)
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .try_init(),
        (LogFormat::Text, false) => builder.with_ansi(false).try_init(),
        (LogFormat::Json, true) => builder
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_target(false),
            ))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .try_init(),
        (LogFormat::Json, false) => builder.json().flatten_event(true).try_init(),
    };
}

/// The filter: `LEARNER_SYNC_LOG` (default `info`), plus the dependency default unless
/// the admin's value names that target.
fn filter_spec(env: Option<&str>) -> String {
    let user = env
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let target = QUIET_DEPENDENCIES.split('=').next().unwrap_or_default();
    if user.contains(target) {
        user.to_string()
    } else {
        format!("{user},{QUIET_DEPENDENCIES}")
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` for a unit whose stderr is the journal;
/// it counts only if fd 2 is still that stream (not redirected by a wrapper script).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

/// The sd-daemon(3) priority prefix for a level, as journald reads it off a stream.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Any event format, each line prefixed with `<N>` (its syslog priority).
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let prio = priority(event.metadata().level());
        // Formatted first, so that every line of a multi-line message gets the prefix:
        // journald gives a line without one the unit's default priority (info).
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        for part in line.trim_end_matches('\n').split('\n') {
            writeln!(writer, "<{prio}>{part}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dependency_default_stays_when_the_admin_sets_a_level() {
        assert_eq!(filter_spec(None), "info,rusqlite_migration=warn");
        assert_eq!(filter_spec(Some("debug")), "debug,rusqlite_migration=warn");
        assert_eq!(
            filter_spec(Some("debug,rusqlite_migration=trace")),
            "debug,rusqlite_migration=trace"
        );
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
