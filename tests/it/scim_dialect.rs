//! The SCIM store's `dialect`, through the real binary against a mock provider that
//! accepts only the PATCH shape of Entra's own provisioning (api-notes.md, "What
//! Entra's SCIM client sends"): the endpoints the platforms built for Entra.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_mock;

use common::{code, stderr, stdout, Env};
use scim_mock::{ScimMock, ENTERPRISE};
use serde_json::json;

const TOKEN: &str = "mock-scim-token-0c4d8e21-never-printed";
const HEADER: &str =
    "external_id,user_name,email,given_name,family_name,department,manager_email,active\n";

fn setup(base: &str, dialect: &str) -> Env {
    let env = Env::new();
    env.write(
        "config.toml",
        &format!(
            r#"
[sync]
state_db = "state/state.db"
max_deactivations = 100
max_deactivation_percent = 100

[store]
kind = "scim"
url = "{base}"
token = {{ env = "SCIM_TOKEN" }}
concurrency = 1
{dialect}

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#
        ),
    );
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(args, &[("SCIM_TOKEN", TOKEN)])
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

/// E1 reports to E2 (created after E1, so the manager is set by the second pass).
fn rows(e1_email: &str, e1_family: &str, e1_dept: &str, e2_active: bool) -> String {
    format!(
        "{HEADER}E1,ann@x.io,{e1_email},Ann,{e1_family},{e1_dept},bea@x.io,true\n\
         E2,bea@x.io,bea@x.io,Bea,Boss,Board,,{e2_active}\n"
    )
}

fn patch_statuses(mock: &ScimMock) -> Vec<u16> {
    mock.requests("PATCH").iter().map(|l| l.status).collect()
}

#[test]
fn the_entra_dialect_sends_what_entra_sends_and_a_provider_built_for_it_takes_every_change() {
    let mock = ScimMock::start(TOKEN);
    mock.state().entra_patch_only = true;
    let env = setup(&mock.base(), r#"dialect = "entra""#);

    env.write("hr.csv", &rows("ann@x.io", "Ames", "Sales", true));
    assert_code(&run(&env, &["sync"]), 0);
    let boss = mock.user("E2")["id"].as_str().unwrap().to_string();
    assert_eq!(
        mock.user("E1")[ENTERPRISE]["manager"],
        json!({"value": boss})
    );
    let manager_patch: serde_json::Value =
        serde_json::from_str(&mock.requests("PATCH")[0].body).unwrap();
    assert_eq!(
        manager_patch["Operations"],
        json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": boss}])
    );

    // A new work email, a new department, a cleared family name.
    env.write("hr.csv", &rows("ann.new@x.io", "", "Legal", true));
    assert_code(&run(&env, &["sync"]), 0);
    let ann = mock.user("E1");
    assert_eq!(ann["emails"][0]["value"], "ann.new@x.io");
    assert_eq!(ann["emails"][0]["type"], "work");
    assert_eq!(ann[ENTERPRISE]["department"], "Legal");
    assert!(ann["name"].get("familyName").is_none(), "{ann}");

    // Deactivated, then reactivated: `active` as "False" and "True".
    env.write("hr.csv", &rows("ann.new@x.io", "", "Legal", false));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E2")["active"], false);
    env.write("hr.csv", &rows("ann.new@x.io", "", "Legal", true));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E2")["active"], true);
    let last: serde_json::Value =
        serde_json::from_str(&mock.requests("PATCH").pop().unwrap().body).unwrap();
    assert_eq!(
        last["Operations"],
        json!([{"op": "Replace", "path": "active", "value": "True"}])
    );
    assert!(
        patch_statuses(&mock).iter().all(|s| *s == 204),
        "{:?}",
        mock.requests("PATCH")
    );
}

#[test]
fn the_rfc_dialect_is_refused_by_a_provider_built_for_entra() {
    let mock = ScimMock::start(TOKEN);
    mock.state().entra_patch_only = true;
    let env = setup(&mock.base(), r#"dialect = "rfc""#);
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Sales", true));
    // The manager's second-pass PATCH is refused; the run itself goes on.
    run(&env, &["sync"]);
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Legal", true));
    let out = run(&env, &["sync"]);
    assert_code(&out, 3);
    assert!(patch_statuses(&mock).contains(&400));
    assert_eq!(mock.user("E1")[ENTERPRISE]["department"], "Sales");
}

#[test]
fn entra_is_the_default_dialect_and_a_strict_rfc_provider_refuses_it() {
    // Default: Entra's shapes, taken by a provider built for Entra, without
    // /ServiceProviderConfig or /ResourceTypes (Entra reads neither).
    let mock = ScimMock::start(TOKEN);
    {
        let mut s = mock.state();
        s.entra_patch_only = true;
        s.no_discovery = true;
    }
    let env = setup(&mock.base(), "");
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Sales", true));
    assert_code(&run(&env, &["sync"]), 0);
    let posts = mock.requests("POST");
    assert!(posts
        .iter()
        .all(|p| p.content_type == "application/scim+json"));
    let created: serde_json::Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(
        created,
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "externalId": "E1",
            "userName": "ann@x.io",
            "active": true,
            "emails": [{"value": "ann@x.io", "type": "work", "primary": true}],
            "name": {"givenName": "Ann", "familyName": "Ames"},
            ENTERPRISE: {"department": "Sales"},
            "meta": {"resourceType": "User"},
        })
    );
    // Lookups only by the matching attribute, userName.
    let gets = mock.requests("GET");
    let lookups: Vec<&str> = gets
        .iter()
        .filter(|g| g.path.starts_with("/Users?"))
        .map(|g| g.path.as_str())
        .collect();
    assert_eq!(lookups.len(), 2, "{lookups:?}");
    assert!(
        lookups.iter().all(|l| l.contains("filter=userName+eq+")),
        "{lookups:?}"
    );
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Legal", true));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(mock.user("E1")[ENTERPRISE]["department"], "Legal");

    // A strict RFC 7644 provider refuses Entra's capitalised ops and string `active`.
    let strict = ScimMock::start(TOKEN);
    strict.state().rfc_only = true;
    let env = setup(&strict.base(), "");
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Sales", true));
    run(&env, &["sync"]);
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Legal", true));
    assert_code(&run(&env, &["sync"]), 3);
    assert!(strict.requests("PATCH").iter().any(|p| p.status == 400));
    assert_eq!(strict.user("E1")[ENTERPRISE]["department"], "Sales");
    // ... and takes the rfc dialect.
    let env = setup(&strict.base(), r#"dialect = "rfc""#);
    env.write("hr.csv", &rows("ann@x.io", "Ames", "Legal", true));
    assert_code(&run(&env, &["sync"]), 0);
    assert_eq!(strict.user("E1")[ENTERPRISE]["department"], "Legal");
}

#[test]
fn an_unknown_dialect_is_a_config_error_naming_the_choices() {
    let env = setup("http://127.0.0.1:9", r#"dialect = "okta""#);
    env.write("hr.csv", HEADER);
    let out = run(&env, &["check"]);
    assert_ne!(code(&out), 0);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("store.dialect")
            && said.contains(r#"must be "entra", "entra-2020" or "rfc""#),
        "{said}"
    );
}
