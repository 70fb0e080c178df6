//! What the state DB and the store may be trusted with, through the real binary:
//! a held deactivation stays held until `approve` (or the user returns), and a merge
//! never writes a learner without a user name.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
#[path = "support/graph_mock.rs"]
mod graph_mock;

use common::{code, stderr, stdout, Env};
use graph_mock::{user, GraphMock};
use serde_json::json;

const SECRET: &str = "s3cr3t-value-never-printed";

/// An Entra directory whose every deactivation is held (`max_deactivations = 0`).
fn entra_env(mock: &GraphMock) -> Env {
    let env = Env::new();
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
    env
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
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("u1 has no user name"),
        "{}",
        stdout(&out)
    );

    let rows = env.learners("learners.db", "contoso");
    let ada = rows.iter().find(|r| r.external_id == "u1").unwrap();
    assert_eq!(ada.user_name, "ada@contoso.test", "{rows:?}");
    assert_eq!(ada.email.as_deref(), Some("ada@contoso.test"), "{rows:?}");
    assert_eq!(ada.department.as_deref(), Some("Sales"), "{rows:?}");
    assert!(ada.active);

    // The next run reads the whole directory: Ada is gone there, and held again.
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 4, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(held_ids(&env), ["u1"]);
    let rows = env.learners("learners.db", "contoso");
    assert!(rows.iter().all(|r| !r.user_name.is_empty()), "{rows:?}");
}
