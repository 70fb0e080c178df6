//! The whole pipeline through the real binary: a CSV directory into the SQLite store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{code, stderr, stdout, ConfigBuilder, Env};

const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

fn row(id: u32, dept: &str) -> String {
    format!("E{id},user{id}@x.io,user{id}@x.io,Given{id},Family{id},{dept},true\n")
}

fn csv(ids: impl IntoIterator<Item = u32>) -> String {
    let mut s = HEADER.to_string();
    for id in ids {
        s.push_str(&row(id, "Sales"));
    }
    s
}

fn setup(max_deactivations: u32, percent: u32) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .state_db("state/state.db")
        .guards(max_deactivations, percent)
        .csv("hr", "hr.csv")
        .write(&env);
    env
}

fn history(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["history", "--json"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("history --json is one JSON array")
}

#[test]
fn first_sync_creates_every_active_row_and_skips_inactive_ones() {
    let env = setup(50, 100);
    let mut text = csv(1..=5);
    text.push_str("E6,user6@x.io,,,,,false\n");
    env.write("hr.csv", &text);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains(
            "hr: created 5, updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"
        ),
        "{}",
        stdout(&out)
    );
    let rows = env.learners("learners.db", "hr");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.active));
    assert_eq!(rows[0].user_name, "user1@x.io");
}

#[test]
fn an_edited_row_updates_only_its_changed_fields() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=3));
    assert_eq!(code(&env.run(&["sync"])), 0);
    let edited = csv(1..=3).replace(
        "E2,user2@x.io,user2@x.io,Given2,Family2,Sales",
        "E2,user2@x.io,user2@x.io,Given2,Family2,Legal",
    );
    env.write("hr.csv", &edited);
    let out = env.run(&["sync"]);
    assert!(
        stdout(&out)
            .contains("created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 2"),
        "{}",
        stdout(&out)
    );
    let rows = env.learners("learners.db", "hr");
    assert_eq!(rows[1].department.as_deref(), Some("Legal"));
    let h = history(&env, &["--user", "user2"]);
    assert_eq!(h[0]["action"], "updated");
    assert_eq!(h[0]["fields"], serde_json::json!(["department"]));
    assert_eq!(h[0]["changes"][0]["before"], "Sales");
    assert_eq!(h[0]["changes"][0]["after"], "Legal");
    assert_eq!(h[0]["reason"], "changed: department");
    assert_eq!(h[1]["action"], "created", "newest first");
}

#[test]
fn a_removed_row_deactivates_with_its_reason_and_keeps_the_row_then_reactivates_in_place() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=4));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", &csv([1, 2, 4]));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let rows = env.learners("learners.db", "hr");
    assert_eq!(rows.len(), 4, "nothing is hard-deleted");
    let e3 = &rows[2];
    assert_eq!((e3.external_id.as_str(), e3.active), ("E3", false));
    assert!(e3.deactivated_at.is_some());
    let h = history(&env, &["--user", "E3"]);
    assert_eq!(h[0]["action"], "deactivated");
    assert_eq!(h[0]["reason"], "deleted in directory");

    // The same person comes back: the same row is reactivated.
    env.write("hr.csv", &csv(1..=4));
    let out = env.run(&["sync"]);
    assert!(stdout(&out).contains("reactivated 1"), "{}", stdout(&out));
    let rows = env.learners("learners.db", "hr");
    assert_eq!(rows.len(), 4);
    assert!(rows[2].active && rows[2].deactivated_at.is_none());
    assert_eq!(history(&env, &["--user", "E3"])[0]["action"], "reactivated");
}

#[test]
fn a_disabled_row_deactivates_as_disabled_in_directory() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=3));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write(
        "hr.csv",
        &csv(1..=3).replace(
            "E3,user3@x.io,user3@x.io,Given3,Family3,Sales,true",
            "E3,user3@x.io,user3@x.io,Given3,Family3,Sales,false",
        ),
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_eq!(
        history(&env, &["--user", "E3"])[0]["reason"],
        "disabled in directory"
    );
}

