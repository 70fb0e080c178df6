//! What the state DB and the store may be trusted with, through the real binary:
//! a held deactivation stays held until `approve` (or the user returns), and a merge
//! never writes a learner without a user name; state bound to one origin and one store
//! is not trusted for another.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;
use crate::support::graph_mock;

use common::{code, stderr, stdout, Env};
use graph_mock::{user, GraphMock};
use serde_json::json;

const SECRET: &str = "s3cr3t-value-never-printed";

/// An Entra directory whose every deactivation is held (`max_deactivations = 0`).
fn entra_env(mock: &GraphMock) -> Env {
    let env = Env::new();
    write_config(&env, mock);
    env
}

fn write_config(env: &Env, mock: &GraphMock) {
    let base = mock.base();
    env.write(
        "config.toml",
        &format!(
            r#"[sync]
state_db = "state.db"
max_deactivations = 0
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "contoso"
kind = "entra"
tenant_id = "tenant-1"
client_id = "client-1"
client_secret = {{ env = "CONTOSO_SECRET" }}
authority_url = "{base}"
graph_url = "{base}/v1.0"
"#
        ),
    );
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(args, &[("CONTOSO_SECRET", SECRET)])
}

fn tenant(mock: &GraphMock) {
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
}

fn held_ids(env: &Env) -> Vec<String> {
    let out = run(env, &["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let dirs = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
    let mut ids = vec![];
    for d in dirs {
        let held = d["held"].as_array().cloned().unwrap_or_default();
        for h in held {
            ids.push(h["external_id"].as_str().unwrap().to_string());
        }
    }
    ids
}

fn active(env: &Env) -> Vec<(String, bool)> {
    env.learners("learners.db", "contoso")
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

#[test]
fn a_held_deactivation_stays_held_over_quiet_runs_until_approved() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = entra_env(&mock);
    assert_eq!(code(&run(&env, &["sync"])), 0);

    mock.remove("u1", "deleted");
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 4, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(held_ids(&env), ["u1"]);

    // Nothing new in the directory: the hold is not forgotten.
    let out = run(&env, &["sync"]);
    assert_eq!(
        code(&out),
        4,
        "a quiet run still reports the hold: {}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("held 1"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1 deactivations still held"),
        "{}",
        stdout(&out)
    );
    assert_eq!(held_ids(&env), ["u1"]);
    assert_eq!(
        active(&env),
        [("u1".to_string(), true), ("u2".to_string(), true)]
    );

    let out = run(&env, &["approve", "contoso"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("approved 1 held deactivations: deactivated 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        active(&env),
        [("u1".to_string(), false), ("u2".to_string(), true)]
    );
    assert!(held_ids(&env).is_empty());
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "resolved: {}", stdout(&out));
}

#[test]
fn a_partial_change_of_a_user_the_snapshot_lost_never_blanks_the_learner() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = entra_env(&mock);
    assert_eq!(code(&run(&env, &["sync"])), 0);

    mock.remove("u1", "deleted");
    assert_eq!(code(&run(&env, &["sync"])), 4);
    // A partial item for the removed user: only one property comes.
    mock.state()
        .changes
        .push(json!({"id": "u1", "department": "Research"}));
    // The source cannot complete it from the delta: it reads everything again, where
    // Ada is gone, so her deactivation is held again; nothing is blanked.
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 4, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(held_ids(&env), ["u1"]);
    let rows = env.learners("learners.db", "contoso");
    let ada = rows.iter().find(|r| r.external_id == "u1").unwrap();
    assert_eq!(ada.user_name, "ada@contoso.test", "{rows:?}");
    assert_eq!(ada.email.as_deref(), Some("ada@contoso.test"), "{rows:?}");
    assert_eq!(ada.department.as_deref(), Some("Sales"), "{rows:?}");
    assert!(ada.active);
    assert!(rows.iter().all(|r| !r.user_name.is_empty()), "{rows:?}");
}

fn delta_calls(mock: &GraphMock) -> Vec<String> {
    mock.log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .collect()
}

fn remove_store(env: &Env) {
    for f in ["learners.db", "learners.db-wal", "learners.db-shm"] {
        let _ = std::fs::remove_file(env.path(f));
    }
}

#[test]
fn a_deleted_store_is_refilled_by_a_full_read_not_left_empty_by_a_quiet_delta() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = entra_env(&mock);
    assert_eq!(code(&run(&env, &["sync"])), 0);
    remove_store(&env);
    mock.clear_log();

    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        active(&env),
        [("u1".to_string(), true), ("u2".to_string(), true)]
    );
    let calls = delta_calls(&mock);
    assert!(
        !calls.is_empty() && !calls[0].contains("$deltatoken"),
        "a fresh round, not the stored deltaLink: {calls:?}"
    );
}

#[test]
fn a_restored_old_copy_of_the_store_is_repaired_by_a_full_read() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = entra_env(&mock);
    assert_eq!(code(&run(&env, &["sync"])), 0);
    let old = std::fs::read(env.path("learners.db")).unwrap();

    mock.add_user(user("u3", "cy@contoso.test", "Cy", "Young"));
    assert_eq!(code(&run(&env, &["sync"])), 0);
    assert_eq!(active(&env).len(), 3);

    // The store file is put back from a backup taken before Cy arrived.
    remove_store(&env);
    std::fs::write(env.path("learners.db"), old).unwrap();
    assert_eq!(active(&env).len(), 2);
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        active(&env),
        [
            ("u1".to_string(), true),
            ("u2".to_string(), true),
            ("u3".to_string(), true)
        ]
    );
}

#[test]
fn a_cursor_of_another_origin_is_dropped_and_the_new_one_read_in_full_under_the_guards() {
    let old = GraphMock::start(SECRET);
    tenant(&old);
    let env = entra_env(&old);
    assert_eq!(code(&run(&env, &["sync"])), 0);

    // The config now points at another Graph (another tenant's hosts).
    let new = GraphMock::start(SECRET);
    new.add_user(user("n1", "nia@fabrikam.test", "Nia", "North"));
    write_config(&env, &new);
    old.clear_log();

    let out = run(&env, &["sync"]);
    assert!(
        old.log().is_empty(),
        "the old origin's deltaLink is not used: {:?}",
        old.log()
    );
    let calls = delta_calls(&new);
    assert!(
        !calls.is_empty() && calls.iter().all(|c| !c.contains("$deltatoken")),
        "{calls:?}"
    );
    // A full read: the learners of the old origin are deactivations, and held.
    assert_eq!(code(&out), 4, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(held_ids(&env), ["u1", "u2"]);
    assert!(active(&env).contains(&("n1".to_string(), true)));
}
