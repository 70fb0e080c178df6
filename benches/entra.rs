//! Benchmark of the `entra` source: the release binary against the mock Graph
//! (tests/it/support/graph_mock.rs), 100 users per delta page as Graph serves them.
//!
//! `cargo bench --bench entra` prints, per tenant size: the floor (a minimal client
//! fetching and parsing the same delta pages, same `$select` with manager, in its own
//! process), then the binary's initial sync, a no-change delta run and a 1,000-change
//! delta run, each with wall time, CPU time, peak RSS and the Graph requests; last, a
//! full re-read with a per-page latency against the floor pages x latency.
//!
//! `ENTRA_BENCH_SIZES=50000,100000,...` (default 100000), `ENTRA_BENCH_PAGE` (default
//! 100), `ENTRA_BENCH_LATENCY_MS` (default 200; 0 skips the latency run, which reads
//! the last size), `ENTRA_BENCH_CALLGRIND=1` also counts the instructions of a
//! no-change run under valgrind (a figure the machine's load does not move), and
//! `ENTRA_BENCH_WRAP_INITIAL="perf record -e cpu-clock -g -o FILE --"` profiles the
//! initial sync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod mocks;
use mocks::graph_mock;
#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use graph_mock::GraphMock;
use serde_json::json;

const SECRET: &str = "bench-secret";

struct Measured {
    wall: Duration,
    peak_rss_kib: i64,
    cpu_ms: i64,
    requests: usize,
    pages: usize,
    /// From the first delta request's arrival to the last one's (mock clock).
    listing_span: Duration,
    exit: i32,
}

fn run(dir: &std::path::Path, mock: &GraphMock, args: &[&str]) -> Measured {
    run_wrapped(dir, mock, args, None)
}

/// `run`, under `wrap` (a profiler's command line, e.g. `perf record -g --`) if given.
fn run_wrapped(
    dir: &std::path::Path,
    mock: &GraphMock,
    args: &[&str],
    wrap: Option<&str>,
) -> Measured {
    let bin = env!("CARGO_BIN_EXE_learner-sync");
    let mut cmd = match wrap {
        Some(w) => {
            let mut words = w.split_whitespace();
            let mut cmd = std::process::Command::new(words.next().expect("a wrapper"));
            cmd.args(words).arg(bin);
            cmd
        }
        None => std::process::Command::new(bin),
    };
    cmd.args(args)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("BENCH_SECRET", SECRET)
        .env(
            "LEARNER_SYNC_LOG",
            "info,learner_sync::source::entra=debug,learner_sync::run=debug,rusqlite_migration=warn",
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
    let (peak_rss_kib, exit, cpu_ms) = support::measured_with_cpu(&out);
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
        cpu_ms,
        requests,
        pages,
        listing_span,
        exit,
    }
}

fn report(name: &str, m: &Measured, users: usize, floor: Option<&Measured>) {
    let ratio = floor.map_or(String::new(), |f| {
        format!(
            "   {:.2}x the floor",
            m.wall.as_secs_f64() / f.wall.as_secs_f64()
        )
    });
    println!(
        "{name:<28} wall {:>8.3} s   cpu {:>7.3} s   peak RSS {:>7.1} MiB ({:>5.0} B/user)   requests {:>5}   delta pages {:>5}   exit {}   load {}{ratio}",
        m.wall.as_secs_f64(),
        m.cpu_ms as f64 / 1000.0,
        m.peak_rss_kib as f64 / 1024.0,
        m.peak_rss_kib as f64 * 1024.0 / users.max(1) as f64,
        m.requests,
        m.pages,
        m.exit,
        support::load(),
    );
}

