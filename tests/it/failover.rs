//! Several daemons sharing one PostgreSQL store (issue 17): three real `learner-sync
//! daemon` processes, each with its own state DB, run six CSV directories into one
//! database. One is frozen (SIGSTOP, at the instant before it writes a run) until its
//! lease is long gone, another is SIGKILLed; every directory still converges, each
//! learner is created once and each change applied once across the three action logs,
//! and the frozen daemon's write is refused when it wakes (fencing). Nothing here
//! depends on the machine's speed: every wait polls with a generous deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use crate::common;
use crate::support::postgres::{database, psql};

use common::config_builder::q;
use common::daemon::{wait_for, Daemon};
use common::{code, stderr, stdout, ConfigBuilder, Env};

const DIRECTORIES: usize = 6;
const USERS: usize = 40;

fn csv(version: u32) -> String {
    let mut s = String::from("external_id,user_name,department\n");
    for i in 0..USERS {
        let dept = if version > 0 && i % 4 == 0 {
            format!("Moved{version}")
        } else {
            "Staff".to_string()
        };
        s.push_str(&format!("u{i},u{i}@x.io,{dept}\n"));
    }
    if version > 0 {
        s.push_str(&format!("new{version},new{version}@x.io,New\n"));
    }
    s
}

/// A daemon's folder: its own state DB, the shared CSVs and store.
fn daemon_env(data: &Env, url: &str) -> Env {
    let env = Env::new();
    let mut config = ConfigBuilder::new()
        .sync("schedule", &q("every 1s"))
        .guards(1_000_000, 100)
        .postgres(url)
        .store("lease", &q("2s"));
    for d in 0..DIRECTORIES {
        let path = data.path(&format!("d{d}.csv"));
        config = config.csv(&format!("d{d}"), path.to_str().unwrap());
    }
    config.write(&env);
    env
}

/// `directory -> (learners, learners with the department of `version`, has the newcomer)`.
fn converged(url: &str, version: u32) -> bool {
    let rows = psql(
        url,
        "SELECT directory, count(*), count(*) FILTER (WHERE department LIKE 'Moved%'), \
         string_agg(DISTINCT department, ',' ORDER BY department) FROM learners GROUP BY directory ORDER BY 1",
    );
    let want_moved = if version > 0 { USERS / 4 } else { 0 };
    let want_total = USERS + usize::from(version > 0);
    let per: BTreeMap<&str, (usize, usize, &str)> = rows
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Some((f[0], (f[1].parse().ok()?, f[2].parse().ok()?, f[3])))
        })
        .collect();
    per.len() == DIRECTORIES
        && per.values().all(|(total, moved, depts)| {
            *total == want_total
                && *moved == want_moved
                && (version == 0 || depts.contains(&format!("Moved{version}")))
        })
}

/// Every daemon's action log, merged: how many times each learner was created, and
/// updated, across the three.
fn actions(envs: &[&Env]) -> BTreeMap<(String, String, String), usize> {
    let mut out = BTreeMap::new();
    for env in envs {
        let out_ = env.run(&["history", "--json"]);
        assert_eq!(code(&out_), 0, "{}", stderr(&out_));
        let records: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out_)).unwrap();
        for r in records {
            let key = (
                r["directory"].as_str().unwrap().to_string(),
                r["external_id"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            );
            *out.entry(key).or_insert(0) += 1;
        }
    }
    out
}

