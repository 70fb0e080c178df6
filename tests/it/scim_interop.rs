//! The SCIM store against the real reference server (`scim2-server` from PyPI),
//! through the real binary: lifecycle, adoption, idempotence and crash recovery.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{code, stderr, stdout, ConfigBuilder, Env};
use scim_server::{ScimServer, TOKEN};
use serde_json::json;

const HEADER: &str =
    "external_id,user_name,email,given_name,family_name,department,job_title,active\n";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn row(id: u32, given: &str, dept: &str) -> String {
    format!("E{id},user{id}@x.io,user{id}@x.io,{given},Family{id},{dept},Engineer,true\n")
}

fn setup(server: &ScimServer, concurrency: u32) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .state_db("state/state.db")
        .guards(1000, 100)
        .scim(&server.base, r#"{ env = "SCIM_TOKEN" }"#)
        // scim2-server is strict RFC 7644: Entra's `emails[type eq "work"].value`
        // answers 400 noTarget on a user without a work email.
        .store("dialect", r#""rfc""#)
        .store("concurrency", &concurrency.to_string())
        .csv("hr", "hr.csv")
        .write(&env);
    env
}

fn sync(env: &Env) -> std::process::Output {
    env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)])
}

fn assert_ok(out: &std::process::Output) {
    assert_eq!(
        code(out),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// externalId -> (id, meta.version) of every user; panics on a duplicate externalId.
fn versions(server: &ScimServer) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for u in server.users() {
        let ext = u["externalId"].as_str().unwrap_or_default().to_string();
        let prev = out.insert(
            ext.clone(),
            (
                u["id"].as_str().unwrap().to_string(),
                u["meta"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
        );
        assert!(prev.is_none(), "duplicate externalId {ext} on the server");
    }
    out
}

#[test]
fn lifecycle_create_update_deactivate_reactivate_lands_on_scim2_server() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    let mut csv = HEADER.to_string();
    for id in 1..=3 {
        csv.push_str(&row(id, &format!("Given{id}"), "Sales"));
    }
    env.write("hr.csv", &csv);
    assert_ok(&sync(&env));

    let u1 = server.user("E1");
    assert_eq!(u1["userName"], "user1@x.io");
    assert_eq!(u1["name"]["givenName"], "Given1");
    assert_eq!(u1["name"]["familyName"], "Family1");
    assert_eq!(u1["title"], "Engineer");
    assert_eq!(u1["active"], true);
    assert_eq!(
        u1["emails"],
        json!([{"value": "user1@x.io", "type": "work", "primary": true}])
    );
    assert_eq!(u1[ENTERPRISE]["department"], "Sales");
    assert_eq!(server.users().len(), 3);
    let id1 = u1["id"].clone();

    // Update: a department and a given name change.
    let csv2 = format!(
        "{HEADER}{}{}{}",
        row(1, "Given1", "Support"),
        row(2, "Renamed", "Sales"),
        row(3, "Given3", "Sales")
    );
    env.write("hr.csv", &csv2);
    assert_ok(&sync(&env));
    let u1 = server.user("E1");
    assert_eq!(u1["id"], id1, "an update keeps the resource");
    assert_eq!(u1[ENTERPRISE]["department"], "Support");
    assert_eq!(server.user("E2")["name"]["givenName"], "Renamed");

    // Deactivate: E3 is deleted in the directory -> active false, never DELETE.
    let csv3 = format!(
        "{HEADER}{}{}",
        row(1, "Given1", "Support"),
        row(2, "Renamed", "Sales")
    );
    env.write("hr.csv", &csv3);
    assert_ok(&sync(&env));
    let u3 = server.user("E3");
    assert_eq!(u3["active"], false);
    let id3 = u3["id"].clone();

    // Reactivate: back in the directory -> the same resource, active again.
    env.write("hr.csv", &csv2);
    assert_ok(&sync(&env));
    let u3 = server.user("E3");
    assert_eq!(u3["active"], true);
    assert_eq!(u3["id"], id3);
    assert_eq!(server.users().len(), 3);
}

#[test]
fn users_already_on_the_provider_are_adopted_not_duplicated() {
    let server = ScimServer::start();
    // E1 exists by externalId (stale name); user2 exists by userName only.
    let (s1, pre1) = server.request(
        "POST",
        "/Users",
        Some(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "old-name@x.io", "externalId": "E1", "displayName": "Stale", "active": false})),
    );
    assert_eq!(s1, 201, "{pre1}");
    let (s2, pre2) = server.request(
        "POST",
        "/Users",
        Some(
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "user2@x.io", "displayName": "Pre-provisioned"}),
        ),
    );
    assert_eq!(s2, 201, "{pre2}");
    let env = setup(&server, 4);
    let mut csv = HEADER.to_string();
    for id in 1..=3 {
        csv.push_str(&row(id, &format!("Given{id}"), "Sales"));
    }
    env.write("hr.csv", &csv);
    assert_ok(&sync(&env));

    assert_eq!(
        server.users().len(),
        3,
        "no duplicates: {:?}",
        server.users()
    );
    let u1 = server.user("E1");
    assert_eq!(u1["id"], pre1["id"], "E1 linked to the existing resource");
    assert_eq!(u1["userName"], "user1@x.io");
    assert_eq!(u1["active"], true);
    let u2 = server.user("E2");
    assert_eq!(u2["id"], pre2["id"], "user2 linked by userName");
    assert_eq!(u2["name"]["givenName"], "Given2");

    // Linked: the next change is an update of the same resources.
    let csv2 = format!(
        "{HEADER}{}{}{}",
        row(1, "Given1", "Legal"),
        row(2, "Given2", "Sales"),
        row(3, "Given3", "Sales")
    );
    env.write("hr.csv", &csv2);
    assert_ok(&sync(&env));
    assert_eq!(server.user("E1")["id"], pre1["id"]);
    assert_eq!(server.user("E1")[ENTERPRISE]["department"], "Legal");
    assert_eq!(server.users().len(), 3);
}

