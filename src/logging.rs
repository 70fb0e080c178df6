//! Logs: one event per line on stderr, text or JSON.

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;

use crate::cli::LogFormat;

/// Libraries that log credentials at debug level or below: yup-oauth2 prints the
/// token endpoint's whole answer, access token included. They are held at `warn`
/// whatever `LEARNER_SYNC_LOG` asks for.
const TALKS_SECRETS: &[&str] = &["yup_oauth2"];

fn may_hold_a_secret(m: &Metadata<'_>) -> bool {
    *m.level() > Level::WARN
        && TALKS_SECRETS
            .iter()
            .any(|t| m.target() == *t || m.target().starts_with(&format!("{t}::")))
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LEARNER_SYNC_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,rusqlite_migration=warn"));
    let never = filter_fn(|m| !may_hold_a_secret(m));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry
            .with(layer.with_ansi(false).with_filter(never))
            .try_init(),
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(never))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_library_debug_events_are_dropped_but_its_warnings_kept() {
        let meta = |level, target| {
            tracing::Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
                tracing::metadata::Kind::EVENT,
            )
        };
        assert!(may_hold_a_secret(&meta(
            Level::DEBUG,
            "yup_oauth2::service_account"
        )));
        assert!(may_hold_a_secret(&meta(Level::TRACE, "yup_oauth2")));
        assert!(!may_hold_a_secret(&meta(Level::WARN, "yup_oauth2")));
        assert!(!may_hold_a_secret(&meta(
            Level::DEBUG,
            "learner_sync::engine"
        )));
        assert!(!may_hold_a_secret(&meta(Level::DEBUG, "yup_oauth2_fork")));
    }

    struct Callsite;
    impl tracing::Callsite for Callsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!()
        }
    }
    static CALLSITE: Callsite = Callsite;
}
