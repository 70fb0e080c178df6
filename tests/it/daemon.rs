//! `learner-sync daemon`, the real binary, against CSV directories on a 1s schedule:
//! ticks, SIGHUP reloads, SIGTERM mid-run, /healthz and /metrics over HTTP.
//! Nothing here depends on how fast the machine is: every wait polls with a
//! generous deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::config_builder::q;
use common::daemon::{wait_for, Daemon, PATIENCE};
use common::{ConfigBuilder, Env};

/// `(external_id, department, active)` rows of a directory; None while the store is
/// missing or busy (the daemon writes it concurrently).
fn try_learners(db: &Path, directory: &str) -> Option<Vec<(String, Option<String>, bool)>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_secs(5)).ok()?;
    let mut stmt = conn
        .prepare("SELECT external_id, department, active FROM learners WHERE directory = ?1 ORDER BY external_id")
        .ok()?;
    let rows = stmt
        .query_map([directory], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? == 1))
        })
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some(rows)
}

fn config(schedule: &str, extra: &str, dirs: &[&str]) -> String {
    let mut config = ConfigBuilder::new()
        .sync("schedule", &q(schedule))
        .sync_lines(extra);
    for d in dirs {
        config = config.csv(d, &format!("{d}.csv"));
    }
    config.build()
}

const HEADER: &str = "external_id,user_name,email,department,active\n";

fn csv(rows: &[(&str, &str, bool)]) -> String {
    let mut s = HEADER.to_string();
    for (id, dept, active) in rows {
        s.push_str(&format!(
            "{id},{id}@example.com,{id}@example.com,{dept},{active}\n"
        ));
    }
    s
}

/// Replace a file atomically, so the daemon never reads half of it.
fn replace(env: &Env, rel: &str, text: &str) {
    let tmp = env.write(&format!("{rel}.tmp"), text);
    std::fs::rename(tmp, env.path(rel)).expect("rename");
}

fn get(port: u16, path: &str) -> (u16, String) {
    let resp = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(30))
        .send()
        .expect("GET");
    (resp.status().as_u16(), resp.text().expect("body"))
}

/// Scrape `/metrics` and parse the exposition.
fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200);
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parse metrics")
}

/// The value of the sample `metric{labels}` (a counter, gauge or untyped sample;
/// for a histogram, its count).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        })
}

