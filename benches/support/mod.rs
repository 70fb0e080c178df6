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

/// Linux starts a forked child's peak RSS at the parent's RSS at fork time, so a
/// benchmark whose own process is large (a mock tenant of 100,000 users) would measure
/// itself. Such a benchmark spawns the binary through a small intermediate instead:
/// its own executable run again with `BENCH_MEASURE_OUT=<file>`, which starts fresh,
/// runs the command given after its arguments, and writes that child's peak RSS (KiB)
/// and exit code to the file. Call this first thing in `main`.
pub fn act_as_measurer_if_asked() {
    let Ok(out) = std::env::var("BENCH_MEASURE_OUT") else {
        return;
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (program, rest) = args.split_first().expect("a command to measure");
    #[allow(clippy::zombie_processes)]
    let child = Command::new(program)
        .args(rest)
        .env_remove("BENCH_MEASURE_OUT")
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert!(pid > 0, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let cpu_ms = |t: libc::timeval| t.tv_sec * 1000 + t.tv_usec / 1000;
    std::fs::write(
        &out,
        format!(
            "{} {code} {}",
            usage.ru_maxrss,
            cpu_ms(usage.ru_utime) + cpu_ms(usage.ru_stime)
        ),
    )
    .unwrap();
    std::process::exit(0);
}

/// Wrap `cmd` so that it runs under the measurer; returns the wrapper command and the
/// file where `(peak RSS KiB, exit code)` will be.
pub fn through_measurer(cmd: &Command, out: &Path) -> Command {
    let mut wrapper = Command::new(std::env::current_exe().unwrap());
    wrapper.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapper.env(k, v),
            None => wrapper.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapper.current_dir(dir);
    }
    wrapper.env("BENCH_MEASURE_OUT", out);
    wrapper
}

/// `(peak RSS KiB, exit code)` written by the measurer.
pub fn measured(out: &Path) -> (i64, i32) {
    let (rss, code, _) = measured_with_cpu(out);
    (rss, code)
}

/// `(peak RSS KiB, exit code, CPU ms user + system)` written by the measurer. CPU time
/// depends less on the machine's load than wall time does.
pub fn measured_with_cpu(out: &Path) -> (i64, i32, i64) {
    let text = std::fs::read_to_string(out).unwrap();
    let mut parts = text.split_whitespace();
    let rss = parts.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
    let code = parts.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
    let cpu = parts.next().and_then(|v| v.parse().ok()).unwrap_or(-1);
    (rss, code, cpu)
}

/// The machine's load average (1, 5, 15 minutes), to print beside every figure.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
