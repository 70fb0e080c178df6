//! Google source benchmark: the real release binary against the loopback mock with a
//! domain of 100,000 users (500 per page). Full run (all creates), no-change run, and
//! the same with a per-page latency, compared with the latency floor (pages x latency).
//!
//!     cargo bench --bench google            # GOOGLE_BENCH_USERS / GOOGLE_BENCH_LATENCY_MS override
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod mocks;
use mocks::google_mock;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use google_mock::{user, GoogleMock};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `learner-sync sync` under /usr/bin/time; returns (wall, peak RSS in MB).
fn sync(dir: &Path) -> (Duration, f64) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("MAXRSS_KB=%M")
        .arg(env!("CARGO_BIN_EXE_learner-sync"))
        .arg("sync")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env_remove("LEARNER_SYNC_CONFIG")
        .output()
        .expect("run learner-sync");
    let wall = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sync failed: {err}");
    let kb: f64 = err
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (wall, kb / 1024.0)
}

fn setup(mock: &GoogleMock) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("sa.json"), mock.key_json()).expect("key");
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            r#"[sync]
state_db = "state.db"
max_deactivations = 1000000
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "bench"
kind = "google"
service_account_key = {{ file = "sa.json" }}
admin_email = "{}"
directory_url = "{}"
"#,
            google_mock::ADMIN,
            mock.url()
        ),
    )
    .expect("config");
    dir
}

fn main() {
    let users = env_or("GOOGLE_BENCH_USERS", 100_000) as usize;
    let latency_ms = env_or("GOOGLE_BENCH_LATENCY_MS", 50);
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.users = (0..users)
            .map(|i| {
                user(
                    &format!("1{i:020}"),
                    &format!("user{i}@bench.example"),
                    "/Staff",
                )
            })
            .collect();
    });
    let pages = users.div_ceil(500);
    println!("google source: {users} users, {pages} pages of 500, mock on loopback");

    let dir = setup(&mock);
    let (wall, rss) = sync(dir.path());
    println!(
        "full run (all creates):  {:>7.2} s  peak RSS {rss:>6.1} MB",
        wall.as_secs_f64()
    );
    let (wall, rss) = sync(dir.path());
    println!(
        "no-change run:           {:>7.2} s  peak RSS {rss:>6.1} MB",
        wall.as_secs_f64()
    );

    mock.with(|s| s.page_latency = Duration::from_millis(latency_ms));
    let floor = Duration::from_millis(latency_ms) * pages as u32;
    let dir = setup(&mock);
    let (wall, rss) = sync(dir.path());
    println!(
        "full run, {latency_ms} ms/page:   {:>7.2} s  peak RSS {rss:>6.1} MB  floor {:.2} s  ratio {:.3}x",
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    );
    let (wall, rss) = sync(dir.path());
    println!(
        "no-change, {latency_ms} ms/page:  {:>7.2} s  peak RSS {rss:>6.1} MB  floor {:.2} s  ratio {:.3}x",
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    );
}