#[test]
fn a_second_run_with_no_changes_writes_nothing() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    let mut csv = HEADER.to_string();
    for id in 1..=20 {
        csv.push_str(&row(id, &format!("Given{id}"), "Sales"));
    }
    env.write("hr.csv", &csv);
    assert_ok(&sync(&env));
    let before = versions(&server);
    assert_eq!(before.len(), 20);
    let out = sync(&env);
    assert_ok(&out);
    assert_eq!(versions(&server), before, "no resource was written again");
}

fn many(n: u32) -> String {
    let mut csv = HEADER.to_string();
    for id in 1..=n {
        csv.push_str(&row(id, &format!("Given{id}"), "Sales"));
    }
    csv
}

#[test]
fn sigkill_during_apply_then_rerun_leaves_no_duplicates() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    env.write("hr.csv", &many(300));
    let mut child = env.spawn_quiet(&["sync"], &[("SCIM_TOKEN", TOKEN)]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, page) = server.request("GET", "/Users?count=1", None);
        if page["totalResults"].as_u64().unwrap_or(0) >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "no users were created");
        assert!(child.try_wait().unwrap().is_none(), "sync ended too early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = server.users().len();
    assert!(partial < 300, "the kill came too late to test anything");

    assert_ok(&sync(&env));
    let all = versions(&server);
    assert_eq!(all.len(), 300);
    assert_eq!(server.users().len(), 300, "no duplicates after the rerun");
    // And a third run has nothing left to do.
    assert_ok(&sync(&env));
    assert_eq!(versions(&server), all);
}

#[test]
fn crash_after_apply_then_rerun_converges_without_duplicates() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    env.write("hr.csv", &many(30));
    let out = env.run_with(
        &["sync"],
        &[("SCIM_TOKEN", TOKEN), ("LEARNER_SYNC_FAULT", "after-apply")],
    );
    assert_ne!(code(&out), 0);
    assert_eq!(server.users().len(), 30);
    let before = versions(&server);
    assert_ok(&sync(&env));
    assert_eq!(versions(&server), before, "the rerun rewrote nothing");
}

#[test]
fn managers_are_linked_by_scim_id_on_scim2_server() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    env.write(
        "hr.csv",
        "external_id,user_name,email,manager_email\n\
         E1,user1@x.io,user1@x.io,user2@x.io\n\
         E2,user2@x.io,user2@x.io,\n",
    );
    assert_ok(&sync(&env));
    let boss = server.user("E2")["id"].clone();
    assert_eq!(server.user("E1")[ENTERPRISE]["manager"]["value"], boss);
    let before = versions(&server);
    assert_ok(&sync(&env));
    assert_eq!(versions(&server), before);
}

#[test]
fn check_passes_against_scim2_server_and_explains_a_refused_token() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    env.write("hr.csv", &many(1));
    let out = env.run_with(&["check"], &[("SCIM_TOKEN", TOKEN)]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("Test Connection passed"),
        "{}",
        stdout(&out)
    );
    let out = env.run_with(&["check"], &[("SCIM_TOKEN", "not-the-token")]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("refused the token"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("not-the-token"));
}

#[test]
fn a_large_first_run_adopts_existing_users_without_duplicates() {
    let server = ScimServer::start();
    let (_, pre1) = server.request(
        "POST",
        "/Users",
        Some(
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "someone-else@x.io", "externalId": "E7"}),
        ),
    );
    let (_, pre2) = server.request(
        "POST",
        "/Users",
        Some(
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "USER42@x.io"}),
        ),
    );
    let env = setup(&server, 4);
    env.write("hr.csv", &many(120));
    assert_ok(&sync(&env));
    assert_eq!(versions(&server).len(), 120, "no duplicates");
    assert_eq!(server.users().len(), 120);
    assert_eq!(server.user("E7")["id"], pre1["id"]);
    assert_eq!(server.user("E7")["userName"], "user7@x.io");
    assert_eq!(server.user("E42")["id"], pre2["id"]);
    let before = versions(&server);
    assert_ok(&sync(&env));
    assert_eq!(versions(&server), before);
}

#[test]
fn crash_after_begin_then_rerun_creates_each_user_once() {
    let server = ScimServer::start();
    let env = setup(&server, 4);
    env.write("hr.csv", &many(30));
    let out = env.run_with(
        &["sync"],
        &[("SCIM_TOKEN", TOKEN), ("LEARNER_SYNC_FAULT", "after-begin")],
    );
    assert_ne!(code(&out), 0);
    assert_eq!(server.users().len(), 0, "nothing was sent before the crash");
    assert_ok(&sync(&env));
    assert_eq!(versions(&server).len(), 30);
    assert_eq!(server.users().len(), 30);
    // The crashed run is settled as not applied: each user is logged created once.
    let out = env.run_with(&["history", "--json"], &[("SCIM_TOKEN", TOKEN)]);
    assert_ok(&out);
    let actions: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let created = actions.iter().filter(|a| a["action"] == "created").count();
    assert_eq!(created, 30, "{actions:?}");
}
