//! End-to-end: the real binary against a mock Google token endpoint + Directory API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::google_mock;

use common::{code, stderr, stdout, ConfigBuilder, Env};
use google_mock::{user, Fault, GoogleMock, CLIENT_ID, MEMBER_SCOPE, USER_SCOPE};
use serde_json::Value;

const DIR: &str = "fabrikam";

fn setup(mock: &GoogleMock, scope: &str) -> Env {
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    ConfigBuilder::new()
        .guards(100, 100)
        .google(DIR, &mock.url(), "sa.json", google_mock::ADMIN)
        .dir("scope", scope)
        .write(&env);
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    let out = env.run_with(args, &[("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1")]);
    assert_no_key_material(&out);
    out
}

/// The private key never appears in any output.
fn assert_no_key_material(out: &std::process::Output) {
    let pem_line = google_mock::TEST_KEY_PEM
        .lines()
        .nth(3)
        .expect("a line of the key body");
    let all = format!("{}{}", stdout(out), stderr(out));
    assert!(!all.contains(pem_line), "key material leaked:\n{all}");
    assert!(!all.contains("PRIVATE KEY"), "key material leaked:\n{all}");
    assert!(!all.contains("ya29.mock"), "access token leaked:\n{all}");
}

fn sync(env: &Env) -> std::process::Output {
    run(env, &["sync"])
}

fn active(env: &Env) -> Vec<(String, bool)> {
    env.learners("learners.db", DIR)
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

/// The newest `reason` the action log gives for `external_id`'s `action`.
fn reason(env: &Env, external_id: &str, action: &str) -> Option<String> {
    let out = run(env, &["history", "--json", "--directory", DIR]);
    let records: Value = serde_json::from_str(&stdout(&out)).expect("history json");
    records.as_array()?.iter().find_map(|r| {
        (r["external_id"] == external_id && r["action"] == action)
            .then(|| r["reason"].as_str().unwrap_or("").to_string())
    })
}

fn pair(id: &str, on: bool) -> (String, bool) {
    (id.to_string(), on)
}

#[test]
fn first_sync_creates_learners_with_mapped_fields_across_pages() {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.page_cap = 2;
        s.users = (1..=5)
            .map(|i| {
                user(
                    &format!("10{i}"),
                    &format!("u{i}@fabrikam.example"),
                    "/Staff",
                )
            })
            .collect();
    });
    let env = setup(&mock, r#""all""#);
    let out = sync(&env);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let rows = env.learners("learners.db", DIR);
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].external_id, "101");
    assert_eq!(rows[0].user_name, "u1@fabrikam.example");
    assert_eq!(rows[0].email.as_deref(), Some("u1@fabrikam.example"));
    assert_eq!(rows[0].department.as_deref(), Some("Sales"));
    assert!(rows.iter().all(|r| r.active));
    // The JWT was verified and accepted once; users came in 3 pages of at most 2.
    let log = mock.log();
    assert_eq!(
        log.iter().filter(|l| *l == "token ok").count(),
        1,
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("REJECTED")), "{log:?}");
    let queries = mock.with(|s| s.user_queries.clone());
    assert_eq!(queries.len(), 3);
    assert_eq!(queries[0]["customer"], "my_customer");
    assert_eq!(queries[0]["maxResults"], "500");
    assert!(queries[0]["fields"].starts_with("nextPageToken,users(id,primaryEmail"));
    assert_eq!(queries[1]["pageToken"], "page-2");
    // Job title, employee id and manager land in the store too.
    let conn = rusqlite::Connection::open(env.path("learners.db")).expect("open");
    let (title, employee, manager, display): (String, String, String, String) = conn
        .query_row(
            "SELECT job_title, employee_id, manager_email, display_name FROM learners WHERE external_id = '101'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("row");
    assert_eq!(
        (
            title.as_str(),
            employee.as_str(),
            manager.as_str(),
            display.as_str()
        ),
        ("Rep", "E-101", "boss@fabrikam.example", "u1 Tester")
    );
}

#[test]
fn suspended_and_archived_users_are_deactivated_with_their_reason() {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.users = vec![
            user("1", "a@fabrikam.example", "/"),
            user("2", "b@fabrikam.example", "/"),
            user("3", "c@fabrikam.example", "/"),
        ]
    });
    let env = setup(&mock, r#""all""#);
    assert_eq!(code(&sync(&env)), 0);
    mock.with(|s| {
        s.users[1]["suspended"] = Value::Bool(true);
        s.users[2]["archived"] = Value::Bool(true);
    });
    let out = sync(&env);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        active(&env),
        vec![pair("1", true), pair("2", false), pair("3", false)]
    );
    assert_eq!(
        reason(&env, "2", "deactivated").as_deref(),
        Some("suspended in directory")
    );
    assert_eq!(
        reason(&env, "3", "deactivated").as_deref(),
        Some("archived in directory")
    );
}

