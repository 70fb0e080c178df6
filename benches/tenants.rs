//! Benchmark (issue 17): many directories of many users on mock Graph (100 users per
//! delta page, one shared multi-tenant credential), run by the real daemon in three
//! setups: one daemon into SQLite, one daemon into PostgreSQL, three daemons sharing
//! PostgreSQL (each with its own state DB). Per setup: the time to the first full sync
//! of all (every directory's learners in the store), then an idle window: requests and
//! the daemons' CPU ms per directory poll, and each daemon's peak RSS.
//!
//! `cargo bench --bench tenants`; `TENANTS_BENCH_DIRECTORIES` (default 1000),
//! `TENANTS_BENCH_USERS` (default 1000), `TENANTS_BENCH_IDLE_S` (default 60: the idle
//! window, with every directory on a 30 s schedule), `TENANTS_BENCH_SETUPS`
//! (default `sqlite,postgres,postgres3`). PostgreSQL is a throwaway cluster started by
//! `scripts/pg-cluster` (fsync off, as for the tests), or the server `BENCH_PG` names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod mocks;
use mocks::graph_mock;
#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graph_mock::GraphMock;

const SECRET: &str = "bench-secret";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tenant(users: usize) -> GraphMock {
    let mock = GraphMock::start(SECRET);
    let mut s = mock.state();
    s.page_size = 100;
    for i in 0..users {
        let id = format!("{i:08x}-0000-4000-8000-000000000000");
        let mut u = graph_mock::user(
            &id,
            &format!("user{i}@contoso.test"),
            &format!("Given{i}"),
            &format!("Family{i}"),
        );
        u["department"] = serde_json::json!(format!("Dept{}", i % 50));
        s.users.insert(id, u.clone());
        s.changes.push(u);
    }
    drop(s);
    mock
}

fn config(dir: &Path, base: &str, store: &str, directories: usize) {
    let mut c = format!(
        "[sync]\nstate_db = \"state.db\"\nschedule = \"every 30s\"\nconcurrency = 4\nmax_deactivation_percent = 100\n\n\
         [credential.app]\nclient_id = \"client-1\"\nclient_secret = {{ env = \"BENCH_SECRET\" }}\n\n[store]\n{store}\n"
    );
    for d in 0..directories {
        c.push_str(&format!(
            "\n[[directory]]\nname = \"t{d:04}\"\nkind = \"entra\"\ntenant_id = \"tenant-1\"\ncredential = \"app\"\nauthority_url = \"{base}\"\ngraph_url = \"{base}/v1.0\"\n"
        ));
    }
    std::fs::write(dir.join("config.toml"), c).unwrap();
}

fn start_daemon(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_learner-sync"))
        .arg("daemon")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env("BENCH_SECRET", SECRET)
        .env("LEARNER_SYNC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap()
}

/// `(cpu ms, peak RSS KiB)` of a running process, from /proc.
fn proc_usage(pid: u32) -> (f64, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted from field 3 here.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks * 1000.0 / hz, hwm)
}

fn learners_in(store: &Store) -> i64 {
    match store {
        Store::Sqlite(path) => {
            let Ok(conn) = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            ) else {
                return 0;
            };
            let _ = conn.busy_timeout(Duration::from_secs(5));
            conn.query_row("SELECT count(*) FROM learners", [], |r| r.get(0))
                .unwrap_or(0)
        }
        Store::Postgres(url) => {
            let out = Command::new("psql")
                .args(["-X", "-A", "-t", "-q", "-d", url, "-c"])
                .arg("SELECT CASE WHEN to_regclass('learners') IS NULL THEN 0 ELSE (SELECT count(*) FROM learners) END")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        }
    }
}

enum Store {
    Sqlite(PathBuf),
    Postgres(String),
}

fn psql(url: &str, sql: &str) {
    let ok = Command::new("psql")
        .args(["-X", "-q", "-d", url, "-c", sql])
        .status()
        .unwrap()
        .success();
    assert!(ok, "psql {sql}");
}

fn pg_cluster(what: &str, dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster");
    let out = Command::new(script).arg(what).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "pg-cluster {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn delta_polls(mock: &GraphMock) -> (usize, usize) {
    let s = mock.state();
    let polls = s
        .log
        .iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .count();
    (polls, s.log.len())
}

