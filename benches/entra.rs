//! Benchmark of the `entra` source: the release binary against the mock Graph
//! (tests/it/support/graph_mock.rs) with a tenant of 100,000 users, 999 per page.
//!
//! `cargo bench --bench entra` prints, per scenario: wall time, the binary's peak
//! RSS and the Graph requests it made. Scenarios: initial sync, a no-change delta
//! run, a delta run with 1,000 changes, and a full re-read with a per-page latency
//! (default 200 ms; `ENTRA_BENCH_LATENCY_MS`) compared with the floor pages x latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod mocks;
use mocks::graph_mock;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use graph_mock::GraphMock;
use serde_json::json;

const USERS: usize = 100_000;
const PAGE: usize = 999;
const SECRET: &str = "bench-secret";

struct Measured {
    wall: Duration,
    peak_rss_kib: i64,
    requests: usize,
    pages: usize,
    /// From the first delta request's arrival to the last one's (mock clock).
    listing_span: Duration,
    exit: i32,
}

fn run(dir: &std::path::Path, mock: &GraphMock, args: &[&str]) -> Measured {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_learner-sync"));
    cmd.args(args)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("BENCH_SECRET", SECRET)
        .env(
            "LEARNER_SYNC_LOG",
            "info,learner_sync::source::entra=debug,rusqlite_migration=warn",
        )
        .env_remove("LEARNER_SYNC_FAULT")
        .stdout(std::process::Stdio::null());
    measure(mock, cmd)
}

fn measure(mock: &GraphMock, cmd: std::process::Command) -> Measured {
    mock.clear_log();
    let started = Instant::now();
    // Through a small intermediate process: this one holds the mock tenant, and a child
    // forked from it would be charged with its memory (see support::act_as_measurer_if_asked).
    let out = std::env::temp_dir().join(format!("entra-bench-{}.rss", std::process::id()));
    let status = support::through_measurer(&cmd, &out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("spawn");
    assert!(status.success(), "measurer");
    let (peak_rss_kib, exit) = support::measured(&out);
    let wall = started.elapsed();
    let (log, arrived) = {
        let s = mock.state();
        (s.log.clone(), s.arrived.clone())
    };
    let delta_times: Vec<Instant> = log
        .iter()
        .zip(&arrived)
        .filter(|(l, _)| l.starts_with("GET /v1.0/users/delta"))
        .map(|(_, t)| *t)
        .collect();
    let listing_span = match (delta_times.first(), delta_times.last()) {
        (Some(a), Some(b)) => b.duration_since(*a),
        _ => Duration::ZERO,
    };
    let requests = log.iter().filter(|l| l.starts_with("GET ")).count();
    let pages = log
        .iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .count();
    Measured {
        wall,
        peak_rss_kib,
        requests,
        pages,
        listing_span,
        exit,
    }
}

fn report(name: &str, m: &Measured) {
    println!(
        "{name:<28} wall {:>8.3} s   peak RSS {:>7.1} MiB   requests {:>4}   delta pages {:>4}   exit {}",
        m.wall.as_secs_f64(),
        m.peak_rss_kib as f64 / 1024.0,
        m.requests,
        m.pages,
        m.exit
    );
}

fn main() {
    support::act_as_measurer_if_asked();
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: keep it quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("entra bench: run with `cargo bench --bench entra`");
        return;
    }
    let latency_ms: u64 = std::env::var("ENTRA_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mock = GraphMock::start(SECRET);
    {
        let mut s = mock.state();
        s.page_size = PAGE;
        for i in 0..USERS {
            let id = format!("{i:08x}-0000-4000-8000-000000000000");
            let mut u = graph_mock::user(
                &id,
                &format!("user{i}@contoso.test"),
                &format!("Given{i}"),
                &format!("Family{i}"),
            );
            u["department"] = json!(format!("Dept{}", i % 50));
            u["employeeId"] = json!(format!("E{i:06}"));
            s.users.insert(id.clone(), u.clone());
            s.changes.push(u);
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let base = mock.base();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            r#"[sync]
state_db = "state.db"
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "bench"
kind = "entra"
tenant_id = "tenant-1"
client_id = "client-1"
client_secret = {{ env = "BENCH_SECRET" }}
authority_url = "{base}"
graph_url = "{base}/v1.0"
"#
        ),
    )
    .expect("config");

    println!(
        "entra bench: {USERS} users, {PAGE} per page, mock Graph on {base}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let initial = run(dir.path(), &mock, &["sync"]);
    report("initial sync", &initial);

    let no_change = run(dir.path(), &mock, &["sync"]);
    report("no-change delta run", &no_change);

    for i in 0..1_000 {
        let id = format!("{:08x}-0000-4000-8000-000000000000", i * 97);
        mock.update(&id, json!({"department": format!("Moved{i}")}));
    }
    let changed = run(dir.path(), &mock, &["sync"]);
    report("1,000-change delta run", &changed);

    // Side by side: Microsoft's Python SDK walking the same delta round (no latency).
    if let Ok(python) = std::env::var("ENTRA_BENCH_PYTHON") {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/entra_msgraph_baseline.py"
        );
        let mut cmd = std::process::Command::new(python);
        cmd.arg(script).arg(format!("{base}/v1.0"));
        let py = measure(&mock, cmd);
        report("msgraph-sdk (Python) round", &py);
    }

    mock.state().latency = Duration::from_millis(latency_ms);
    let slow = run(dir.path(), &mock, &["sync", "--full"]);
    report(&format!("full re-read, {latency_ms} ms/page"), &slow);
    let floor = slow.pages as f64 * latency_ms as f64 / 1000.0;
    // The listing ends when the last page's answer arrives: its arrival + one latency.
    let listing = slow.listing_span.as_secs_f64() + latency_ms as f64 / 1000.0;
    println!(
        "latency mode: {} pages x {latency_ms} ms = floor {floor:.2} s; listing {listing:.2} s, listing / floor = {:.3}; whole run / floor = {:.3}",
        slow.pages,
        listing / floor,
        slow.wall.as_secs_f64() / floor
    );
}