#[test]
fn user_gone_from_listing_is_deleted_and_a_returning_user_is_reactivated() {
    let mock = GoogleMock::start();
    let gone = user("2", "b@fabrikam.example", "/");
    mock.with(|s| s.users = vec![user("1", "a@fabrikam.example", "/"), gone.clone()]);
    let env = setup(&mock, r#""all""#);
    assert_eq!(code(&sync(&env)), 0);
    mock.with(|s| {
        s.users.pop();
    });
    assert_eq!(code(&sync(&env)), 0);
    assert_eq!(active(&env), vec![pair("1", true), pair("2", false)]);
    assert_eq!(
        reason(&env, "2", "deactivated").as_deref(),
        Some("deleted in directory")
    );
    mock.with(|s| s.users.push(gone));
    assert_eq!(code(&sync(&env)), 0);
    assert_eq!(active(&env), vec![pair("1", true), pair("2", true)]);
    assert!(reason(&env, "2", "reactivated").is_some());
}

#[test]
fn org_unit_scope_includes_sub_units_and_leaving_it_is_out_of_scope() {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.users = vec![
            user("1", "a@fabrikam.example", "/Staff"),
            user("2", "b@fabrikam.example", "/Staff/Sales/EU"),
            user("3", "c@fabrikam.example", "/StaffAlumni"),
            user("4", "d@fabrikam.example", "/"),
        ]
    });
    let env = setup(&mock, r#"{ org_units = ["/Staff"] }"#);
    let out = sync(&env);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let ids: Vec<(String, bool)> = active(&env).into_iter().filter(|(_, a)| *a).collect();
    assert_eq!(ids, vec![pair("1", true), pair("2", true)]);
    mock.with(|s| s.users[1]["orgUnitPath"] = Value::from("/Contractors"));
    assert_eq!(code(&sync(&env)), 0);
    assert!(active(&env).contains(&pair("2", false)));
    assert_eq!(
        reason(&env, "2", "deactivated").as_deref(),
        Some("out of scope")
    );
}

#[test]
fn group_scope_includes_members_of_nested_groups() {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.expected_scopes = vec![USER_SCOPE, MEMBER_SCOPE];
        s.page_cap = 1;
        s.users = vec![
            user("1", "a@fabrikam.example", "/"),
            user("2", "b@fabrikam.example", "/"),
            user("3", "c@fabrikam.example", "/"),
        ];
        s.groups.insert(
            "staff@fabrikam.example".into(),
            vec![
                ("1".into(), "USER".into(), "a@fabrikam.example".into()),
                ("g2".into(), "GROUP".into(), "sales@fabrikam.example".into()),
            ],
        );
        s.groups.insert(
            "sales@fabrikam.example".into(),
            vec![("2".into(), "USER".into(), "b@fabrikam.example".into())],
        );
    });
    let env = setup(&mock, r#"{ groups = ["staff@fabrikam.example"] }"#);
    let out = sync(&env);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let on: Vec<String> = active(&env)
        .into_iter()
        .filter(|(_, a)| *a)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(on, vec!["1".to_string(), "2".to_string()]);
    assert!(!mock.log().iter().any(|l| l.contains("REJECTED")));
}

#[test]
fn throttling_and_server_errors_are_retried_until_the_listing_succeeds() {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.page_cap = 1;
        s.users = vec![
            user("1", "a@fabrikam.example", "/"),
            user("2", "b@fabrikam.example", "/"),
        ];
        s.faults = [
            Fault::Forbidden("userRateLimitExceeded"),
            Fault::Forbidden("quotaExceeded"),
            Fault::TooMany,
            Fault::Server(503),
            Fault::Server(500),
        ]
        .into();
    });
    let env = setup(&mock, r#""all""#);
    let out = sync(&env);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(active(&env), vec![pair("1", true), pair("2", true)]);
    let log = mock.log();
    let users: Vec<&String> = log.iter().filter(|l| l.starts_with("users")).collect();
    assert_eq!(
        users,
        vec![
            "users 403 userRateLimitExceeded",
            "users 403 quotaExceeded",
            "users 429",
            "users 503",
            "users 500",
            "users 200",
            "users 200"
        ]
    );
}

