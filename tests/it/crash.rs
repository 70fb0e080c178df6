//! Crash safety: SIGKILL the real binary at many instants during large syncs, run
//! again, and check the store is exactly what the directory says: no duplicate, no
//! lost create, update, deactivation or reactivation, and an action log with each
//! change recorded once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{code, stderr, stdout, world, ConfigBuilder, Env};

#[derive(Clone)]
struct Person {
    dept: String,
    active: bool,
}

type Directory = BTreeMap<u32, Person>;

fn write_csv(env: &Env, dir: &Directory) {
    let mut s = String::from("external_id,user_name,email,department,active\n");
    for (id, p) in dir {
        s.push_str(&format!(
            "E{id:06},u{id}@x.io,u{id}@x.io,{},{}\n",
            p.dept, p.active
        ));
    }
    env.write("hr.csv", &s);
}

/// Where the runs write: the SQLite store, or a fresh database of the test PostgreSQL.
#[derive(Clone)]
enum Target {
    Sqlite,
    Postgres(String),
}

impl Target {
    fn postgres() -> Target {
        Target::Postgres(crate::support::postgres::database())
    }

    fn rows(&self, env: &Env) -> Vec<common::Row> {
        match self {
            Target::Sqlite => env.learners("learners.db", "hr"),
            Target::Postgres(url) => common::pg_learners(url, "hr"),
        }
    }
}

fn setup_on(target: &Target) -> Env {
    let env = Env::new();
    let mut config = ConfigBuilder::new()
        .guards(1_000_000, 100)
        .csv("hr", "hr.csv");
    if let Target::Postgres(url) = target {
        config = config.postgres(url);
    }
    config.write(&env);
    env
}

fn spawn_sync(env: &Env) -> std::process::Child {
    env.spawn_quiet(&["sync"], &[])
}

