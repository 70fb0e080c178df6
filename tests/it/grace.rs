//! The grace period for leavers through the real binary with a CSV directory: a user
//! who disappears is pending and keeps their learner until `deactivate_after` has
//! passed; one who comes back in time never loses anything. "Now" is set with
//! `LEARNER_SYNC_TEST_NOW` (test builds only), so nothing waits for wall time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{code, sql, stderr, stdout, ConfigBuilder, Env};

const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

fn csv(ids: impl IntoIterator<Item = u32>) -> String {
    let mut s = HEADER.to_string();
    for id in ids {
        s.push_str(&format!(
            "E{id},user{id}@x.io,user{id}@x.io,Given{id},Family{id},Sales,true\n"
        ));
    }
    s
}

fn setup(grace: &str, max_deactivations: u32) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(max_deactivations, 100)
        .sync("deactivate_after", "\"0\"")
        .csv("hr", "hr.csv")
        .dir("deactivate_after", &format!("{grace:?}"))
        .write(&env);
    env
}

/// `sync` at `now`; returns (exit code, stdout).
fn sync_at(env: &Env, now: &str) -> (i32, String) {
    let out = env.run_with(&["sync"], &[("LEARNER_SYNC_TEST_NOW", now)]);
    let c = code(&out);
    assert!(c == 0 || c == 4, "{}", stderr(&out));
    (c, stdout(&out))
}

/// Every column of every learner: what "unchanged" means for the store.
fn store(env: &Env) -> Vec<Vec<Option<String>>> {
    sql(
        env,
        "learners.db",
        "SELECT * FROM learners ORDER BY directory, external_id",
    )
}

fn pending(env: &Env) -> Vec<Vec<Option<String>>> {
    sql(
        env,
        "state.db",
        "SELECT external_id, since, reason FROM pending_deactivations ORDER BY external_id",
    )
}

fn deactivations_of(env: &Env, id: &str) -> usize {
    common::rows(
        &env.path("state.db"),
        "SELECT count(*) FROM actions WHERE external_id = ?1 AND action = 'deactivated'",
        &[id],
    )[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_leaver_is_pending_and_the_store_unchanged_and_status_and_history_show_it() {
    let env = setup("72h", 50);
    env.write("hr.csv", &csv(1..=5));
    sync_at(&env, "2026-03-01T00:00:00Z");
    let before = store(&env);
    // E5 deleted, E4 disabled in the directory.
    let mut text = csv(1..=3);
    text.push_str("E4,user4@x.io,user4@x.io,Given4,Family4,Sales,false\n");
    env.write("hr.csv", &text);
    let (c, out) = sync_at(&env, "2026-03-01T01:00:00Z");
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("deactivated 0"), "{out}");
    assert_eq!(store(&env), before, "nothing in the store changes");
    let p = pending(&env);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0][0].as_deref(), Some("E4"));
    assert_eq!(p[0][1].as_deref(), Some("2026-03-01T01:00:00Z"));
    assert_eq!(p[0][2].as_deref(), Some("disabled in directory"));
    assert_eq!(p[1][2].as_deref(), Some("deleted in directory"));

    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("pending:   2 leavers"), "{status}");
    assert!(status.contains("due 2026-03-04T01:00:00Z"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["status", "--json"]))).unwrap();
    assert_eq!(json[0]["pending"].as_array().unwrap().len(), 2, "{json}");
    let history = stdout(&env.run(&["history"]));
    assert!(
        history
            .lines()
            .any(|l| l.contains("pending") && l.contains("user5@x.io")),
        "{history}"
    );

    // A dry run shows no deactivation either, and records nothing.
    let dry = env.run_with(
        &["sync", "--dry-run"],
        &[("LEARNER_SYNC_TEST_NOW", "2026-03-02T00:00:00Z")],
    );
    assert!(stdout(&dry).contains("deactivated 0"), "{}", stdout(&dry));
    assert_eq!(pending(&env), p);
}