#[test]
fn truncated_body_or_persistent_5xx_fail_the_run_and_deactivate_no_one() {
    for fault in [Fault::Truncated, Fault::Server(502)] {
        let mock = GoogleMock::start();
        mock.with(|s| {
            s.users = vec![
                user("1", "a@fabrikam.example", "/"),
                user("2", "b@fabrikam.example", "/"),
            ]
        });
        let env = setup(&mock, r#""all""#);
        assert_eq!(code(&sync(&env)), 0);
        let before = env.learners("learners.db", DIR);
        mock.with(|s| {
            s.users.pop();
            s.persistent_fault = Some(fault.clone());
        });
        let out = sync(&env);
        assert_eq!(code(&out), 3, "{fault:?}: {}{}", stdout(&out), stderr(&out));
        assert!(stderr(&out).contains("gave up"), "{}", stderr(&out));
        assert_eq!(env.learners("learners.db", DIR), before, "{fault:?}");
        // Bounded: the first attempt plus the retries, then stop.
        let failed = mock
            .log()
            .iter()
            .filter(|l| l.starts_with("users") && *l != "users 200")
            .count();
        assert_eq!(failed, 7, "{fault:?}");
    }
}

#[test]
fn unauthorized_client_names_the_client_id_and_scopes_to_authorise() {
    let mock = GoogleMock::start();
    mock.with(|s| s.token_error = Some("unauthorized_client"));
    let env = setup(&mock, r#""all""#);
    let out = run(&env, &["check"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("FAIL"), "{text}");
    assert!(text.contains("unauthorized_client"), "{text}");
    assert!(
        text.contains(&format!("add client ID {CLIENT_ID}")),
        "{text}"
    );
    assert!(text.contains(USER_SCOPE), "{text}");
    let out = sync(&env);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("unauthorized_client"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("learners.db").exists() || active(&env).is_empty());
}

#[test]
fn invalid_grant_points_at_admin_email() {
    let mock = GoogleMock::start();
    mock.with(|s| s.token_error = Some("invalid_grant"));
    let env = setup(&mock, r#""all""#);
    let out = run(&env, &["check"]);
    assert_eq!(code(&out), 3);
    let text = stdout(&out);
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(
        text.contains("admin_email admin@fabrikam.example must be an existing"),
        "{text}"
    );
    assert_eq!(code(&sync(&env)), 3);
}

#[test]
fn check_reports_a_subject_that_is_not_an_admin() {
    let mock = GoogleMock::start();
    mock.with(|s| s.persistent_fault = Some(Fault::Forbidden("forbidden")));
    let env = setup(&mock, r#""all""#);
    let out = run(&env, &["check"]);
    assert_eq!(code(&out), 3);
    let text = stdout(&out);
    assert!(
        text.contains("ok   directory fabrikam (google): token for"),
        "{text}"
    );
    assert!(
        text.contains("is not allowed to read the directory"),
        "{text}"
    );
}

#[test]
fn check_probes_token_one_user_and_each_scoped_org_unit() {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.users = vec![
            user("1", "a@fabrikam.example", "/Staff/Sales"),
            user("2", "b@fabrikam.example", "/"),
        ]
    });
    let env = setup(&mock, r#"{ org_units = ["/Staff", "/Nowhere"] }"#);
    let out = run(&env, &["check"]);
    let text = stdout(&out);
    assert!(
        text.contains("users.list works (first user a@fabrikam.example)"),
        "{text}"
    );
    assert!(
        text.contains("ok   directory fabrikam (google): org unit /Staff has users"),
        "{text}"
    );
    assert!(
        text.contains("FAIL directory fabrikam (google): org unit /Nowhere"),
        "{text}"
    );
    assert_eq!(code(&out), 3);
}

#[test]
fn key_from_env_with_token_url_override_is_used_for_the_grant() {
    let mock = GoogleMock::start();
    mock.with(|s| s.users = vec![user("1", "a@fabrikam.example", "/")]);
    let env = setup(&mock, r#""all""#);
    // The key's own token_uri is Google's; the override must win (and be the JWT aud).
    let key = mock.key_json().replace(
        &format!("{}/token", mock.url()),
        "https://oauth2.googleapis.com/token",
    );
    let config = std::fs::read_to_string(env.config())
        .expect("config")
        .replace(
            r#"service_account_key = { file = "sa.json" }"#,
            &format!(
                "service_account_key = {{ env = \"FABRIKAM_SA_KEY\" }}\ntoken_url = \"{}/token\"",
                mock.url()
            ),
        );
    env.write("config.toml", &config);
    let out = env.run_with(
        &["sync"],
        &[
            ("FABRIKAM_SA_KEY", key.as_str()),
            ("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1"),
        ],
    );
    assert_no_key_material(&out);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(active(&env), vec![pair("1", true)]);
    assert_eq!(mock.log().first().map(String::as_str), Some("token ok"));
}

#[test]
fn a_jwt_signed_with_another_key_is_refused_and_nothing_is_synced() {
    let mock = GoogleMock::start();
    mock.with(|s| s.users = vec![user("1", "a@fabrikam.example", "/")]);
    let env = setup(&mock, r#""all""#);
    let other = include_str!("../fixtures/TEST-ONLY-google-other-key.pem");
    let key = mock.key_json().replace(
        &serde_json::to_string(google_mock::TEST_KEY_PEM).unwrap(),
        &serde_json::to_string(other).unwrap(),
    );
    env.write("sa.json", &key);
    let out = sync(&env);
    assert_eq!(code(&out), 3);
    assert!(!stderr(&out).contains(other.lines().nth(3).unwrap()));
    assert_eq!(
        mock.log(),
        vec!["token REJECTED: bad signature".to_string()]
    );
}