/// The floor, run as this executable with `BENCH_FLOOR_BASE=<mock base>`: one token
/// request, then every page of a fresh delta round with the binary's `$select`, each
/// body read and parsed into JSON objects as the binary parses it. Nothing else.
fn act_as_floor_if_asked() {
    let Ok(base) = std::env::var("BENCH_FLOOR_BASE") else {
        return;
    };
    let http = reqwest::blocking::Client::new();
    let token: serde_json::Value = http
        .post(format!("{base}/tenant-1/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "client-1"),
            ("client_secret", SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    #[derive(serde::Deserialize)]
    struct Page {
        value: Vec<serde_json::Map<String, serde_json::Value>>,
        #[serde(rename = "@odata.nextLink")]
        next_link: Option<String>,
    }
    let mut url = reqwest::Url::parse_with_params(
        &format!("{base}/v1.0/users/delta"),
        &[("$select", learner_sync::source::entra::SELECT)],
    )
    .unwrap()
    .to_string();
    let mut users = 0;
    loop {
        let body = http
            .get(&url)
            .header("authorization", &bearer)
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        let page: Page = serde_json::from_slice(&body).unwrap();
        users += page.value.len();
        match page.next_link {
            Some(next) => url = next,
            None => break,
        }
    }
    assert!(users > 0);
    std::process::exit(0);
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tenant(users: usize, page: usize) -> GraphMock {
    let mock = GraphMock::start(SECRET);
    let mut s = mock.state();
    s.page_size = page;
    for i in 0..users {
        let id = format!("{i:08x}-0000-4000-8000-000000000000");
        let mut u = graph_mock::user(
            &id,
            &format!("user{i}@contoso.test"),
            &format!("Given{i}"),
            &format!("Family{i}"),
        );
        u["department"] = json!(format!("Dept{}", i % 50));
        u["employeeId"] = json!(format!("E{i:06}"));
        // Everyone but the first ten reports to one of them (`manager@delta`).
        if i >= 10 {
            s.managers.insert(
                id.clone(),
                format!("{:08x}-0000-4000-8000-000000000000", i % 10),
            );
        }
        s.users.insert(id.clone(), u.clone());
        s.changes.push(u);
    }
    drop(s);
    mock
}

fn config(dir: &std::path::Path, base: &str) {
    std::fs::write(
        dir.join("config.toml"),
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
}

/// Instructions of one run under callgrind (`Collected : N` in its summary).
fn instructions(dir: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(env!("CARGO_BIN_EXE_learner-sync"))
        .arg("sync")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("BENCH_SECRET", SECRET)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split("Collected : ").nth(1))
        .and_then(|n| n.trim().parse().ok())
}

fn main() {
    support::act_as_measurer_if_asked();
    act_as_floor_if_asked();
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: keep it quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("entra bench: run with `cargo bench --bench entra`");
        return;
    }
    let sizes: Vec<usize> = std::env::var("ENTRA_BENCH_SIZES")
        .unwrap_or_else(|_| "100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let page = env_or("ENTRA_BENCH_PAGE", 100) as usize;
    let latency_ms = env_or("ENTRA_BENCH_LATENCY_MS", 200);
    println!(
        "entra bench: {}, {page} users per delta page",
        support::machine()
    );
    let mut last = None;
    for &users in &sizes {
        let mock = tenant(users, page);
        let dir = tempfile::tempdir().expect("temp dir");
        let base = mock.base();
        config(dir.path(), &base);
        println!("-- {users} users, mock Graph on {base}");

        let mut floor = std::process::Command::new(std::env::current_exe().unwrap());
        floor.env("BENCH_FLOOR_BASE", &base);
        let floor = measure(&mock, floor);
        report("floor: fetch + parse", &floor, users, None);

        let wrap = std::env::var("ENTRA_BENCH_WRAP_INITIAL").ok();
        let initial = run_wrapped(dir.path(), &mock, &["sync"], wrap.as_deref());
        report("initial sync", &initial, users, Some(&floor));

        let no_change = run(dir.path(), &mock, &["sync"]);
        report("no-change delta run", &no_change, users, None);
        if std::env::var("ENTRA_BENCH_CALLGRIND").is_ok() {
            match instructions(dir.path()) {
                Some(n) => println!("no-change delta run          {n} instructions (callgrind)"),
                None => println!("no-change delta run          callgrind did not run"),
            }
        }

        for i in 0..1_000.min(users) {
            let id = format!("{:08x}-0000-4000-8000-000000000000", (i * 97) % users);
            mock.update(&id, json!({"department": format!("Moved{i}")}));
        }
        let changed = run(dir.path(), &mock, &["sync"]);
        report("1,000-change delta run", &changed, users, None);
        last = Some((mock, dir, users));
    }

    let Some((mock, dir, users)) = last.filter(|_| latency_ms > 0) else {
        return;
    };
    mock.state().latency = Duration::from_millis(latency_ms);
    let slow = run(dir.path(), &mock, &["sync", "--full"]);
    report(
        &format!("full re-read, {latency_ms} ms/page"),
        &slow,
        users,
        None,
    );
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
