//! Google source benchmark: the real release binary against the loopback mock with a
//! domain of 100,000 users (500 per page). Full run (all creates), no-change run, and
//! the same with a per-page latency, compared with the latency floor (pages x latency).
//! First, the floor of the same pages: a minimal client (this executable run again with
//! `BENCH_FLOOR_URL`) listing every page with the binary's `fields=` mask and parsing
//! each body into JSON objects, nothing else (its token is issued by the mock directly).
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

const FLOOR_TOKEN: &str = "ya29.bench-floor";

/// The floor (see the module comment), when asked through `BENCH_FLOOR_URL`.
fn act_as_floor_if_asked() {
    let Ok(base) = std::env::var("BENCH_FLOOR_URL") else {
        return;
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        #[serde(default)]
        users: Vec<serde_json::Map<String, serde_json::Value>>,
        next_page_token: Option<String>,
    }
    let http = reqwest::blocking::Client::new();
    let mut token: Option<String> = None;
    let mut users = 0;
    loop {
        let mut url = reqwest::Url::parse(&format!("{base}/admin/directory/v1/users")).unwrap();
        url.query_pairs_mut()
            .append_pair("customer", "my_customer")
            .append_pair("maxResults", "500")
            .append_pair(
                "fields",
                learner_sync::source::google::directory::USER_FIELDS,
            );
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("pageToken", t);
        }
        let body = http
            .get(url)
            .bearer_auth(FLOOR_TOKEN)
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        let page: Page = serde_json::from_slice(&body).unwrap();
        users += page.users.len();
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert!(users > 0);
    std::process::exit(0);
}

/// Wall time of the floor, in its own process.
fn floor(mock: &GoogleMock) -> Duration {
    mock.with(|s| s.issued.push(FLOOR_TOKEN.to_string()));
    let started = Instant::now();
    let status = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_FLOOR_URL", mock.url())
        .status()
        .expect("floor");
    assert!(status.success());
    started.elapsed()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

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
    act_as_floor_if_asked();
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

    let floor_wall = floor(&mock);
    println!(
        "floor: fetch + parse:    {:>7.2} s  load {}",
        floor_wall.as_secs_f64(),
        load()
    );
    let dir = setup(&mock);
    let (wall, rss) = sync(dir.path());
    println!(
        "full run (all creates):  {:>7.2} s  peak RSS {rss:>6.1} MB  {:.2}x the floor  load {}",
        wall.as_secs_f64(),
        wall.as_secs_f64() / floor_wall.as_secs_f64(),
        load()
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