fn setup(name: &str, daemons: usize, pg: Option<&str>, dirs: usize, users: usize, idle: u64) {
    let mock = tenant(users);
    let root = tempfile::tempdir().unwrap();
    let (store_toml, store) = match pg {
        None => (
            "kind = \"sqlite\"\npath = \"learners.db\"".to_string(),
            Store::Sqlite(root.path().join("d0/learners.db")),
        ),
        Some(base) => {
            let db = format!("tenants_{daemons}_{}", std::process::id());
            psql(base, &format!("CREATE DATABASE {db}"));
            let mut url = url::Url::parse(base).unwrap();
            url.set_path(&format!("/{db}"));
            (
                format!("kind = \"postgres\"\nurl = \"{url}\""),
                Store::Postgres(url.to_string()),
            )
        }
    };
    let folders: Vec<PathBuf> = (0..daemons)
        .map(|i| {
            let d = root.path().join(format!("d{i}"));
            std::fs::create_dir_all(&d).unwrap();
            config(&d, &mock.base(), &store_toml, dirs);
            d
        })
        .collect();
    let want = (dirs * users) as i64;
    let started = Instant::now();
    let mut children: Vec<Child> = folders.iter().map(|d| start_daemon(d)).collect();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if learners_in(&store) >= want {
            break;
        }
        for (c, d) in children.iter_mut().zip(&folders) {
            if let Some(status) = c.try_wait().unwrap() {
                panic!(
                    "{name}: a daemon exited ({status}): {}",
                    std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "{name}: no full sync in an hour"
        );
    }
    let first_full = started.elapsed();
    let (polls_before, requests_before) = delta_polls(&mock);
    let cpu_before: f64 = children.iter().map(|c| proc_usage(c.id()).0).sum();
    std::thread::sleep(Duration::from_secs(idle));
    let (polls_after, requests_after) = delta_polls(&mock);
    let usage: Vec<(f64, i64)> = children.iter().map(|c| proc_usage(c.id())).collect();
    let cpu_after: f64 = usage.iter().map(|u| u.0).sum();
    let polls = (polls_after - polls_before).max(1);
    let rss: Vec<String> = usage
        .iter()
        .map(|u| format!("{:.1}", u.1 as f64 / 1024.0))
        .collect();
    println!(
        "{name:<28} first full sync of all {:>7.1} s   idle: {polls:>5} polls, {:.2} requests and {:.2} CPU ms per poll   peak RSS {} MiB   load {}",
        first_full.as_secs_f64(),
        (requests_after - requests_before) as f64 / polls as f64,
        (cpu_after - cpu_before) / polls as f64,
        rss.join(" / "),
        support::load()
    );
    for mut c in children {
        // SAFETY: SIGTERM to our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let _ = c.wait();
    }
}

fn main() {
    let dirs = env_or("TENANTS_BENCH_DIRECTORIES", 1000) as usize;
    let users = env_or("TENANTS_BENCH_USERS", 1000) as usize;
    let idle = env_or("TENANTS_BENCH_IDLE_S", 60);
    let setups = std::env::var("TENANTS_BENCH_SETUPS")
        .unwrap_or_else(|_| "sqlite,postgres,postgres3".into());
    println!(
        "tenants: {dirs} directories x {users} users, 100 per delta page, {}",
        support::machine()
    );
    let cluster = tempfile::tempdir().unwrap();
    let cluster_dir = cluster.path().join("pg");
    let mut started_cluster = false;
    let mut pg = || -> String {
        match std::env::var("BENCH_PG") {
            Ok(url) => url,
            Err(_) => {
                started_cluster = true;
                pg_cluster("start", &cluster_dir)
            }
        }
    };
    let mut pg_url: Option<String> = None;
    for s in setups.split(',') {
        match s {
            "sqlite" => setup("one daemon, SQLite", 1, None, dirs, users, idle),
            "postgres" | "postgres3" => {
                let url = pg_url.get_or_insert_with(&mut pg).clone();
                let (label, n) = if s == "postgres" {
                    ("one daemon, PostgreSQL", 1)
                } else {
                    ("three daemons, PostgreSQL", 3)
                };
                setup(label, n, Some(&url), dirs, users, idle);
            }
            other => panic!("unknown setup {other}"),
        }
    }
    if started_cluster {
        pg_cluster("stop", &cluster_dir);
    }
}