#[test]
fn back_inside_the_window_changes_nothing_in_the_store() {
    let env = setup("72h", 50);
    env.write("hr.csv", &csv(1..=5));
    sync_at(&env, "2026-03-01T00:00:00Z");
    let before = store(&env);
    env.write("hr.csv", &csv(1..=4));
    sync_at(&env, "2026-03-01T01:00:00Z");
    env.write("hr.csv", &csv(1..=5));
    let (c, out) = sync_at(&env, "2026-03-03T00:00:00Z");
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("reactivated 0"), "{out}");
    assert_eq!(store(&env), before, "no deactivate/reactivate pair");
    assert!(pending(&env).is_empty(), "back: no longer pending");
    assert_eq!(deactivations_of(&env, "E5"), 0);
    // Gone again later: the period starts afresh.
    env.write("hr.csv", &csv(1..=4));
    sync_at(&env, "2026-03-05T00:00:00Z");
    assert_eq!(pending(&env)[0][1].as_deref(), Some("2026-03-05T00:00:00Z"));
}

#[test]
fn gone_past_the_window_is_deactivated_once() {
    let env = setup("72h", 50);
    env.write("hr.csv", &csv(1..=5));
    sync_at(&env, "2026-03-01T00:00:00Z");
    env.write("hr.csv", &csv(1..=4));
    sync_at(&env, "2026-03-01T00:00:00Z");
    let (_, out) = sync_at(&env, "2026-03-03T23:59:59Z");
    assert!(out.contains("deactivated 0"), "one second early: {out}");
    assert!(env.learners("learners.db", "hr")[4].active);
    let (c, out) = sync_at(&env, "2026-03-04T00:00:00Z");
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("deactivated 1"), "{out}");
    let e5 = &env.learners("learners.db", "hr")[4];
    assert_eq!(e5.external_id, "E5");
    assert!(!e5.active);
    let (_, out) = sync_at(&env, "2026-03-05T00:00:00Z");
    assert!(out.contains("deactivated 0"), "{out}");
    assert_eq!(deactivations_of(&env, "E5"), 1);
    assert!(pending(&env).is_empty(), "deactivated: no longer pending");
}

#[test]
fn the_guards_count_the_deactivations_when_they_are_due() {
    // At most 2 deactivations a run: 3 leavers at once pass while they wait, and are
    // held when they fall due together.
    let env = setup("24h", 2);
    env.write("hr.csv", &csv(1..=10));
    sync_at(&env, "2026-03-01T00:00:00Z");
    env.write("hr.csv", &csv(1..=7));
    let (c, out) = sync_at(&env, "2026-03-01T00:00:00Z");
    assert_eq!(c, 0, "waiting leavers are no deactivations yet: {out}");
    let (c, out) = sync_at(&env, "2026-03-02T00:00:00Z");
    assert_eq!(c, 4, "due together, they are held: {out}");
    assert!(out.contains("held 3"), "{out}");
    assert!(env.learners("learners.db", "hr").iter().all(|l| l.active));
    assert_eq!(
        pending(&env).len(),
        3,
        "held, still pending with their first time"
    );
    let approve = env.run(&["approve", "hr"]);
    assert_eq!(code(&approve), 0, "{}", stderr(&approve));
    assert_eq!(
        env.learners("learners.db", "hr")
            .iter()
            .filter(|l| !l.active)
            .count(),
        3
    );
}

#[test]
fn zero_grace_deactivates_at_once_as_before() {
    let env = setup("0", 50);
    env.write("hr.csv", &csv(1..=5));
    sync_at(&env, "2026-03-01T00:00:00Z");
    env.write("hr.csv", &csv(1..=4));
    let (_, out) = sync_at(&env, "2026-03-01T00:00:00Z");
    assert!(out.contains("deactivated 1"), "{out}");
    assert!(pending(&env).is_empty());
}

#[test]
fn rename_directory_keeps_a_pending_leavers_clock() {
    let env = setup("72h", 50);
    env.write("hr.csv", &csv(1..=5));
    sync_at(&env, "2026-03-01T00:00:00Z");
    env.write("hr.csv", &csv(1..=4));
    sync_at(&env, "2026-03-01T00:00:00Z");
    assert_eq!(pending(&env).len(), 1);

    // The admin renames `hr` to `people` in the config and moves its state with it.
    ConfigBuilder::new()
        .guards(50, 100)
        .sync("deactivate_after", "\"0\"")
        .csv("people", "hr.csv")
        .dir("deactivate_after", "\"72h\"")
        .write(&env);
    let out = env.run(&["rename-directory", "hr", "people"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Due 72 hours after E5 left, not 72 hours after the rename.
    let (c, out) = sync_at(&env, "2026-03-04T00:00:00Z");
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("deactivated 1"), "{out}");
    assert!(!env.learners("learners.db", "people")[4].active);
}