#[test]
fn a_renamed_email_is_an_update_of_the_same_learner() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=2));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write(
        "hr.csv",
        &csv(1..=2).replace("E2,user2@x.io,user2@x.io", "E2,renamed@x.io,renamed@x.io"),
    );
    let out = env.run(&["sync"]);
    assert!(
        stdout(&out).contains("created 0, updated 1, deactivated 0"),
        "{}",
        stdout(&out)
    );
    let rows = env.learners("learners.db", "hr");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].email.as_deref(), Some("renamed@x.io"));
    let h = history(&env, &["--user", "E2"]);
    assert_eq!(h[0]["fields"], serde_json::json!(["user_name", "email"]));
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=3));
    // Before any sync: no state, no store, and a dry run must not create them.
    let out = env.run(&["sync", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("hr: create      user1@x.io (E1)"),
        "{}",
        stdout(&out)
    );
    assert!(!env.path("learners.db").exists() && !env.path("state").exists());

    assert_eq!(code(&env.run(&["sync"])), 0);
    let before_store = std::fs::read(env.path("learners.db")).unwrap();
    let before_state = std::fs::read(env.path("state/state.db")).unwrap();
    env.write(
        "hr.csv",
        &csv(2..=5).replace(
            "E2,user2@x.io,user2@x.io,Given2,Family2,Sales",
            "E2,user2@x.io,user2@x.io,Given2,Family2,Legal",
        ),
    );
    let out = env.run(&["sync", "--dry-run"]);
    let plan = stdout(&out);
    assert!(
        plan.contains("hr: deactivate  user1@x.io (E1): deleted in directory"),
        "{plan}"
    );
    assert!(
        plan.contains("hr:     department: Sales -> Legal"),
        "{plan}"
    );
    assert!(
        plan.contains("hr (dry run): created 2, updated 1, deactivated 1"),
        "{plan}"
    );
    assert_eq!(
        std::fs::read(env.path("learners.db")).unwrap(),
        before_store
    );
    assert_eq!(
        std::fs::read(env.path("state/state.db")).unwrap(),
        before_state
    );
    assert_eq!(history(&env, &[]).len(), 3, "the dry run logged nothing");
}

#[test]
fn an_empty_file_holds_every_deactivation_until_approve() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=3));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", HEADER);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    assert!(stdout(&out).contains("held 3"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("returned no users"),
        "{}",
        stdout(&out)
    );
    assert!(env.learners("learners.db", "hr").iter().all(|r| r.active));

    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("held:      3 deactivations"), "{status}");
    assert!(
        status.contains("user2@x.io (E2): deleted in directory"),
        "{status}"
    );
    let h = history(&env, &["--directory", "hr"]);
    assert_eq!(h.iter().filter(|r| r["action"] == "held").count(), 3);

    let out = env.run(&["approve", "hr"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(env.learners("learners.db", "hr").iter().all(|r| !r.active));
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("held:      none"), "{status}");
    // Settled: the next run has nothing to hold.
    assert_eq!(code(&env.run(&["sync"])), 0);
}

#[test]
fn guards_allow_exactly_the_limit_and_hold_one_more() {
    // max 2 deactivations; 50% of the active learners.
    let env = setup(2, 50);
    env.write("hr.csv", &csv(1..=10));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", &csv(3..=10));
    let out = env.run(&["sync"]);
    assert_eq!(
        code(&out),
        0,
        "two deactivations are at the limit: {}",
        stdout(&out)
    );
    // Three more (and one new user) exceed max_deactivations = 2.
    env.write("hr.csv", &csv((6..=10).chain([11])));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("created 1, updated 0, deactivated 0, reactivated 0, held 3"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("3 deactivations exceed max_deactivations = 2"),
        "{}",
        stdout(&out)
    );
    let rows = env.learners("learners.db", "hr");
    assert_eq!(
        rows.iter().filter(|r| r.active).count(),
        9,
        "creates applied, deactivations held"
    );
}

