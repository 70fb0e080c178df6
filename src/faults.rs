//! Fault points for the crash tests: `LEARNER_SYNC_FAULT=<name>` makes the process
//! abort at the named point, so a test can stop a run exactly between two of its steps.
//! Built only with the `faults` feature, which `cargo test` turns on and release
//! builds leave off: there a point is nothing at all.

#[cfg(feature = "faults")]
pub fn point(name: &str) {
    if std::env::var("LEARNER_SYNC_FAULT").is_ok_and(|v| v == name) {
        eprintln!("learner-sync: fault point {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn point(_name: &str) {}