/// `(open runs, run keys of runs that lost their lease)` in a daemon's state DB;
/// `None` while it cannot be read (the daemon holds a lock on it, or was frozen while
/// holding one).
fn runs(env: &Env) -> Option<(usize, Vec<String>)> {
    let conn = rusqlite::Connection::open_with_flags(
        env.path("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    conn.busy_timeout(std::time::Duration::from_millis(500))
        .ok()?;
    let open: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE finished_at IS NULL",
            [],
            |r| r.get(0),
        )
        .ok()?;
    let mut stmt = conn
        .prepare("SELECT run_key FROM runs WHERE error LIKE '%lost its lease%'")
        .ok()?;
    let lost = stmt
        .query_map([], |r| r.get(0))
        .ok()?
        .collect::<Result<Vec<String>, _>>()
        .ok()?;
    Some((open as usize, lost))
}

/// How many of these run keys reached the store.
fn landed(url: &str, keys: &[String]) -> String {
    let list = keys
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(",");
    psql(
        url,
        &format!("SELECT count(*) FROM learner_sync_runs WHERE run_key IN ({list})"),
    )
}

#[test]
fn three_daemons_share_a_postgres_store_and_survive_a_frozen_and_a_killed_one() {
    let url = database();
    let data = Env::new();
    for d in 0..DIRECTORIES {
        data.write(&format!("d{d}.csv"), &csv(0));
    }
    let (ea, eb, ec) = (
        daemon_env(&data, &url),
        daemon_env(&data, &url),
        daemon_env(&data, &url),
    );
    // B stops itself the first time it is about to write a run.
    let mut b = Daemon::start_with(&eb, &[("LEARNER_SYNC_PAUSE", "before-apply")]);
    wait_for("B to freeze before its first write", || {
        b.log()
            .contains("pause point before-apply: stopping")
            .then_some(())
    });
    let mut a = Daemon::start(&ea);
    let mut c = Daemon::start(&ec);

    // A and C see B's lease expire and its membership lapse, and run everything,
    // B's frozen directory included.
    wait_for("the first sync of every directory by A and C", || {
        converged(&url, 0).then_some(())
    });

    // B wakes: its writes are refused (it lost the leases), nothing of them lands.
    b.signal(libc::SIGCONT);
    let frozen = wait_for("B to end its frozen runs", || {
        let (open, lost) = runs(&eb)?;
        (open == 0 && !lost.is_empty()).then_some(lost)
    });
    assert_eq!(
        landed(&url, &frozen),
        "0",
        "the frozen daemon's runs never land"
    );
    assert!(b.log().contains("lost its lease"), "{}", b.log());
    assert!(b.running(), "B goes on after its refused run: {}", b.log());

    // A is killed; the directories change; B and C take A's share and apply it all.
    a.signal(libc::SIGKILL);
    let _ = a.child.wait();
    for d in 0..DIRECTORIES {
        data.write(&format!("d{d}.csv"), &csv(1));
    }
    wait_for("every directory's change, with A dead", || {
        converged(&url, 1).then_some(())
    });

    // `status` on C's machine says who runs each directory now: B or C, never A.
    // (Polled: a daemon counts as alive while it beat within the last lease, which a
    // loaded machine may stretch for a moment.)
    wait_for("status to show B and C running every directory", || {
        let out = ec.run(&["status", "--json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let status: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
        status
            .iter()
            .all(|d| {
                let shared = &d["shared"];
                let alive: Vec<&str> = shared["daemons"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                let runs_on = shared["runs_on"].as_str().unwrap_or_default();
                alive.len() == 2
                    && alive.contains(&runs_on)
                    && shared["lease"]["token"].as_i64().unwrap_or(0) >= 1
            })
            .then_some(())
    });
    let out = ec.run(&["status", "--directory", "d0"]);
    assert!(
        stdout(&out).contains(" daemons alive on the store; this directory runs on "),
        "{}",
        stdout(&out)
    );

    // Exactly once across the three action logs: each learner created once, each
    // change applied once, whoever ran it.
    let (bt, ct) = (b.terminate(), c.terminate());
    assert_eq!((bt.0, ct.0), (Some(0), Some(0)), "{}\n{}", b.log(), c.log());
    let counts = actions(&[&ea, &eb, &ec]);
    for d in 0..DIRECTORIES {
        let dir = format!("d{d}");
        for i in 0..USERS {
            let id = format!("u{i}");
            let created = counts
                .get(&(dir.clone(), id.clone(), "created".into()))
                .copied();
            assert_eq!(created, Some(1), "{dir}/{id} created {created:?} times");
            let updated = counts
                .get(&(dir.clone(), id.clone(), "updated".into()))
                .copied();
            assert_eq!(
                updated,
                (i % 4 == 0).then_some(1),
                "{dir}/{id} updated {updated:?} times"
            );
        }
        let newcomer = counts.get(&(dir.clone(), "new1".into(), "created".into()));
        assert_eq!(newcomer, Some(&1), "{dir}/new1");
    }
    let duplicates = psql(
        &url,
        "SELECT count(*) FROM (SELECT directory, user_name FROM learners GROUP BY 1, 2 HAVING count(*) > 1) t",
    );
    assert_eq!(duplicates, "0");
    // The daemons that stopped left; only the killed one's row is there, lapsed.
    assert_eq!(psql(&url, "SELECT count(*) FROM learner_sync_daemons"), "1");
}

#[test]
fn a_sync_while_another_process_holds_the_lease_does_nothing_and_says_who() {
    let url = database();
    let data = Env::new();
    data.write("d0.csv", &csv(0));
    let env = Env::new();
    ConfigBuilder::new()
        .postgres(&url)
        .csv("d0", data.path("d0.csv").to_str().unwrap())
        .write(&env);
    // Create the schema, then hold the lease as another daemon would.
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    psql(
        &url,
        "UPDATE learner_sync_leases SET holder = 'vm-2:4242:abcd', machine = 'vm-2', pid = 4242, \
         expires_at = now() + interval '1 hour' WHERE directory = 'd0'",
    );
    data.write("d0.csv", &csv(1));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        all.contains("another learner-sync (vm-2:4242:abcd) is syncing directory `d0`"),
        "{all}"
    );
    assert!(!converged_one(&url, "d0", 1), "nothing written");
    // The lease expires: the next sync runs.
    psql(
        &url,
        "UPDATE learner_sync_leases SET expires_at = now() WHERE directory = 'd0'",
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(converged_one(&url, "d0", 1));
    let token = psql(
        &url,
        "SELECT token FROM learner_sync_leases WHERE directory = 'd0'",
    );
    assert_eq!(
        token, "2",
        "each run took the lease with a new, larger token"
    );
}

fn converged_one(url: &str, directory: &str, version: u32) -> bool {
    psql(
        url,
        &format!(
            "SELECT count(*) FROM learners WHERE directory = '{directory}' AND user_name = 'new{version}@x.io'"
        ),
    ) == "1"
}
