//! What the SCIM store trusts of the provider, through the real binary against mock
//! providers (issue 14): a redirect is followed only within the configured origin, a
//! SCIM id never changes which resource a request goes to, and a mirror made on one
//! provider never sends its resource ids to another one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_mock;

use common::{code, stderr, stdout, Env};
use scim_mock::{ScimMock, ENTERPRISE};
use serde_json::json;

const TOKEN: &str = "mock-scim-token-5e0a9d13-never-printed";
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

fn config(env: &Env, base: &str) {
    env.write(
        "config.toml",
        &format!(
            r#"
[sync]
state_db = "state/state.db"

[store]
kind = "scim"
url = "{base}"
token = {{ env = "SCIM_TOKEN" }}
concurrency = 1

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#
        ),
    );
}

fn setup(base: &str) -> Env {
    let env = Env::new();
    config(&env, base);
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

/// Requests that write (anything but GET), as `METHOD path`.
fn writes(mock: &ScimMock) -> Vec<String> {
    mock.state()
        .log
        .iter()
        .filter(|l| l.method != "GET")
        .map(|l| format!("{} {}", l.method, l.path))
        .collect()
}

#[test]
fn a_redirect_to_another_origin_is_not_followed_and_nothing_is_linked() {
    let elsewhere = ScimMock::start(TOKEN);
    let mock = ScimMock::start(TOKEN);
    mock.state().redirect_to = Some(elsewhere.base());
    let env = setup(&mock.base());
    env.write("hr.csv", &csv(&[(1, "Sales"), (2, "Sales")]));

    let out = run(&env, &["sync"]);
    assert_ne!(code(&out), 0, "stderr:\n{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains(&format!(
            "redirected to {}, another origin than the configured {}",
            elsewhere.base(),
            mock.base()
        )),
        "{said}"
    );
    assert!(!said.contains(TOKEN));
    // Not one request reached the other origin: neither the token nor the learners.
    assert!(
        elsewhere.state().log.is_empty(),
        "{:?}",
        elsewhere.state().log
    );
    assert!(mock.state().users.is_empty());

    // Nothing was linked: once the provider stops redirecting, both are created.
    mock.state().redirect_to = None;
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.requests("POST").len(), 2);
    assert_eq!(mock.user("E1")["userName"], "user1@x.io");
    assert!(elsewhere.state().log.is_empty());
}

#[test]
fn a_provider_id_is_one_path_segment_and_never_names_another_resource() {
    let mock = ScimMock::start(TOKEN);
    // Somebody else's account, and two users the platform made before us whose ids,
    // joined naively, name that account or a resource below another one.
    let victim_id = mock.add_user(json!({"userName": "victim@other.io", "externalId": "V-1",
        "displayName": "Victim", "active": true}));
    assert_eq!(victim_id, "u0001");
    mock.add_user_with_id(
        "../u0001",
        json!({"userName": "user1@x.io", "active": true}),
    );
    mock.add_user_with_id("a/b", json!({"userName": "user2@x.io", "active": true}));
    let victim = mock.state().users[&victim_id].clone();
    let env = setup(&mock.base());

    env.write("hr.csv", &csv(&[(1, "Sales"), (2, "Sales")]));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E1")["id"], "../u0001", "adopted where it is");
    assert_eq!(mock.user("E2")["id"], "a/b");
    assert_eq!(mock.state().users[&victim_id], victim);

    // Adopted by PATCHes of what differed (externalId, names), by their escaped ids.
    let adopting: Vec<String> = mock.requests("PATCH").into_iter().map(|l| l.path).collect();
    assert_eq!(adopting, ["/Users/..%2Fu0001", "/Users/a%2Fb"]);

    // Linked: an update goes to the same resources, by their escaped ids.
    env.write("hr.csv", &csv(&[(1, "Legal"), (2, "Legal")]));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E1")[ENTERPRISE]["department"], "Legal");
    assert_eq!(mock.user("E2")[ENTERPRISE]["department"], "Legal");
    assert_eq!(mock.state().users[&victim_id], victim);
    assert_eq!(mock.state().users.len(), 3);
    let patches: Vec<String> = mock.requests("PATCH")[adopting.len()..]
        .iter()
        .map(|l| l.path.clone())
        .collect();
    assert_eq!(patches, ["/Users/..%2Fu0001", "/Users/a%2Fb"]);
    for w in writes(&mock) {
        let (_, path) = w.split_once(' ').unwrap();
        let below = path.strip_prefix("/Users/").unwrap_or_default();
        assert!(!below.contains('/'), "{w}");
    }
}