#[test]
fn a_csv_change_shows_up_in_the_store_on_the_next_tick() {
    let env = Env::new();
    env.write(
        "config.toml",
        &config("every 1s", "max_deactivation_percent = 100", &["hr"]),
    );
    env.write(
        "hr.csv",
        &csv(&[("u1", "Sales", true), ("u2", "Sales", true)]),
    );
    let mut daemon = Daemon::start(&env);
    let db = env.path("learners.db");
    wait_for("the first run to create two learners", || {
        (try_learners(&db, "hr")?.len() == 2).then_some(())
    });

    // u1 moves department, u2 leaves, u3 joins.
    replace(
        &env,
        "hr.csv",
        &csv(&[("u1", "Finance", true), ("u3", "Ops", true)]),
    );
    let rows = wait_for("the next tick to apply the change", || {
        let rows = try_learners(&db, "hr")?;
        (rows.len() == 3 && rows.iter().any(|r| r.0 == "u2" && !r.2)).then_some(rows)
    });
    assert_eq!(
        rows,
        vec![
            ("u1".into(), Some("Finance".into()), true),
            ("u2".into(), Some("Sales".into()), false),
            ("u3".into(), Some("Ops".into()), true),
        ]
    );
    assert!(daemon.running());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

#[test]
fn sighup_with_a_valid_config_starts_syncing_a_new_directory() {
    let env = Env::new();
    env.write("config.toml", &config("every 1s", "", &["a"]));
    env.write("a.csv", &csv(&[("a1", "A", true)]));
    env.write("b.csv", &csv(&[("b1", "B", true), ("b2", "B", true)]));
    let mut daemon = Daemon::start(&env);
    let db = env.path("learners.db");
    wait_for("directory a to sync", || {
        (try_learners(&db, "a")?.len() == 1).then_some(())
    });
    assert_eq!(try_learners(&db, "b").unwrap_or_default().len(), 0);

    env.write("config.toml", &config("every 1s", "", &["a", "b"]));
    daemon.signal(libc::SIGHUP);
    wait_for("directory b to sync after the reload", || {
        (try_learners(&db, "b")?.len() == 2).then_some(())
    });
    assert!(daemon.log().contains("config reloaded"));
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

#[test]
fn sighup_with_an_invalid_config_logs_file_line_and_key_and_keeps_the_old_one() {
    let env = Env::new();
    env.write("config.toml", &config("every 1s", "", &["a"]));
    env.write("a.csv", &csv(&[("a1", "A", true)]));
    let mut daemon = Daemon::start(&env);
    let db = env.path("learners.db");
    wait_for("directory a to sync", || {
        (try_learners(&db, "a")?.len() == 1).then_some(())
    });

    // Line 4 holds an impossible value; the file also drops directory a.
    env.write(
        "config.toml",
        "[sync]\nschedule = \"every 1s\"\nstate_db = \"state.db\"\nconcurrency = 0\n",
    );
    daemon.signal(libc::SIGHUP);
    let log = wait_for("the reload error in the log", || {
        let log = daemon.log();
        log.contains("config reload failed").then_some(log)
    });
    let line = log
        .lines()
        .find(|l| l.contains("config reload failed"))
        .expect("error line");
    assert!(line.contains("config.toml:4: sync.concurrency"), "{line}");
    assert!(daemon.running(), "log:\n{log}");

    // The old config (with directory a) keeps syncing.
    replace(&env, "a.csv", &csv(&[("a1", "A", true), ("a2", "A", true)]));
    wait_for("directory a to keep syncing on the old config", || {
        (try_learners(&db, "a")?.len() == 2).then_some(())
    });
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

#[test]
fn sigterm_during_a_large_run_exits_in_bounded_time_and_leaves_a_consistent_store() {
    let env = Env::new();
    env.write("config.toml", &config("every 1s", "", &["big"]));
    let mut text = String::from(HEADER);
    for i in 0..50_000 {
        text.push_str(&format!(
            "u{i:05},u{i:05}@example.com,u{i:05}@example.com,D{},true\n",
            i % 7
        ));
    }
    env.write("big.csv", &text);
    let mut daemon = Daemon::start(&env);
    wait_for("the large run to start", || {
        daemon
            .log()
            .contains("run started directory=\"big\"")
            .then_some(())
    });
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
    // Grace period (10s) + abandon wait (5s) + runtime shutdown (1s), with slack.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert!(daemon.log().contains("daemon stopped"));

    // Whatever the run got to, a one-shot sync converges: every user exactly once.
    let out = env.run(&["sync"]);
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    let rows = try_learners(&env.path("learners.db"), "big").expect("store");
    assert_eq!(rows.len(), 50_000);
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), 50_000);
    assert!(rows.iter().all(|r| r.2));
    // And a second sync has nothing left to do.
    let again = env.run(&["sync"]);
    assert_eq!(common::code(&again), 0);
    assert!(
        common::stdout(&again).contains("created 0, updated 0, deactivated 0, reactivated 0"),
        "{}",
        common::stdout(&again)
    );
}

#[test]
fn healthz_and_metrics_report_learners_runs_and_a_failing_directory() {
    let env = Env::new();
    env.write(
        "config.toml",
        &format!(
            "{}\n[daemon]\nlisten = \"127.0.0.1:0\"\nunhealthy_after = 2\n",
            config(
                "every 1s",
                "max_deactivation_percent = 100",
                &["x", "broken"]
            )
        ),
    );
    // x4 was a learner and is now disabled in the CSV: 3 active, 1 inactive.
    env.write(
        "x.csv",
        &csv(&[
            ("x1", "A", true),
            ("x2", "A", true),
            ("x3", "B", true),
            ("x4", "B", true),
        ]),
    );
    let first = env.run(&["sync", "--directory", "x"]);
    assert_eq!(common::code(&first), 0, "{}", common::stderr(&first));
    env.write(
        "x.csv",
        &csv(&[
            ("x1", "A", true),
            ("x2", "A", true),
            ("x3", "B", true),
            ("x4", "B", false),
        ]),
    );
    // broken.csv does not exist: every run of `broken` fails.
    let mut daemon = Daemon::start(&env);
    let port = daemon.port();

    // `broken` fails more than 2 runs in a row: 503 naming it.
    let health: serde_json::Value = wait_for("/healthz to report 503", || {
        let (status, body) = get(port, "/healthz");
        (status == 503).then(|| serde_json::from_str(&body).expect("healthz JSON"))
    });
    assert_eq!(health["status"], "unhealthy");
    assert_eq!(health["scheduler_alive"], true);
    let failing = health["failing"].as_array().expect("failing");
    assert_eq!(failing.len(), 1, "{health}");
    assert_eq!(failing[0]["directory"], "broken");
    assert!(failing[0]["consecutive_failures"].as_u64().expect("n") > 2);

    // Meanwhile x synced, and the metrics say so.
    let m = wait_for("two ok runs of x", || {
        let m = scrape(port);
        (value(
            &m,
            "learner_sync_runs_total",
            &[("directory", "x"), ("outcome", "ok")],
        )? >= 2.0)
            .then_some(m)
    });
    let rows = try_learners(&env.path("learners.db"), "x").expect("store");
    let active = rows.iter().filter(|r| r.2).count() as f64;
    assert_eq!((active, rows.len() as f64 - active), (3.0, 1.0));
    assert_eq!(
        value(
            &m,
            "learner_sync_learners",
            &[("directory", "x"), ("state", "active")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &m,
            "learner_sync_learners",
            &[("directory", "x"), ("state", "inactive")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "learner_sync_actions_total",
            &[("directory", "x"), ("kind", "deactivated")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "learner_sync_held_deactivations", &[("directory", "x")]),
        Some(0.0)
    );
    assert!(
        value(
            &m,
            "learner_sync_runs_total",
            &[("directory", "broken"), ("outcome", "failed")]
        )
        .expect("failed runs")
            > 2.0
    );
    assert!(
        value(
            &m,
            "learner_sync_consecutive_failures",
            &[("directory", "broken")]
        )
        .expect("failures")
            > 2.0
    );
    let last = value(
        &m,
        "learner_sync_last_success_timestamp_seconds",
        &[("directory", "x")],
    )
    .expect("last success");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(last > now - 3600.0 && last <= now + 1.0, "{last} vs {now}");
    assert!(
        value(
            &m,
            "learner_sync_run_duration_seconds",
            &[("directory", "x")]
        )
        .expect("histogram")
            >= 2.0
    );
    assert!(value(
        &m,
        "learner_sync_last_success_timestamp_seconds",
        &[("directory", "broken")]
    )
    .is_none());
    // Every sample is per directory.
    let unlabelled: Vec<&str> = m
        .samples
        .iter()
        .filter(|s| s.labels.get("directory").is_none())
        .map(|s| s.metric.as_str())
        .collect();
    assert!(unlabelled.is_empty(), "{unlabelled:?}");
    let by_dir: BTreeMap<&str, usize> = m.samples.iter().fold(BTreeMap::new(), |mut acc, s| {
        *acc.entry(s.labels.get("directory").unwrap_or(""))
            .or_default() += 1;
        acc
    });
    assert_eq!(
        by_dir.keys().copied().collect::<Vec<_>>(),
        vec!["broken", "x"]
    );

    // Once its CSV appears, `broken` recovers and /healthz is 200 again.
    env.write("broken.csv", &csv(&[("b1", "C", true)]));
    wait_for("/healthz to recover", || {
        let (status, body) = get(port, "/healthz");
        (status == 200).then_some(body)
    });
    assert!(daemon.running());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

#[test]
fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let env = Env::new();
    env.write("config.toml", &config("every 1s", "", &["a"]));
    env.write("a.csv", &csv(&[("a1", "A", true)]));
    let socket_path = env.path("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut daemon = Daemon::start_with(
        &env,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut heard: Vec<String> = vec![];
    let receive_until = |heard: &mut Vec<String>, what: &str| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while !heard.iter().any(|m| m.lines().any(|l| l == what)) {
            assert!(start.elapsed() < PATIENCE, "no {what} in {heard:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    };
    receive_until(&mut heard, "READY=1");
    receive_until(&mut heard, "WATCHDOG=1");
    daemon.signal(libc::SIGTERM);
    receive_until(&mut heard, "STOPPING=1");
    let ready = heard
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("ready");
    let stopping = heard
        .iter()
        .position(|m| m.contains("STOPPING=1"))
        .expect("stopping");
    assert!(ready < stopping, "{heard:?}");
    let (code, _) = daemon.terminate_wait();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

#[test]
fn status_knows_the_daemon_and_takes_next_run_only_from_its_schedule() {
    let env = Env::new();
    env.write("config.toml", &config("every 1h", "", &["ok", "broken"]));
    env.write("ok.csv", &csv(&[("o1", "A", true)]));
    // A manual sync schedules nothing (issue 19 item 4).
    let out = env.run(&["sync"]);
    assert_eq!(common::code(&out), 3, "{}", common::stderr(&out));
    let text = common::stdout(&env.run(&["status"]));
    assert!(text.contains("daemon: not running"), "{text}");
    assert!(
        text.contains("next run:  none scheduled (no daemon running"),
        "{text}"
    );

    let mut daemon = Daemon::start(&env);
    let pid = daemon.child.id();
    let status = wait_for("the daemon's heartbeat with both next runs", || {
        let out = env.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&common::stdout(&out)).ok()?;
        let all = v.as_array()?;
        let ready = all.len() == 2
            && all
                .iter()
                .all(|d| d["daemon"]["running"] == true && d["next_run"].is_string());
        ready.then_some(v)
    });
    let gap = |name: &str| {
        let d = status
            .as_array()
            .expect("array")
            .iter()
            .find(|d| d["directory"] == name)
            .expect("directory");
        let t = |v: &serde_json::Value| {
            chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time")).expect("RFC 3339")
        };
        (t(&d["next_run"]) - t(&d["last_run"]["finished_at"])).num_seconds()
    };
    // One period after the run, plus the daemon's jitter (at most 1/10 of it).
    assert!((3599..=3960).contains(&gap("ok")), "{status}");
    // Two failures in a row (the manual sync's and the daemon's): one period more.
    assert_eq!(status[1]["consecutive_failures"], 2);
    assert!((7199..=7560).contains(&gap("broken")), "{status}");
    assert_eq!(status[0]["daemon"]["pid"], pid);
    let text = common::stdout(&env.run(&["status", "--directory", "ok"]));
    assert!(
        text.contains(&format!("daemon: running (pid {pid}, heartbeat ")),
        "{text}"
    );
    assert!(text.contains("config generation 1"), "{text}");
    assert!(!text.contains("broken"), "--directory shows one: {text}");

    // A reload that fails is recorded in the daemon's row.
    env.write("config.toml", "[sync\n");
    daemon.signal(libc::SIGHUP);
    let error = wait_for("the failed reload in the daemon's row", || {
        let rows = common::sql(&env, "state.db", "SELECT last_reload_error FROM daemon");
        rows.first()?.first()?.clone()
    });
    assert!(error.contains("config.toml:1:"), "{error}");
    env.write("config.toml", &config("every 1h", "", &["ok", "broken"]));
    let text = common::stdout(&env.run(&["status"]));
    assert!(text.contains("last reload failed: "), "{text}");
    assert!(text.contains("config generation 1"), "{text}");

    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
    env.write("config.toml", &config("every 1h", "", &["ok", "broken"]));
    let text = common::stdout(&env.run(&["status"]));
    assert!(text.contains("daemon: not running"), "{text}");
}

#[test]
fn a_hung_directory_times_out_without_stopping_the_others_or_the_shutdown() {
    let env = Env::new();
    env.write(
        "config.toml",
        &config("every 1s", "run_timeout = \"2s\"", &["hung", "ok"]),
    );
    // Reading a FIFO nobody writes to blocks forever, outside any await point.
    let fifo = std::ffi::CString::new(env.path("hung.csv").to_str().expect("utf-8")).expect("path");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    env.write("ok.csv", &csv(&[("o1", "A", true)]));
    let mut daemon = Daemon::start(&env);
    let db = env.path("learners.db");
    wait_for("directory ok to sync", || {
        (try_learners(&db, "ok")?.len() == 1).then_some(())
    });

    // The hung run times out and is recorded as failed...
    let status = wait_for("a recorded timeout of `hung`", || {
        let out = env.run(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_str(&common::stdout(&out)).ok()?;
        let hung = status
            .as_array()?
            .iter()
            .find(|d| d["directory"] == "hung")?;
        (hung["consecutive_failures"].as_u64()? >= 1).then(|| hung.clone())
    });
    assert!(
        status["last_run"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("timed out after 2s"),
        "{status}"
    );
    // ...while `ok` keeps syncing.
    replace(
        &env,
        "ok.csv",
        &csv(&[("o1", "A", true), ("o2", "A", true)]),
    );
    wait_for("directory ok to keep syncing", || {
        (try_learners(&db, "ok")?.len() == 2).then_some(())
    });
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn parallel_first_runs_on_a_fresh_database_all_succeed() {
    let env = Env::new();
    let names = ["d1", "d2", "d3", "d4"];
    env.write(
        "config.toml",
        &config("every 1h", "concurrency = 4", &names),
    );
    for n in names {
        env.write(&format!("{n}.csv"), &csv(&[(n, "A", true)]));
    }
    let mut daemon = Daemon::start(&env);
    let db = env.path("learners.db");
    for n in names {
        wait_for("every directory's first run", || {
            (try_learners(&db, n)?.len() == 1).then_some(())
        });
    }
    // The store commits before the run's record in the state DB: wait for the records.
    let status = wait_for("every directory's first run recorded", || {
        let out = env.run(&["status", "--json"]);
        let status: serde_json::Value = serde_json::from_str(&common::stdout(&out)).expect("JSON");
        let all = status.as_array().expect("array");
        all.iter()
            .all(|d| !d["last_run"].is_null())
            .then_some(status)
    });
    for d in status.as_array().expect("array") {
        assert_eq!(d["last_run"]["outcome"], "ok", "{d}");
        assert_eq!(d["consecutive_failures"], 0, "{d}");
    }
    assert!(!daemon.log().contains("run failed"), "{}", daemon.log());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn the_grafana_dashboard_and_alert_rules_use_only_metrics_the_daemon_serves() {
    let env = Env::new();
    env.write(
        "config.toml",
        &format!(
            "{}\n[daemon]\nlisten = \"127.0.0.1:0\"\n",
            config("every 1h", "", &["x"])
        ),
    );
    env.write("x.csv", &csv(&[("x1", "A", true)]));
    let daemon = Daemon::start(&env);
    let port = daemon.port();
    let served_by = |body: &str| -> std::collections::BTreeSet<String> {
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
            .collect()
    };
    let mut used = std::collections::BTreeSet::new();
    for file in [
        "contrib/grafana/learner-sync.json",
        "contrib/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(file).expect(file);
        let mut rest = text.as_str();
        while let Some(at) = rest.find("learner_sync_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert((file, name));
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    // A run's metrics are recorded one after another, not at once: a scrape that lands
    // between the run counter and the last of them misses some. Poll until every name
    // is there or the run has long been over; then judge the last scrape.
    let first = wait_for("a finished run in /metrics", || {
        let (_, body) = get(port, "/metrics");
        body.contains("learner_sync_runs_total{")
            .then_some(Instant::now())
    });
    let (body, served) = loop {
        let (_, body) = get(port, "/metrics");
        let served = served_by(&body);
        if used.iter().all(|(_, name)| served.contains(name))
            || first.elapsed() > Duration::from_secs(10)
        {
            break (body, served);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (file, name) in &used {
        assert!(
            served.contains(name),
            "{file} uses {name}, which /metrics does not serve:\n{body}"
        );
    }
}

#[test]
fn an_idle_entra_poll_is_one_delta_request_with_the_token_of_the_first_run() {
    use crate::support::graph_mock::{user, GraphMock};
    let mock = GraphMock::start("poll-secret");
    for i in 0..3 {
        mock.add_user(user(
            &format!("u{i}"),
            &format!("u{i}@contoso.test"),
            "G",
            "F",
        ));
    }
    let env = Env::new();
    ConfigBuilder::new()
        .sync("schedule", &q("every 1s"))
        .entra("contoso", &mock.base(), &[])
        .dir_lines(r#"client_secret = { env = "POLL_SECRET" }"#)
        .write(&env);
    let mut daemon = Daemon::start_with(&env, &[("POLL_SECRET", "poll-secret")]);
    // The first run (a fresh delta round of two pages) and then three idle polls.
    let log = wait_for("three idle polls after the first run", || {
        let s = mock.state();
        let polls = s.log.iter().filter(|l| l.contains("$deltatoken=")).count();
        (polls >= 3).then(|| s.log.clone())
    });
    let (tokens, requests) = {
        let s = mock.state();
        (s.tokens_issued, s.log.len())
    };
    assert_eq!(tokens, 1, "one token for every run; log: {log:#?}");
    // Every request after the first round is an idle poll: one delta call each.
    let first_round = log
        .iter()
        .position(|l| l.contains("$deltatoken="))
        .expect("a poll");
    assert!(
        log[first_round..]
            .iter()
            .all(|l| l.starts_with("GET /v1.0/users/delta") && l.contains("$deltatoken=")),
        "{log:#?}"
    );
    assert!(requests >= first_round + 3);
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

/// Six tenants of one multi-tenant app, two runs at a time, and one tenant whose Graph
/// does not answer (for 10 minutes, longer than the test): its run holds one slot,
/// and the other five sync through the other slot on their schedule, changes included.
#[test]
fn a_hanging_tenant_holds_one_slot_and_the_other_tenants_keep_their_schedule() {
    use crate::support::graph_mock::{user, GraphMock};
    const SECRET: &str = "msp-app-secret";
    let names = ["t0", "t1", "t2", "t3", "t4", "hung"];
    let mocks: Vec<GraphMock> = names
        .iter()
        .map(|n| {
            let m = GraphMock::start(SECRET);
            m.state().tenant = format!("tenant-{n}");
            m.add_user(user(
                &format!("{n}-u1"),
                &format!("u1@{n}.example"),
                "U",
                "One",
            ));
            m
        })
        .collect();
    mocks[5].state().latency = Duration::from_secs(600);
    let mut text = String::from(
        "[sync]\nstate_db = \"state.db\"\nschedule = \"every 1s\"\nconcurrency = 2\nrun_timeout = \"15m\"\n\n\
         [store]\nkind = \"sqlite\"\npath = \"learners.db\"\n\n\
         [credential.msp-app]\nclient_id = \"client-1\"\nclient_secret = { env = \"MSP_APP_SECRET\" }\n\n",
    );
    for (n, m) in names.iter().zip(&mocks) {
        let base = m.base();
        text.push_str(&format!(
            "[[directory]]\nname = \"{n}\"\nkind = \"entra\"\ntenant_id = \"tenant-{n}\"\ncredential = \"msp-app\"\nauthority_url = \"{base}\"\ngraph_url = \"{base}/v1.0\"\n\n"
        ));
    }
    let env = Env::new();
    env.write("config.toml", &text);
    let mut daemon = Daemon::start_with(&env, &[("MSP_APP_SECRET", SECRET)]);
    let db = env.path("learners.db");
    for n in &names[..5] {
        wait_for(&format!("tenant {n} to sync"), || {
            (try_learners(&db, n)?.len() == 1).then_some(())
        });
    }
    // A change in one tenant lands on a later tick, still while `hung` is hanging.
    mocks[2].add_user(user("t2-u2", "u2@t2.example", "U", "Two"));
    wait_for("tenant t2's new user", || {
        (try_learners(&db, "t2")?.len() == 2).then_some(())
    });
    // All the while, `hung`'s run is in flight: its delta request arrived and was never
    // answered, and no run of it has ended.
    assert!(
        mocks[5].log().iter().any(|l| l.contains("/users/delta")),
        "{:?}",
        mocks[5].log()
    );
    let out = env.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    let hung = status
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["directory"] == "hung")
        .unwrap()
        .clone();
    assert!(hung["last_run"].is_null(), "{hung}");
    assert!(try_learners(&db, "hung").unwrap_or_default().is_empty());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
}

#[test]
fn directories_running_at_once_on_one_scim_store_share_its_rate_limit() {
    use crate::support::scim_mock::ScimMock;
    const TOKEN: &str = "mock-scim-token-shared-rate-never-printed";
    let mock = ScimMock::start(TOKEN);
    let env = Env::new();
    let mut config = format!(
        "[sync]\nstate_db = \"state.db\"\nconcurrency = 2\nschedule = \"every 1h\"\n\n\
         [store]\nkind = \"scim\"\nurl = {}\ntoken = {{ env = \"SCIM_TOKEN\" }}\ndialect = \"rfc\"\n\
         concurrency = 4\nmax_requests_per_second = 5\n",
        q(&mock.base())
    );
    for d in ["a", "b"] {
        let mut csv = String::from("external_id,user_name\n");
        for i in 0..5 {
            csv.push_str(&format!("{d}{i},{d}{i}@x.io\n"));
        }
        env.write(&format!("{d}.csv"), &csv);
        config.push_str(&format!(
            "\n[[directory]]\nname = \"{d}\"\nkind = \"csv\"\npath = \"{d}.csv\"\n"
        ));
    }
    env.write("config.toml", &config);
    let daemon = Daemon::start_with(&env, &[("SCIM_TOKEN", TOKEN)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while mock.state().users.len() < 10 {
        assert!(Instant::now() < deadline, "daemon log:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut at: Vec<Instant> = mock.state().log.iter().map(|l| l.at).collect();
    at.sort();
    let n = at.len() as u32;
    assert!(n >= 22, "{n} requests");
    // Both runs draw from one schedule of 5 a second: n requests need (n - 1) slots of
    // 200 ms, the first of each run maybe late. Two schedules would fit them in half.
    let span = *at.last().unwrap() - at[0];
    assert!(
        span >= Duration::from_millis(u64::from(n - 3) * 200),
        "{n} requests within {span:?}"
    );
}
