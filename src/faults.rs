//! Fault points for the crash tests: `LEARNER_SYNC_FAULT=<name>` makes the process
//! abort at the named point, so a test can stop a run exactly between two of its steps;
//! `LEARNER_SYNC_PAUSE=<name>` stops it there once (SIGSTOP) until it is continued.
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

/// `LEARNER_SYNC_PAUSE=<name>`: the first time the process reaches the named point it
/// stops itself (SIGSTOP), as a paused VM or a long GC pause would stop it, until a
/// test sends SIGCONT: how the failover tests freeze a daemon mid-run.
#[cfg(feature = "faults")]
pub fn pause(name: &str) {
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("LEARNER_SYNC_PAUSE").is_ok_and(|v| v == name)
        && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        eprintln!("learner-sync: pause point {name}: stopping (SIGSTOP)");
        // SAFETY: raise has no preconditions; SIGSTOP stops the whole process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
        eprintln!("learner-sync: pause point {name}: continued");
    }
}

#[cfg(not(feature = "faults"))]
#[inline(always)]
pub fn pause(_name: &str) {}