#[test]
fn a_new_scim_url_never_reuses_the_old_providers_ids_and_never_touches_its_users() {
    let a = ScimMock::start(TOKEN);
    let b = ScimMock::start(TOKEN);
    let env = setup(&a.base());
    env.write("hr.csv", &csv(&[(1, "Sales")]));
    assert_code(&run(&env, &["sync"]), 0);
    let old_id = a.user("E1")["id"].as_str().unwrap().to_string();
    // Provider B holds another person at the very id E1 has on A.
    let bob = b.add_user(json!({"userName": "bob@other.io", "externalId": "B-77",
        "displayName": "Bob", "active": true, ENTERPRISE: {"department": "Finance"}}));
    assert_eq!(bob, old_id);
    let bob_before = b.state().users[&bob].clone();
    let a_seen = a.state().log.len();

    config(&env, &b.base());
    env.write("hr.csv", &csv(&[(1, "Legal")]));
    // A dry run says what the real one does, and writes nothing anywhere.
    let out = run(&env, &["sync", "--dry-run"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("the SCIM url changed"),
        "{}",
        stderr(&out)
    );
    assert!(writes(&b).is_empty(), "{:?}", writes(&b));

    let out = run(&env, &["sync"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("the SCIM url changed"), "{err}");
    assert!(err.contains(&a.base()) && err.contains(&b.base()), "{err}");
    assert!(!err.contains(TOKEN));
    // Bob is untouched; E1 was looked up on B and created there.
    assert_eq!(b.state().users[&bob], bob_before);
    for w in writes(&b) {
        assert!(!w.ends_with(&format!("/Users/{bob}")), "{w}");
    }
    let e1 = b.user("E1");
    assert_ne!(e1["id"], bob.as_str());
    assert_eq!(e1[ENTERPRISE]["department"], "Legal");
    assert_eq!(e1["userName"], "user1@x.io");
    assert_eq!(
        a.state().log.len(),
        a_seen,
        "nothing sent to the old provider"
    );

    // Bound to B now: the next change updates E1's resource on B, and nothing else.
    env.write("hr.csv", &csv(&[(1, "Ops")]));
    assert_code(&run(&env, &["sync"]), 0);
    let e1_id = e1["id"].as_str().unwrap();
    let last = b.requests("PATCH").pop().unwrap();
    assert_eq!(last.path, format!("/Users/{e1_id}"));
    assert_eq!(b.user("E1")[ENTERPRISE]["department"], "Ops");
    assert_eq!(b.state().users[&bob], bob_before);
    assert_eq!(b.requests("POST").len(), 1);
}

#[test]
fn on_a_new_scim_url_a_learner_the_new_provider_already_holds_is_adopted_there() {
    let a = ScimMock::start(TOKEN);
    let b = ScimMock::start(TOKEN);
    let env = setup(&a.base());
    env.write("hr.csv", &csv(&[(1, "Sales")]));
    assert_code(&run(&env, &["sync"]), 0);
    let old_id = a.user("E1")["id"].as_str().unwrap().to_string();
    // On B, another person at E1's old id, and E1 itself (say, migrated) at another.
    let bob = b.add_user(json!({"userName": "bob@other.io", "externalId": "B-77", "active": true}));
    assert_eq!(bob, old_id);
    let bob_before = b.state().users[&bob].clone();
    let e1_on_b = b.add_user(json!({"userName": "user1@x.io", "externalId": "E1", "active": true}));

    config(&env, &b.base());
    env.write("hr.csv", &csv(&[(1, "Legal")]));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(b.state().users[&bob], bob_before);
    assert!(b.requests("POST").is_empty(), "adopted, not duplicated");
    let e1 = b.user("E1");
    assert_eq!(e1["id"], e1_on_b.as_str());
    assert_eq!(e1[ENTERPRISE]["department"], "Legal");
    assert_eq!(e1["name"]["givenName"], "Given1");
}
