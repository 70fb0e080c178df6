//! Benchmark: a CSV directory of 100,000 learners into the SQLite store.
//! Measures the initial sync, a no-change re-sync and a 1%-changed re-sync (wall time
//! and peak RSS of the real release binary). Run: `cargo bench --bench csv_sync`
//! (`BENCH_LEARNERS=N` for another size; `BENCH_STORE=postgres` writes to a PostgreSQL
//! store instead: a throwaway cluster started by `scripts/pg-cluster`, or the server
//! `BENCH_PG=postgres://...` names).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod bench_support;

use std::fmt::Write;

/// The generator: `n` realistic rows; `changed_every` > 0 edits every n-th row's department.
fn generate(n: usize, changed_every: usize) -> String {
    const DEPTS: [&str; 8] = [
        "Finance",
        "Sales",
        "Engineering",
        "People",
        "Legal",
        "Support",
        "Marketing",
        "Operations",
    ];
    const TITLES: [&str; 5] = ["Analyst", "Manager", "Engineer", "Specialist", "Director"];
    let mut s = String::with_capacity(n * 160);
    s.push_str("external_id,user_name,email,given_name,family_name,display_name,department,job_title,employee_id,manager_email,active\n");
    for i in 0..n {
        let dept = if changed_every > 0 && i % changed_every == 0 {
            "Reorganised"
        } else {
            DEPTS[i % DEPTS.len()]
        };
        let _ = writeln!(
            s,
            "{:08x}-7c1e-4f5a-9b7d-{:012x},first{i}.last{i}@contoso.example,first{i}.last{i}@contoso.example,First{i},Last{i},\"Last{i}, First{i}\",{dept},{},{},manager{}@contoso.example,{}",
            i, i, TITLES[i % TITLES.len()], 100000 + i, i / 10, if i % 53 == 0 { "false" } else { "true" }
        );
    }
    s
}

fn main() {
    let n: usize = std::env::var("BENCH_LEARNERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let postgres = std::env::var("BENCH_STORE").is_ok_and(|s| s == "postgres");
    let cluster = dir.path().join("pg");
    let store = if postgres {
        let url = match std::env::var("BENCH_PG") {
            Ok(url) => url,
            Err(_) => pg_cluster("start", &cluster),
        };
        format!("kind = \"postgres\"\nurl = \"{url}\"")
    } else {
        "kind = \"sqlite\"\npath = \"learners.db\"".to_string()
    };
    std::fs::write(
        &config,
        format!("[sync]\nstate_db = \"state.db\"\nmax_deactivations = 1000000\nmax_deactivation_percent = 100\n[store]\n{store}\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n"),
    )
    .unwrap();
    let csv = dir.path().join("hr.csv");
    std::fs::write(&csv, generate(n, 0)).unwrap();
    println!(
        "csv_sync: {n} learners into {}, {}",
        if postgres { "PostgreSQL" } else { "SQLite" },
        bench_support::machine()
    );
    let report = |name: &str, m: &bench_support::Measured| {
        assert_eq!(m.exit, 0, "{name}: {}", m.stdout);
        println!(
            "{name:<22} wall {:>8.3} s   peak RSS {:>7.1} MB   {}",
            m.wall.as_secs_f64(),
            m.peak_rss_mb,
            m.stdout.trim()
        );
    };
    report("initial sync", &bench_support::run(&config, &["sync"], &[]));
    report(
        "no-change re-sync",
        &bench_support::run(&config, &["sync"], &[]),
    );
    std::fs::write(&csv, generate(n, 100)).unwrap();
    report(
        "1%-changed re-sync",
        &bench_support::run(&config, &["sync"], &[]),
    );
    if postgres && std::env::var("BENCH_PG").is_err() {
        pg_cluster("stop", &cluster);
    }
}

/// `scripts/pg-cluster start|stop DIR`; the URL it prints (on start).
fn pg_cluster(what: &str, dir: &std::path::Path) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster");
    let out = std::process::Command::new(script)
        .arg(what)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg-cluster {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
