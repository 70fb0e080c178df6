//! The SCIM store's fault handling through the real binary, against a mock provider:
//! throttling, server errors, conflicts, users deleted on the provider side, per-user
//! refusals, PUT-only providers, `check` hints, and the token's secrecy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_mock;

use common::{code, stderr, stdout, ConfigBuilder, Env};
use scim_mock::{ScimMock, ENTERPRISE};
use serde_json::{json, Value};

const TOKEN: &str = "mock-scim-token-3b9f2c71-never-printed";
const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

fn csv(rows: &[(u32, &str)]) -> String {
    let mut s = HEADER.to_string();
    for (id, dept) in rows {
        s.push_str(&format!(
            "E{id},user{id}@x.io,user{id}@x.io,Given{id},Family{id},{dept},true\n"
        ));
    }
    s
}

fn three(dept2: &str) -> String {
    csv(&[(1, "Sales"), (2, dept2), (3, "Sales")])
}

fn setup(base: &str, extra: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .state_db("state/state.db")
        .guards(100, 100)
        .scim(base, r#"{ env = "SCIM_TOKEN" }"#)
        // These pin the RFC behaviour (lookups by externalId then userName, the
        // one listing of a large first run, RFC PatchOps); scim_dialect.rs has Entra's.
        .store("dialect", r#""rfc""#)
        .store("concurrency", "1")
        .store_lines(extra)
        .csv("hr", "hr.csv")
        .write(&env);
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(
        args,
        &[("SCIM_TOKEN", TOKEN), ("LEARNER_SYNC_LOG", "debug")],
    )
}

fn assert_code(out: &std::process::Output, want: i32) {
    assert_eq!(
        code(out),
        want,
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

fn history(env: &Env) -> Vec<Value> {
    let out = run(env, &["history", "--json"]);
    assert_code(&out, 0);
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn throttled_with_retry_after_the_create_is_retried_and_succeeds() {
    let mock = ScimMock::start(TOKEN);
    mock.state().throttle_posts = 2;
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.state().users.len(), 3);
    let posts = mock.requests("POST");
    assert_eq!(posts.iter().filter(|p| p.status == 429).count(), 2);
    assert_eq!(posts.iter().filter(|p| p.status == 201).count(), 3);
}

#[test]
fn server_errors_are_retried_with_backoff_and_the_run_succeeds() {
    let mock = ScimMock::start(TOKEN);
    mock.state().fail_posts = 2;
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.state().users.len(), 3);
    assert_eq!(
        mock.requests("POST")
            .iter()
            .filter(|p| p.status == 503)
            .count(),
        2
    );
}

#[test]
fn a_409_uniqueness_on_create_is_resolved_by_lookup_and_linked() {
    let mock = ScimMock::start(TOKEN);
    let existing = mock.add_user(json!({"userName": "user2@x.io", "displayName": "Pre"}));
    mock.state().lagging_index.insert("user2@x.io".into());
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    let posts = mock.requests("POST");
    assert!(posts.iter().any(|p| p.status == 409), "{posts:?}");
    assert_eq!(mock.state().users.len(), 3, "no duplicate");
    let u2 = mock.user("E2");
    assert_eq!(
        u2["id"],
        existing.as_str(),
        "linked to the existing resource"
    );
    assert_eq!(u2["name"]["givenName"], "Given2");

    // Linked: a later change updates that resource.
    let adopted = mock.requests("PATCH").len();
    env.write("hr.csv", &three("Legal"));
    assert_code(&run(&env, &["sync"]), 0);
    let patches = mock.requests("PATCH")[adopted..].to_vec();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].path, format!("/Users/{existing}"));
    assert_eq!(mock.user("E2")[ENTERPRISE]["department"], "Legal");
}

#[test]
fn a_404_on_update_recreates_the_user_and_relinks_it() {
    let mock = ScimMock::start(TOKEN);
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    let old = mock.user("E2")["id"].as_str().unwrap().to_string();
    mock.state().users.remove(&old);

    env.write("hr.csv", &three("Legal"));
    assert_code(&run(&env, &["sync"]), 0);
    let u2 = mock.user("E2");
    let new = u2["id"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(u2[ENTERPRISE]["department"], "Legal");
    assert_eq!(mock.state().users.len(), 3);

    // Relinked: the next update goes to the new resource.
    env.write("hr.csv", &three("Ops"));
    assert_code(&run(&env, &["sync"]), 0);
    let last = mock.requests("PATCH").pop().unwrap();
    assert_eq!(last.path, format!("/Users/{new}"));
    assert_eq!(last.status, 204);
}

#[test]
fn a_400_for_one_user_fails_only_that_user_and_it_is_retried_next_run() {
    let mock = ScimMock::start(TOKEN);
    mock.state().refuse.insert("user3@x.io".into());
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    let out = run(&env, &["sync"]);
    assert_code(&out, 3);
    assert_eq!(mock.state().users.len(), 2, "the others were applied");
    mock.user("E1");
    mock.user("E2");
    let failed: Vec<Value> = history(&env)
        .into_iter()
        .filter(|a| a["action"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["external_id"], "E3");
    let reason = failed[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("userName user3@x.io is not allowed by policy"),
        "{reason}"
    );

    mock.state().refuse.clear();
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E3")["active"], true);
    assert_eq!(mock.state().users.len(), 3);
}

#[test]
fn a_provider_without_patch_gets_put_with_the_full_resource() {
    let mock = ScimMock::start(TOKEN);
    mock.state().patch_supported = false;
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    env.write("hr.csv", &three("Legal"));
    assert_code(&run(&env, &["sync"]), 0);
    assert!(mock.requests("PATCH").is_empty());
    let puts = mock.requests("PUT");
    assert_eq!(puts.len(), 1);
    let body: Value = serde_json::from_str(&puts[0].body).unwrap();
    assert_eq!(body["userName"], "user2@x.io");
    assert_eq!(body["externalId"], "E2");
    assert_eq!(mock.user("E2")[ENTERPRISE]["department"], "Legal");
}

#[test]
fn deactivate_delete_mode_deletes_and_reactivation_creates_again() {
    let mock = ScimMock::start(TOKEN);
    let env = setup(&mock.base(), "deactivate = \"delete\"");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    env.write("hr.csv", &csv(&[(1, "Sales"), (2, "Sales")]));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.requests("DELETE").len(), 1);
    assert_eq!(mock.state().users.len(), 2);
    // A deleted learner's field change sends nothing (it would recreate the user).
    let writes = mock
        .state()
        .log
        .iter()
        .filter(|l| l.method != "GET")
        .count();
    env.write(
        "hr.csv",
        &format!(
            "{}E3,user3@x.io,user3@x.io,Given3,Family3,Legal,false\n",
            csv(&[(1, "Sales"), (2, "Sales")])
        ),
    );
    assert_code(&run(&env, &["sync"]), 0);
    let after = mock
        .state()
        .log
        .iter()
        .filter(|l| l.method != "GET")
        .count();
    assert_eq!(after, writes);
    assert_eq!(mock.state().users.len(), 2);
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E3")["active"], true);
}

#[test]
fn deactivation_patches_active_false_and_never_deletes_by_default() {
    let mock = ScimMock::start(TOKEN);
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    assert_code(&run(&env, &["sync"]), 0);
    env.write("hr.csv", &csv(&[(1, "Sales"), (2, "Sales")]));
    assert_code(&run(&env, &["sync"]), 0);
    assert!(mock.requests("DELETE").is_empty());
    assert_eq!(mock.user("E3")["active"], false);
    let patch: Value = serde_json::from_str(&mock.requests("PATCH")[0].body).unwrap();
    assert_eq!(
        patch["Operations"],
        json!([{"op": "replace", "path": "active", "value": false}])
    );
}

#[test]
fn check_explains_a_refused_token_a_wrong_url_and_an_unreachable_provider() {
    let mock = ScimMock::start("another-token");
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    let out = run(&env, &["check"]);
    assert_code(&out, 3);
    assert!(
        stdout(&out).contains("refused the token"),
        "{}",
        stdout(&out)
    );

    let mock = ScimMock::start(TOKEN);
    let env = setup(&format!("{}/wrong/path", mock.base()), "");
    env.write("hr.csv", &three("Sales"));
    let out = run(&env, &["check"]);
    assert_code(&out, 3);
    assert!(
        stdout(&out).contains("e.g. https://lms.example.com/scim/v2"),
        "{}",
        stdout(&out)
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = setup(&format!("http://127.0.0.1:{port}"), "");
    env.write("hr.csv", &three("Sales"));
    let out = run(&env, &["check"]);
    assert_code(&out, 3);
    assert!(
        stdout(&out).contains("cannot reach the provider"),
        "{}",
        stdout(&out)
    );

    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    let out = run(&env, &["check"]);
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("Test Connection passed"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_token_never_appears_in_output_logs_state_db_or_mirror() {
    let mock = ScimMock::start(TOKEN);
    mock.state().refuse.insert("user3@x.io".into());
    mock.state().throttle_posts = 1;
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    let mut outputs = vec![run(&env, &["sync"])];
    env.write("hr.csv", &three("Legal"));
    outputs.push(run(&env, &["sync", "--dry-run"]));
    outputs.push(run(&env, &["sync"]));
    outputs.push(run(&env, &["check"]));
    outputs.push(run(&env, &["status"]));
    outputs.push(run(&env, &["history"]));
    // The token did reach the provider, as a bearer token.
    assert!(mock
        .state()
        .log
        .iter()
        .all(|l| l.authorization == format!("Bearer {TOKEN}")));
    for out in &outputs {
        assert!(!stdout(out).contains(TOKEN) && !stderr(out).contains(TOKEN));
    }
    let mut files = 0;
    for entry in std::fs::read_dir(env.path("state")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "token in {}",
                path.display()
            );
            files += 1;
        }
    }
    assert!(env.path("state/state.db.scim-mirror.db").exists());
    assert!(files >= 2);
}

#[test]
fn the_manager_is_sent_as_a_reference_to_the_managers_scim_id() {
    let mock = ScimMock::start(TOKEN);
    let env = setup(&mock.base(), "");
    // E3's manager (E4) comes later in the file: it is linked in a second pass.
    env.write(
        "hr.csv",
        "external_id,user_name,email,manager_email\n\
         E1,user1@x.io,user1@x.io,\n\
         E2,user2@x.io,user2@x.io,USER1@x.io\n\
         E3,user3@x.io,user3@x.io,user4@x.io\n\
         E4,user4@x.io,user4@x.io,\n\
         E5,user5@x.io,user5@x.io,nobody@elsewhere.io\n",
    );
    assert_code(&run(&env, &["sync"]), 0);
    let id = |ext: &str| mock.user(ext)["id"].as_str().unwrap().to_string();
    assert_eq!(mock.user("E2")[ENTERPRISE]["manager"]["value"], id("E1"));
    assert_eq!(mock.user("E3")[ENTERPRISE]["manager"]["value"], id("E4"));
    assert!(mock.user("E5")[ENTERPRISE]["manager"].is_null());

    // Nothing left to do on the next run, even for the manager outside the directory.
    let writes = |m: &ScimMock| m.state().log.iter().filter(|l| l.method != "GET").count();
    let before = writes(&mock);
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(writes(&mock), before);
}

#[test]
fn a_run_creating_many_users_lists_the_provider_once_instead_of_filtering_each() {
    let mock = ScimMock::start(TOKEN);
    let existing = mock.add_user(json!({"userName": "user30@x.io"}));
    let env = setup(&mock.base(), "");
    let rows: Vec<(u32, &str)> = (1..=60).map(|i| (i, "Sales")).collect();
    env.write("hr.csv", &csv(&rows));
    assert_code(&run(&env, &["sync"]), 0);
    let gets = mock.requests("GET");
    assert!(gets.iter().all(|g| !g.path.contains("filter")), "{gets:?}");
    assert_eq!(
        gets.iter()
            .filter(|g| g.path.starts_with("/Users?"))
            .count(),
        1
    );
    // ... and reads the one user it adopts whole, to write only what differs.
    let reads: Vec<&str> = gets
        .iter()
        .filter(|g| g.path.starts_with("/Users/"))
        .map(|g| g.path.as_str())
        .collect();
    assert_eq!(reads, [format!("/Users/{existing}")]);
    assert_eq!(mock.state().users.len(), 60);
    assert_eq!(mock.user("E30")["id"], existing.as_str());
    assert_eq!(mock.requests("POST").len(), 59);
}

#[test]
fn a_token_revoked_midway_keeps_what_landed_and_fails_the_rest_for_the_next_run() {
    let mock = ScimMock::start(TOKEN);
    mock.state().revoke_after_creates = Some(1);
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &three("Sales"));
    let out = run(&env, &["sync"]);
    assert_code(&out, 3);
    assert_eq!(mock.state().users.len(), 1);
    let actions: Vec<(String, String)> = history(&env)
        .into_iter()
        .map(|a| {
            (
                a["external_id"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("E1".into(), "created".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("E2".into(), "failed".into())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("E3".into(), "failed".into())),
        "{actions:?}"
    );

    mock.state().revoke_after_creates = None;
    let posts_before = mock.requests("POST").len();
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.state().users.len(), 3);
    assert_eq!(
        mock.requests("POST").len(),
        posts_before + 2,
        "E1 is not sent again"
    );
}
