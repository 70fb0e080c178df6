//! Test-only fault points: `LEARNER_SYNC_FAULT=<name>` makes the process abort at the
//! named point, so crash tests can stop a run exactly between two of its steps.
//! Unset (always, in production) it costs one environment lookup per point.

pub fn point(name: &str) {
    if std::env::var("LEARNER_SYNC_FAULT").is_ok_and(|v| v == name) {
        eprintln!("learner-sync: fault point {name}: aborting");
        std::process::abort();
    }
}
