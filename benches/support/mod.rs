//! Shared by the benchmarks: run the real binary and measure wall time and peak RSS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Measured {
    pub wall: Duration,
    pub peak_rss_mb: f64,
    pub exit: i32,
    pub stdout: String,
}

/// Run `learner-sync ARGS --config CONFIG`, waiting with wait4 to get this child's own
/// peak resident set size.
pub fn run(config: &Path, args: &[&str], envs: &[(&str, &str)]) -> Measured {
    let out_path = config.with_extension("stdout");
    let out = std::fs::File::create(&out_path).unwrap();
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_learner-sync"));
    cmd.args(args).arg("--config").arg(config).stdout(out);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // Reaped below by wait4, which also reports its peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4 failed");
    let wall = start.elapsed();
    Measured {
        wall,
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
        exit: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
    }
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores, {cpu}")
}
