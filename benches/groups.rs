//! Benchmark of groups (issue 16): 100,000 users in 2,000 groups (50 members each on
//! average), from the mock Graph (tests/it/support/graph_mock.rs: 100 users per delta
//! page, up to 999 members per transitiveMembers page) into the SQLite store; the
//! initial sync and a no-change run, wall time, peak RSS and the Graph requests. Then
//! the same through a CSV `groups` column, without any network.
//!
//! `cargo bench --bench groups` (`GROUPS_BENCH_USERS`, `GROUPS_BENCH_GROUPS` for other
//! sizes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod mocks;
use mocks::graph_mock;
#[path = "support/mod.rs"]
mod support;

use std::fmt::Write;

use graph_mock::GraphMock;

const SECRET: &str = "bench-secret";

fn size(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// Run `sync` through the measurer (a child forked from this process, which holds the
/// mock tenant, would be charged with its memory) and print the figures.
fn measure(
    name: &str,
    config: &std::path::Path,
    envs: &[(&str, &str)],
    requests: impl Fn() -> Option<usize>,
) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_learner-sync"));
    cmd.args(["sync", "--config"])
        .arg(config)
        .env("LEARNER_SYNC_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = config.with_extension("rss");
    let stdout = std::fs::File::create(config.with_extension("stdout")).unwrap();
    let started = std::time::Instant::now();
    let status = support::through_measurer(&cmd, &out)
        .stdout(stdout)
        .status()
        .expect("spawn");
    let wall = started.elapsed();
    assert!(status.success(), "measurer");
    let (rss_kib, exit, cpu_ms) = support::measured_with_cpu(&out);
    let text = std::fs::read_to_string(config.with_extension("stdout")).unwrap_or_default();
    assert_eq!(exit, 0, "{name}: {text}");
    let groups_line = text
        .lines()
        .find(|l| l.contains("groups:"))
        .unwrap_or("")
        .trim();
    println!(
        "{name:<22} wall {:>6.3} s  cpu {:>5} ms  peak RSS {:>6.1} MB{}\n{:<22} {groups_line}",
        wall.as_secs_f64(),
        cpu_ms,
        rss_kib as f64 / 1024.0,
        requests()
            .map(|r| format!("  {r:>5} requests"))
            .unwrap_or_default(),
        ""
    );
}

fn main() {
    support::act_as_measurer_if_asked();
    let users = size("GROUPS_BENCH_USERS", 100_000);
    let groups = size("GROUPS_BENCH_GROUPS", 2_000);
    println!(
        "groups: {users} users in {groups} groups ({} members each on average), {}",
        users / groups,
        support::machine()
    );

    // Entra: every user in one group of its own (i % groups).
    let mock = GraphMock::start(SECRET);
    {
        let mut s = mock.state();
        s.page_size = 100;
        for i in 0..users {
            let u = graph_mock::user(
                &id(i),
                &format!("user{i}@contoso.test"),
                &format!("Given{i}"),
                &format!("Family{i}"),
            );
            s.users.insert(id(i), u.clone());
            s.changes.push(u);
        }
        for g in 0..groups {
            let members: Vec<String> = (g..users).step_by(groups).map(id).collect();
            let refs: Vec<&str> = members.iter().map(String::as_str).collect();
            s.add_group(&format!("grp-{g:05}"), &format!("Team {g:05}"), &refs);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let base = mock.base();
    std::fs::write(
        &config,
        format!(
            "[sync]\nstate_db = \"state.db\"\nmax_deactivation_percent = 100\n\n[store]\nkind = \"sqlite\"\npath = \"learners.db\"\n\n\
             [[directory]]\nname = \"bench\"\nkind = \"entra\"\ntenant_id = \"tenant-1\"\nclient_id = \"client-1\"\n\
             client_secret = {{ env = \"BENCH_SECRET\" }}\nauthority_url = \"{base}\"\ngraph_url = \"{base}/v1.0\"\ngroups = {{ prefix = \"Team\" }}\n"
        ),
    )
    .unwrap();
    let envs = [("BENCH_SECRET", SECRET)];
    for name in ["entra initial sync", "entra no-change run"] {
        mock.clear_log();
        measure(name, &config, &envs, || Some(mock.log().len()));
    }

    // CSV: the same population and groups in a `groups` column.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[sync]\nstate_db = \"state.db\"\nmax_deactivation_percent = 100\n[store]\nkind = \"sqlite\"\npath = \"learners.db\"\n\
         [[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\ngroups = { prefix = \"\" }\n",
    )
    .unwrap();
    let mut csv = String::from("external_id,user_name,email,groups\n");
    for i in 0..users {
        let _ = writeln!(
            csv,
            "{},user{i}@contoso.test,user{i}@contoso.test,Team {:05}",
            id(i),
            i % groups
        );
    }
    std::fs::write(dir.path().join("hr.csv"), csv).unwrap();
    for name in ["csv initial sync", "csv no-change run"] {
        measure(name, &config, &[], || None);
    }
}