#[test]
fn the_percentage_guard_holds_above_its_limit() {
    let env = setup(1000, 10);
    env.write("hr.csv", &csv(1..=20));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", &csv(3..=20));
    assert_eq!(code(&env.run(&["sync"])), 0, "2 of 20 is exactly 10%");
    env.write("hr.csv", &csv(5..=20));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 4, "2 of 18 is over 10%: {}", stdout(&out));
    assert!(
        stdout(&out).contains("exceed max_deactivation_percent = 10"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bad_csv_line_fails_the_run_naming_the_line_and_leaves_the_store_untouched() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=3));
    assert_eq!(code(&env.run(&["sync"])), 0);
    let before = std::fs::read(env.path("learners.db")).unwrap();
    let mut text = csv([1]);
    text.push_str("E9,only-two-fields\n");
    env.write("hr.csv", &text);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3);
    assert!(
        stdout(&out).contains("hr.csv:3: expected 7 fields, found 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(env.path("learners.db")).unwrap(), before);
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("failed"), "{status}");
}

#[test]
fn a_failed_directory_outranks_a_held_one_and_others_still_run() {
    let env = Env::new();
    env.write(
        "config.toml",
        r#"
[sync]
state_db = "state.db"
[store]
kind = "sqlite"
path = "learners.db"
[[directory]]
name = "broken"
kind = "csv"
path = "missing.csv"
[[directory]]
name = "emptied"
kind = "csv"
path = "emptied.csv"
[[directory]]
name = "fine"
kind = "csv"
path = "fine.csv"
"#,
    );
    env.write("emptied.csv", &csv(1..=2));
    env.write("fine.csv", &csv(1..=2));
    env.write("missing.csv", &csv(1..=2));
    assert_eq!(code(&env.run(&["sync"])), 0);
    std::fs::remove_file(env.path("missing.csv")).unwrap();
    env.write("emptied.csv", HEADER);
    env.write("fine.csv", &csv(1..=3));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(stdout(&out).contains("broken: FAILED"), "{}", stdout(&out));
    assert!(stdout(&out)
        .contains("emptied: created 0, updated 0, deactivated 0, reactivated 0, held 2"));
    assert_eq!(env.learners("learners.db", "fine").len(), 3);
    // Only the held directory: exit 4.
    assert_eq!(code(&env.run(&["sync", "--directory", "emptied"])), 4);
}

#[test]
fn an_unknown_directory_name_is_a_usage_error() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=1));
    let out = env.run(&["sync", "--directory", "nope"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("no directory named `nope`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn history_filters_by_directory_user_and_time() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=3));
    assert_eq!(code(&env.run(&["sync"])), 0);
    let all = history(&env, &[]);
    assert_eq!(all.len(), 3);
    for r in &all {
        for key in [
            "time",
            "run",
            "directory",
            "external_id",
            "user_name",
            "action",
            "fields",
            "reason",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert!(chrono::DateTime::parse_from_rfc3339(r["time"].as_str().unwrap()).is_ok());
    }
    assert_eq!(history(&env, &["--user", "USER2@"]).len(), 1);
    assert_eq!(history(&env, &["--since", "2999-01-01"]).len(), 0);
    assert_eq!(history(&env, &["--since", "1h"]).len(), 3);
    let out = env.run(&["history", "--since", "last tuesday"]);
    assert_eq!(code(&out), 2);
}

#[test]
fn a_terminal_shows_the_phase_of_a_run_and_a_pipe_does_not() {
    let env = setup(50, 100);
    env.write("hr.csv", &csv(1..=2000));
    let piped = env.run(&["sync"]);
    assert!(
        !stderr(&piped).contains("reading the directory"),
        "{}",
        stderr(&piped)
    );
    env.write("hr.csv", &csv(1..=3000));
    // `script` gives the binary a pseudo-terminal, as an admin's shell would.
    let cmd = format!("{} sync --config {}", common::bin(), env.config().display());
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("hr: reading the directory"), "{screen}");
    assert!(screen.contains("hr: created 1000"), "{screen}");
}
