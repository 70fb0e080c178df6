//! Provision on demand (`sync --directory NAME --user ID|UPN|EMAIL`) through the real
//! binary: one user read by id, UPN or mail (Graph mock), primary email or id (Google
//! mock) or a CSV row; planned and applied alone, printed step by step; cursors and
//! the other learners untouched; a dry run writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;
use crate::support::{google_mock, graph_mock};

use common::{code, column, sql, stderr, stdout, ConfigBuilder, Env};
use graph_mock::{user, GraphMock};
use serde_json::json;

const SECRET: &str = "on-demand-secret-never-printed";

fn entra_env(mock: &GraphMock, scope: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .sync("max_deactivation_percent", "100")
        .entra("contoso", &mock.base(), &[])
        .dir_lines(r#"client_secret = { env = "CONTOSO_SECRET" }"#)
        .dir_lines(scope)
        .write(&env);
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(args, &[("CONTOSO_SECRET", SECRET)])
}

fn state(env: &Env, query: &str) -> Vec<Vec<Option<String>>> {
    sql(env, "state.db", query)
}

fn tenant(mock: &GraphMock) {
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    mock.set_manager("u2", "u1");
}

#[test]
fn entra_one_user_by_upn_id_and_mail_is_applied_alone_and_the_cursor_stays() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = entra_env(&mock, "");
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let cursor = state(&env, "SELECT cursor, full_read_at FROM cursors");
    let snapshot = state(&env, "SELECT external_id, user FROM snapshot ORDER BY 1");

    // A new hire (managed by Ada) and a change to Bob, both waiting in the delta.
    let mut eve = user("u5", "e.five@contoso.onmicrosoft.test", "Eve", "Five");
    eve["mail"] = json!("eve@contoso.test");
    mock.add_user(eve);
    mock.set_manager("u5", "u1");
    mock.update("u2", json!({"department": "Marketing"}));
    mock.clear_log();

    let out = run(
        &env,
        &[
            "sync",
            "--directory",
            "contoso",
            "--user",
            "e.five@contoso.onmicrosoft.test",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for step in [
        "Provision on demand: directory `contoso`, user `e.five@contoso.onmicrosoft.test`",
        "1. Import user: matched by userPrincipalName: e.five@contoso.onmicrosoft.test (external id u5)",
        "2. Determine if user is in scope: in scope: no scope set",
        "3. Match user between source and target: no learner with this external id yet",
        "4. Perform action: create",
        "   manager_email: (none) -> \"ada@contoso.test\"",
        "   result: created by the store",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    assert_eq!(
        column(&env, "contoso", "u5", "email").as_deref(),
        Some("eve@contoso.test")
    );
    assert_eq!(
        column(&env, "contoso", "u2", "department").as_deref(),
        Some("Sales"),
        "Bob's change waits for the scheduled run"
    );
    // One user read: no delta call; the manager came through $expand.
    let log = mock.log();
    assert!(!log.iter().any(|l| l.contains("/users/delta")), "{log:?}");
    let get = log
        .iter()
        .find(|l| l.starts_with("GET /v1.0/users/e.five"))
        .expect("GET /users/{upn}");
    assert!(
        get.contains("$expand=manager($select=id,mail,userPrincipalName)"),
        "{get}"
    );
    assert!(
        !get.contains(",manager,") && !get.ends_with(",manager"),
        "{get}"
    );
    assert_eq!(
        state(&env, "SELECT cursor, full_read_at FROM cursors"),
        cursor
    );
    assert_eq!(
        state(&env, "SELECT external_id, user FROM snapshot ORDER BY 1"),
        snapshot
    );
    let actions = state(
        &env,
        "SELECT external_id, action FROM actions WHERE external_id = 'u5'",
    );
    assert_eq!(
        actions,
        vec![vec![Some("u5".into()), Some("created".into())]]
    );

    // By object id: Bob's pending change, applied for him alone.
    let out = run(&env, &["sync", "--directory", "contoso", "--user", "u2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("matched by id: bob@contoso.test (external id u2)"),
        "{text}"
    );
    assert!(text.contains("learner u2 (active)"), "{text}");
    assert!(
        text.contains("   department: \"Sales\" -> \"Marketing\""),
        "{text}"
    );
    assert!(text.contains("result: updated by the store"), "{text}");

    // By mail (not a UPN): a GET by UPN finds nobody, the mail filter does.
    mock.clear_log();
    let out = run(
        &env,
        &[
            "sync",
            "--directory",
            "contoso",
            "--user",
            "EVE@contoso.test",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("matched by mail"), "{text}");
    assert!(text.contains("4. Perform action: no change"), "{text}");
    assert!(
        mock.log()
            .iter()
            .any(|l| l.contains("$filter=mail eq 'EVE@contoso.test'")),
        "{:?}",
        mock.log()
    );

    // The scheduled run still gets everything from the stored cursor: nothing is
    // created twice, nothing left to change.
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("created 0") && text.contains("updated 0"),
        "{text}"
    );
    assert_eq!(
        state(
            &env,
            "SELECT count(*) FROM actions WHERE external_id = 'u5' AND action = 'created'"
        ),
        vec![vec![Some("1".into())]]
    );
}

#[test]
fn entra_a_user_outside_the_scope_group_is_deactivated_with_the_reason() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state()
        .groups
        .insert("g1".into(), vec!["u1".into(), "u2".into()]);
    let env = entra_env(&mock, r#"scope = { groups = ["g1"] }"#);
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    mock.state().groups.insert("g1".into(), vec!["u1".into()]);
    let out = run(&env, &["sync", "--directory", "contoso", "--user", "u2"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "2. Determine if user is in scope: out of scope: not a member of any scope group"
        ),
        "{text}"
    );
    assert!(text.contains("4. Perform action: deactivate"), "{text}");
    assert!(text.contains("result: deactivated by the store"), "{text}");
    assert_eq!(
        column(&env, "contoso", "u2", "active").as_deref(),
        Some("0")
    );
    assert_eq!(
        column(&env, "contoso", "u1", "active").as_deref(),
        Some("1")
    );
}

#[test]
fn entra_unknown_user_fails_with_exit_3_and_a_dry_run_writes_nothing() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = entra_env(&mock, "");
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let runs = state(&env, "SELECT count(*) FROM runs");

    let out = run(
        &env,
        &[
            "sync",
            "--directory",
            "contoso",
            "--user",
            "nobody@contoso.test",
        ],
    );
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1. Import user: not found"),
        "{}",
        stdout(&out)
    );

    mock.update("u1", json!({"jobTitle": "Countess"}));
    let out = run(
        &env,
        &[
            "sync",
            "--dry-run",
            "--directory",
            "contoso",
            "--user",
            "ada@contoso.test",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("(dry run: nothing is written)"), "{text}");
    assert!(
        text.contains("   job_title: \"Rep\" -> \"Countess\""),
        "{text}"
    );
    assert!(text.contains("result: would update (dry run)"), "{text}");
    assert_eq!(
        column(&env, "contoso", "u1", "job_title").as_deref(),
        Some("Rep")
    );
    assert_eq!(state(&env, "SELECT count(*) FROM runs"), runs);
    assert!(!text.contains(SECRET) && !stderr(&out).contains(SECRET));
}

#[test]
fn user_needs_one_directory_when_several_are_configured() {
    let env = Env::new();
    ConfigBuilder::new()
        .csv("hr", "hr.csv")
        .csv("contractors", "c.csv")
        .write(&env);
    let out = env.run(&["sync", "--user", "ann@x.io"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--directory NAME"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&["sync", "--full", "--directory", "hr", "--user", "ann@x.io"]);
    assert_eq!(
        code(&out),
        2,
        "--full and --user conflict: {}",
        stderr(&out)
    );
}

const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

#[test]
fn csv_row_is_provisioned_alone_and_a_held_deactivation_stays_held() {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(1, 100)
        .csv("hr", "hr.csv")
        .write(&env);
    let rows = |ids: &[u32], dept: &str| {
        let mut s = HEADER.to_string();
        for i in ids {
            s.push_str(&format!(
                "E{i},user{i}@x.io,User{i}@X.io,G{i},F{i},{dept},true\n"
            ));
        }
        s
    };
    env.write("hr.csv", &rows(&[1, 2, 3, 4], "Sales"));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // Everyone moves department; only user 2 is provisioned now.
    env.write("hr.csv", &rows(&[1, 2, 3, 4], "Ops"));
    let out = env.run(&["sync", "--user", "USER2@x.io"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("matched by user_name: user2@x.io (external id E2)"),
        "{text}"
    );
    assert!(text.contains("department: \"Sales\" -> \"Ops\""), "{text}");
    assert_eq!(
        column(&env, "hr", "E2", "department").as_deref(),
        Some("Ops")
    );
    assert_eq!(
        column(&env, "hr", "E1", "department").as_deref(),
        Some("Sales")
    );

    // Two are disabled at once: over max_deactivations = 1, both held.
    let disabled = rows(&[1, 2, 3, 4], "Ops")
        .replace(
            "E3,user3@x.io,User3@X.io,G3,F3,Ops,true",
            "E3,user3@x.io,User3@X.io,G3,F3,Ops,false",
        )
        .replace(
            "E4,user4@x.io,User4@X.io,G4,F4,Ops,true",
            "E4,user4@x.io,User4@X.io,G4,F4,Ops,false",
        );
    env.write("hr.csv", &disabled);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    // Provisioning user 3 on demand does not release their held deactivation.
    let out = env.run(&["sync", "--user", "E3"]);
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("matched by external_id"), "{text}");
    assert!(text.contains("4. Perform action: deactivate"), "{text}");
    assert!(
        text.contains("result: held, nothing written: this learner has held changes: `learner-sync approve --directory hr`"),
        "{text}"
    );
    assert_eq!(column(&env, "hr", "E3", "active").as_deref(), Some("1"));
    assert_eq!(
        state(&env, "SELECT external_id FROM held ORDER BY 1"),
        vec![vec![Some("E3".into())], vec![Some("E4".into())]]
    );
    // A row nobody has: not found, exit 3.
    let out = env.run(&["sync", "--user", "E9"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
}

fn google_env(mock: &google_mock::GoogleMock, scope: &str) -> Env {
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    ConfigBuilder::new()
        .guards(100, 100)
        .google("fabrikam", &mock.url(), "sa.json", google_mock::ADMIN)
        .dir("scope", scope)
        .write(&env);
    env
}

fn google_run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(args, &[("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1")])
}

#[test]
fn google_one_user_by_primary_email_alias_and_id_with_the_org_unit_scope() {
    use google_mock::{user as guser, GoogleMock};
    let mock = GoogleMock::start();
    mock.with(|s| {
        let mut a = guser("1", "a@fabrikam.example", "/Staff");
        a["aliases"] = json!(["alice@fabrikam.example"]);
        s.users = vec![a, guser("2", "b@fabrikam.example", "/Contractors")];
    });
    let env = google_env(&mock, r#"{ org_units = ["/Staff"] }"#);

    // Before any sync: the first learner of the directory comes from an alias.
    let out = google_run(
        &env,
        &[
            "sync",
            "--directory",
            "fabrikam",
            "--user",
            "Alice@fabrikam.example",
        ],
    );
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "1. Import user: matched by an email alias: a@fabrikam.example (external id 1)"
        ),
        "{text}"
    );
    assert!(
        text.contains("in scope: org unit /Staff is inside the scope's org units"),
        "{text}"
    );
    assert!(text.contains("result: created by the store"), "{text}");
    assert!(
        mock.log()
            .iter()
            .any(|l| l == "users.get Alice@fabrikam.example"),
        "{:?}",
        mock.log()
    );
    assert!(
        !mock.log().iter().any(|l| l.starts_with("users 200")),
        "no listing: {:?}",
        mock.log()
    );
    assert_eq!(
        column(&env, "fabrikam", "1", "department").as_deref(),
        Some("Sales")
    );
    assert_eq!(
        column(&env, "fabrikam", "1", "employee_id").as_deref(),
        Some("E-1")
    );

    // Outside the scope's org units and not a learner: nothing to create.
    let out = google_run(&env, &["sync", "--directory", "fabrikam", "--user", "2"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("matched by id"), "{text}");
    assert!(
        text.contains("out of scope: org unit /Contractors is outside the scope's org units"),
        "{text}"
    );
    assert!(column(&env, "fabrikam", "2", "active").is_none(), "{text}");

    let out = google_run(
        &env,
        &[
            "sync",
            "--directory",
            "fabrikam",
            "--user",
            "zed@fabrikam.example",
        ],
    );
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(stdout(&out).contains("not found"), "{}", stdout(&out));
}

#[test]
fn a_scim_store_gets_the_one_users_patch_from_the_reference_server() {
    use crate::support::scim_server::{ScimServer, TOKEN};
    let server = ScimServer::start();
    let env = Env::new();
    ConfigBuilder::new()
        .guards(100, 100)
        .scim(&server.base, r#"{ env = "SCIM_TOKEN" }"#)
        .store("dialect", "\"rfc\"")
        .csv("hr", "hr.csv")
        .write(&env);
    let scim = |args: &[&str]| env.run_with(args, &[("SCIM_TOKEN", TOKEN)]);
    let file = |dept1: &str, dept2: &str| {
        format!("{HEADER}E1,user1@x.io,user1@x.io,G1,F1,{dept1},true\nE2,user2@x.io,user2@x.io,G2,F2,{dept2},true\n")
    };
    env.write("hr.csv", &file("Sales", "Sales"));
    let out = scim(&["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let before = server.user("E1");

    env.write("hr.csv", &file("Sales", "Legal"));
    let out = scim(&["sync", "--user", "user2@x.io"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("result: updated by the store"),
        "{}",
        stdout(&out)
    );
    let dept = |u: &serde_json::Value| {
        u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"].clone()
    };
    assert_eq!(dept(&server.user("E2")), json!("Legal"));
    assert_eq!(
        server.user("E1")["meta"]["version"],
        before["meta"]["version"],
        "E1 untouched"
    );
    assert!(!stdout(&out).contains(TOKEN) && !stderr(&out).contains(TOKEN));
}