/// Kill a sync at `points` instants spread over (a little more than) one run's length.
fn kill_repeatedly(env: &Env, points: u32, run_length: Duration) -> u32 {
    let mut killed = 0;
    for i in 0..points {
        let mut child = spawn_sync(env);
        let at = run_length.mul_f64(1.2 * f64::from(i) / f64::from(points));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    killed
}

fn assert_store_matches(env: &Env, target: &Target, dir: &Directory, ever: &BTreeMap<u32, ()>) {
    let rows = target.rows(env);
    let by_id: BTreeMap<String, &common::Row> =
        rows.iter().map(|r| (r.external_id.clone(), r)).collect();
    assert_eq!(by_id.len(), rows.len(), "duplicate learners");
    for id in ever.keys() {
        let key = format!("E{id:06}");
        let expected_active = dir.get(id).is_some_and(|p| p.active);
        match by_id.get(&key) {
            Some(r) => {
                assert_eq!(r.active, expected_active, "{key} active");
                if let Some(p) = dir.get(id) {
                    assert_eq!(
                        r.department.as_deref(),
                        Some(p.dept.as_str()),
                        "{key} department"
                    );
                }
            }
            None => assert!(!expected_active, "{key} was never created"),
        }
    }
    assert!(rows.len() <= ever.len());
}

/// Replay the action log per learner: every transition is recorded exactly once.
fn assert_log_replays_to_store(env: &Env, target: &Target) {
    let out = env.run(&["history", "--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let replayed = world::replay("hr", &records);
    assert!(
        replayed.problems.is_empty(),
        "the action log does not replay: {:?}",
        &replayed.problems[..replayed.problems.len().min(12)]
    );
    let state = replayed.state;
    let rows = target.rows(env);
    assert_eq!(
        state.len(),
        rows.len(),
        "log and store disagree on who exists"
    );
    for r in rows {
        assert_eq!(
            state[&r.external_id], r.active,
            "log and store disagree on {}",
            r.external_id
        );
    }
}

#[test]
fn sigkill_at_many_instants_then_rerun_converges_exactly() {
    sigkill_at_many_instants(&Target::Sqlite);
}

#[test]
fn sigkill_at_many_instants_then_rerun_converges_exactly_on_postgres() {
    sigkill_at_many_instants(&Target::postgres());
}

fn sigkill_at_many_instants(target: &Target) {
    let env = setup_on(target);
    let n = 20_000u32;
    let mut dir: Directory = (0..n)
        .map(|i| {
            (
                i,
                Person {
                    dept: format!("D{}", i % 7),
                    active: true,
                },
            )
        })
        .collect();
    let mut ever: BTreeMap<u32, ()> = dir.keys().map(|k| (*k, ())).collect();

    // Measure one full run on a copy, to spread the kill points over its length.
    let probe_target = match target {
        Target::Sqlite => Target::Sqlite,
        Target::Postgres(_) => Target::postgres(),
    };
    let probe = setup_on(&probe_target);
    write_csv(&probe, &dir);
    let t = Instant::now();
    assert_eq!(code(&probe.run(&["sync"])), 0);
    let run_length = t.elapsed();

    let mut kills = 0;
    // Phase 1: the initial import.
    write_csv(&env, &dir);
    kills += kill_repeatedly(&env, 25, run_length);
    let out = env.run(&["sync"]);
    assert!(code(&out) == 0, "{}", stderr(&out));
    assert_store_matches(&env, target, &dir, &ever);

    // Phase 2: updates, removals, disables and newcomers.
    for i in (0..n).step_by(10) {
        dir.get_mut(&i).unwrap().dept = "Moved".into();
    }
    for i in (1..n).step_by(50) {
        dir.remove(&i);
    }
    for i in (3..n).step_by(97) {
        if let Some(p) = dir.get_mut(&i) {
            p.active = false;
        }
    }
    for i in n..n + 500 {
        dir.insert(
            i,
            Person {
                dept: "New".into(),
                active: true,
            },
        );
        ever.insert(i, ());
    }
    write_csv(&env, &dir);
    kills += kill_repeatedly(&env, 25, run_length);
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_store_matches(&env, target, &dir, &ever);

    // Phase 3: the removed come back (reactivations) and another wave of changes.
    for i in (1..n).step_by(50) {
        dir.insert(
            i,
            Person {
                dept: "Back".into(),
                active: true,
            },
        );
    }
    for i in (5..n).step_by(13) {
        dir.get_mut(&i).unwrap().dept = "Again".into();
    }
    write_csv(&env, &dir);
    kills += kill_repeatedly(&env, 25, run_length);
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_store_matches(&env, target, &dir, &ever);
    assert_log_replays_to_store(&env, target);

    // A settled store: one more run changes nothing.
    let out = env.run(&["sync"]);
    assert!(
        stdout(&out).contains("created 0, updated 0, deactivated 0, reactivated 0, held 0"),
        "{}",
        stdout(&out)
    );
    eprintln!("killed {kills} runs in flight (of 75 attempts; run length {run_length:?})");
    assert!(kills >= 20, "too few kills landed inside a run: {kills}");
}

#[test]
fn a_crash_between_the_steps_of_a_run_is_settled_by_the_next_run() {
    crash_between_steps(|| Target::Sqlite);
}

#[test]
fn a_crash_between_the_steps_of_a_run_is_settled_by_the_next_run_on_postgres() {
    crash_between_steps(Target::postgres);
}

fn crash_between_steps(target: impl Fn() -> Target) {
    for (point, expect_outcome) in [("after-begin", "aborted"), ("after-apply", "interrupted")] {
        let target = target();
        let env = setup_on(&target);
        let dir: Directory = (0..50)
            .map(|i| {
                (
                    i,
                    Person {
                        dept: "D".into(),
                        active: true,
                    },
                )
            })
            .collect();
        write_csv(&env, &dir);
        let out = env.run_with(&["sync"], &[("LEARNER_SYNC_FAULT", point)]);
        assert_ne!(code(&out), 0, "{point}: the fault point aborts");
        let applied = match &target {
            Target::Sqlite => env.path("learners.db").exists() && !target.rows(&env).is_empty(),
            Target::Postgres(_) => !target.rows(&env).is_empty(),
        };
        assert_eq!(applied, point == "after-apply", "{point}");
        let out = env.run(&["sync"]);
        assert_eq!(code(&out), 0, "{point}: {}", stderr(&out));
        let expected_created = if point == "after-apply" { 0 } else { 50 };
        assert!(
            stdout(&out).contains(&format!("created {expected_created},")),
            "{point}: {}",
            stdout(&out)
        );
        assert_store_matches(&env, &target, &dir, &dir.keys().map(|k| (*k, ())).collect());
        assert_log_replays_to_store(&env, &target);
        let conn = rusqlite::Connection::open(env.path("state.db")).unwrap();
        let outcome: String = conn
            .query_row("SELECT outcome FROM runs ORDER BY id LIMIT 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(outcome, expect_outcome, "{point}");
    }
}
