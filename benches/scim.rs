//! Benchmark: the SCIM store against the reference server `scim2-server` (PyPI, in
//! .venv-scim; run scripts/scim-venv first) on loopback. For concurrency 1, 4 and 16:
//! an initial sync creating N learners, then a run where 1% changed (requests per
//! second and wall time of the real binary), and the server's own floor: the same
//! number of `POST /Users` sent by a plain HTTP client at the same concurrency.
//! Run: `cargo bench --bench scim` (`BENCH_LEARNERS=N`, default 10000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod bench_support;
#[path = "../tests/it/support/scim_server.rs"]
mod scim_server;

use std::fmt::Write;
use std::time::{Duration, Instant};

use scim_server::{ScimServer, TOKEN};

fn csv(n: usize, changed_every: usize) -> String {
    let mut s = String::from(
        "external_id,user_name,email,given_name,family_name,display_name,department,job_title,employee_id,active\n",
    );
    for i in 0..n {
        let dept = if changed_every > 0 && i % changed_every == 0 {
            "Reorganised"
        } else {
            "Sales"
        };
        let _ = writeln!(
            s,
            "{i:08x}-b1,first{i}.last{i}@contoso.example,first{i}.last{i}@contoso.example,First{i},Last{i},First{i} Last{i},{dept},Engineer,{},true",
            100000 + i
        );
    }
    s
}

struct Run {
    wall: Duration,
    requests: u64,
}

fn sync(dir: &std::path::Path) -> Run {
    let start = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_learner-sync"))
        .args(["sync", "--config"])
        .arg(dir.join("config.toml"))
        .env("SCIM_TOKEN", TOKEN)
        .env("LEARNER_SYNC_LOG", "learner_sync=info")
        .current_dir(dir)
        .output()
        .unwrap();
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sync failed: {stderr}");
    let requests = stderr
        .lines()
        .filter(|l| l.contains("applied to the SCIM provider"))
        .filter_map(|l| {
            let at = l.find("requests=")? + "requests=".len();
            l[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    Run { wall, requests }
}

/// The floor: `n` POST /Users straight to the server, `concurrency` in flight.
fn floor(server: &ScimServer, n: usize, concurrency: usize) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = server.base.clone();
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0;
        loop {
            while next < n && tasks.len() < concurrency {
                let (client, url) = (client.clone(), format!("{base}/Users"));
                let i = next;
                next += 1;
                tasks.spawn(async move {
                    let body = serde_json::json!({
                        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                        "userName": format!("floor{i}@contoso.example"),
                        "externalId": format!("floor-{i}"),
                        "active": true,
                    });
                    let r = client
                        .post(url)
                        .bearer_auth(TOKEN)
                        .header("Content-Type", "application/scim+json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                });
            }
            if tasks.join_next().await.is_none() {
                break;
            }
        }
        start.elapsed()
    })
}

fn main() {
    let n: usize = std::env::var("BENCH_LEARNERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    println!("machine: {}", bench_support::machine());
    println!("learners: {n}");
    println!("| concurrency | run | requests | wall (s) | requests/s |");
    println!("|---|---|---|---|---|");
    for concurrency in [1usize, 4, 16] {
        let server = ScimServer::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[sync]\nstate_db = \"state.db\"\n\n[store]\nkind = \"scim\"\nurl = \"{}\"\ntoken = {{ env = \"SCIM_TOKEN\" }}\nconcurrency = {concurrency}\ndialect = \"rfc\"\nmax_requests_per_second = 0\n\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n",
                server.base
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("hr.csv"), csv(n, 0)).unwrap();
        let first = sync(dir.path());
        std::fs::write(dir.path().join("hr.csv"), csv(n, 100)).unwrap();
        let changed = sync(dir.path());
        drop(server);
        let server = ScimServer::start();
        let floor_wall = floor(&server, n, concurrency);
        for (name, r) in [
            (format!("initial sync, {n} creates"), &first),
            (
                format!("1% changed ({} updates)", n.div_ceil(100)),
                &changed,
            ),
        ] {
            println!(
                "| {concurrency} | {name} | {} | {:.1} | {:.0} |",
                r.requests,
                r.wall.as_secs_f64(),
                r.requests as f64 / r.wall.as_secs_f64()
            );
        }
        println!(
            "| {concurrency} | floor: {n} plain POST /Users | {n} | {:.1} | {:.0} |",
            floor_wall.as_secs_f64(),
            n as f64 / floor_wall.as_secs_f64()
        );
    }
}
