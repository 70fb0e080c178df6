//! End-to-end tests of the `entra` source: the real binary against a mock Microsoft
//! login + Graph server on 127.0.0.1 (tests/it/support/graph_mock.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;
use crate::support::graph_mock;

use std::time::{Duration, Instant};

use common::{code, sql, stderr, stdout, ConfigBuilder, Env};
use graph_mock::{user, Fault, GraphMock, TrustedCert};
use serde_json::json;

const SECRET: &str = "s3cr3t-value-never-printed";

fn env_for(mock: &GraphMock, credential: &str, scope: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .sync("max_deactivation_percent", "100")
        .entra("contoso", &mock.base(), &[])
        .dir_lines(credential)
        .dir_lines(scope)
        .write(&env);
    env
}

fn secret_env(mock: &GraphMock) -> Env {
    env_for(mock, r#"client_secret = { env = "CONTOSO_SECRET" }"#, "")
}

fn sync(env: &Env, extra: &[(&str, &str)]) -> std::process::Output {
    let mut envs = vec![("CONTOSO_SECRET", SECRET)];
    envs.extend_from_slice(extra);
    env.run_with(&["sync"], &envs)
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

fn column(env: &Env, id: &str, col: &str) -> Option<String> {
    sql(
        env,
        "learners.db",
        &format!("SELECT {col} FROM learners WHERE directory = 'contoso' AND external_id = '{id}'"),
    )
    .into_iter()
    .next()
    .and_then(|r| r.into_iter().next().flatten())
}

fn active(env: &Env) -> Vec<(String, bool)> {
    env.learners("learners.db", "contoso")
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

fn cursor(env: &Env) -> Option<String> {
    sql(
        env,
        "state.db",
        "SELECT cursor FROM cursors WHERE directory = 'contoso'",
    )
    .into_iter()
    .next()
    .and_then(|r| r.into_iter().next().flatten())
}

/// (external_id, action, reason) of the last run's actions.
fn last_actions(env: &Env) -> Vec<(String, String, String)> {
    sql(
        env,
        "state.db",
        "SELECT external_id, action, reason FROM actions WHERE run_id = (SELECT MAX(run_id) FROM actions) ORDER BY external_id",
    )
    .into_iter()
    .map(|r| {
        let mut it = r.into_iter().map(Option::unwrap_or_default);
        (
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
        )
    })
    .collect()
}

/// Graph GETs of users/delta in the log.
fn delta_calls(mock: &GraphMock) -> Vec<String> {
    mock.log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .collect()
}

/// A tenant of three users (two pages of two), Bob managed by Ada, Cy without mail.
fn tenant(mock: &GraphMock) {
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    let mut cy = user("u3", "cy@contoso.test", "Cy", "Young");
    cy["mail"] = json!(null);
    mock.add_user(cy);
    mock.set_manager("u2", "u1");
}

#[test]
fn first_run_walks_delta_with_select_and_stores_the_delta_link() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    // A duplicate of Ada later in the round, and a removed user never seen.
    mock.state().first_round_extra = vec![
        user("u1", "ada@contoso.test", "Ada", "Lovelace"),
        json!({"id": "gone", "@removed": {"reason": "deleted"}}),
    ];
    let env = secret_env(&mock);
    let out = sync(&env, &[]);
    assert_ok(&out);

    assert_eq!(
        active(&env),
        vec![
            ("u1".into(), true),
            ("u2".into(), true),
            ("u3".into(), true)
        ]
    );
    assert_eq!(
        column(&env, "u3", "email").as_deref(),
        Some("cy@contoso.test"),
        "mail falls back to the UPN"
    );
    assert_eq!(
        column(&env, "u2", "manager_email").as_deref(),
        Some("ada@contoso.test")
    );
    assert_eq!(
        column(&env, "u1", "family_name").as_deref(),
        Some("Lovelace")
    );

    let calls = delta_calls(&mock);
    assert!(calls.len() >= 3, "paged over several pages: {calls:?}");
    let first = &calls[0];
    for prop in [
        "accountEnabled",
        "userType",
        "mail",
        "userPrincipalName",
        "employeeId",
        "manager",
    ] {
        assert!(first.contains(prop), "$select names {prop}: {first}");
    }
    assert!(
        calls[1].contains("$skiptoken="),
        "followed the nextLink: {calls:?}"
    );
    let stored = cursor(&env).expect("a cursor");
    let stored = url::Url::parse(&stored).expect("a URL");
    assert!(
        stored.query_pairs().any(|(k, _)| k == "$deltatoken"),
        "the deltaLink is stored: {stored}"
    );
}

#[test]
fn second_run_calls_only_the_delta_link_and_merges_partial_updates() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    let link = cursor(&env).expect("cursor");
    mock.clear_log();

    // Partial updates: only the changed properties come; null clears.
    mock.update("u1", json!({"department": "Research"}));
    mock.update("u2", json!({"jobTitle": null}));
    let out = sync(&env, &[]);
    assert_ok(&out);

    let calls = delta_calls(&mock);
    let path_of = |l: &str| {
        l.split_once(' ')
            .map(|x| x.1.to_string())
            .unwrap_or_default()
    };
    assert!(
        calls
            .iter()
            .all(|c| !c.contains("$select=") || c.contains("$deltatoken")),
        "no fresh round: {calls:?}"
    );
    let stored = url::Url::parse(&link).expect("url");
    let decoded: Vec<(String, String)> = stored.query_pairs().into_owned().collect();
    let expected = format!("{}?{}={}", stored.path(), decoded[0].0, decoded[0].1);
    assert_eq!(
        path_of(&calls[0]),
        expected,
        "the first call is the stored deltaLink"
    );

    assert_eq!(
        column(&env, "u1", "department").as_deref(),
        Some("Research")
    );
    assert_eq!(
        column(&env, "u1", "given_name").as_deref(),
        Some("Ada"),
        "absent = unchanged"
    );
    assert_eq!(column(&env, "u1", "job_title").as_deref(), Some("Rep"));
    assert_eq!(column(&env, "u2", "job_title"), None, "null clears");
    assert_eq!(
        column(&env, "u2", "manager_email").as_deref(),
        Some("ada@contoso.test")
    );
    assert_ne!(cursor(&env), Some(link), "the cursor advanced");
}

#[test]
fn removed_users_are_deactivated_and_a_restore_reactivates() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));

    mock.remove("u1", "changed");
    mock.remove("u3", "deleted");
    assert_ok(&sync(&env, &[]));
    assert_eq!(
        active(&env),
        vec![
            ("u1".into(), false),
            ("u2".into(), true),
            ("u3".into(), false)
        ]
    );
    let actions = last_actions(&env);
    assert!(
        actions.contains(&(
            "u1".into(),
            "deactivated".into(),
            "deleted in directory".into()
        )),
        "{actions:?}"
    );
    assert!(
        actions.contains(&(
            "u3".into(),
            "deactivated".into(),
            "deleted in directory".into()
        )),
        "{actions:?}"
    );

    mock.restore("u1");
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env)[0], ("u1".into(), true));
    assert_eq!(last_actions(&env)[0].1, "reactivated");
}

#[test]
fn disabled_account_is_deactivated_and_reenabled_account_reactivated() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));

    mock.update("u2", json!({"accountEnabled": false}));
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env)[1], ("u2".into(), false));
    assert_eq!(
        last_actions(&env),
        vec![(
            "u2".into(),
            "deactivated".into(),
            "disabled in directory".into()
        )]
    );

    mock.update("u2", json!({"accountEnabled": true}));
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env)[1], ("u2".into(), true));
}

/// Drop a user from the tenant without a change record: only a full round sees it.
fn vanish(mock: &GraphMock, id: &str) {
    mock.state().users.remove(id);
}

fn assert_fresh_round_after_failed_link(mock: &GraphMock, env: &Env) {
    let calls = delta_calls(mock);
    assert!(calls[0].contains("$deltatoken="), "{calls:?}");
    assert!(
        calls[1].contains("$select=") && !calls[1].contains("$deltatoken"),
        "a fresh round with our own $select, not the Location: {calls:?}"
    );
    assert_eq!(
        active(env)[2],
        ("u3".into(), false),
        "reconciled: missing user deactivated"
    );
    assert_eq!(
        last_actions(env),
        vec![(
            "u3".into(),
            "deactivated".into(),
            "deleted in directory".into()
        )]
    );
}

#[test]
fn expired_delta_token_falls_back_to_full_read_and_reconciles() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    vanish(&mock, "u3");
    mock.state().expire_next = true;
    mock.clear_log();
    assert_ok(&sync(&env, &[]));
    assert_fresh_round_after_failed_link(&mock, &env);
}

#[test]
fn reset_delta_token_410_restarts_a_round_with_our_own_select() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    vanish(&mock, "u3");
    mock.state().reset_next = true;
    mock.clear_log();
    assert_ok(&sync(&env, &[]));
    assert_fresh_round_after_failed_link(&mock, &env);
}

#[test]
fn full_flag_forces_a_fresh_round() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    mock.clear_log();
    assert_ok(&env.run_with(&["sync", "--full"], &[("CONTOSO_SECRET", SECRET)]));
    let calls = delta_calls(&mock);
    assert!(
        calls[0].contains("$select=") && !calls[0].contains("$deltatoken"),
        "{calls:?}"
    );
}

#[test]
fn throttling_honours_decimal_retry_after_then_succeeds() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    {
        let mut s = mock.state();
        s.throttle_next = 2;
        s.retry_after = "0.25".into();
    }
    let env = secret_env(&mock);
    let started = Instant::now();
    assert_ok(&sync(&env, &[]));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited Retry-After twice"
    );
    assert_eq!(active(&env).len(), 3);
    let calls = delta_calls(&mock);
    assert_eq!(
        calls[0], calls[1],
        "the throttled request was retried: {calls:?}"
    );
    assert_eq!(calls[1], calls[2]);
}

#[test]
fn service_unavailable_with_retry_after_is_retried() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    {
        let mut s = mock.state();
        s.throttle_next = 1;
        s.throttle_status = 503;
        s.retry_after = "0.1".into();
    }
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env).len(), 3);
}

fn token_requests(mock: &GraphMock) -> usize {
    mock.log()
        .iter()
        .filter(|l| l.starts_with("POST ") && l.contains("/oauth2/v2.0/token"))
        .count()
}

#[test]
fn a_throttled_token_endpoint_is_retried_after_its_retry_after() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    {
        let mut s = mock.state();
        s.throttle_token_next = 2;
        s.retry_after = "0.1".into();
    }
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    assert_eq!(token_requests(&mock), 3, "{:?}", mock.log());
    assert_eq!(mock.state().tokens_issued, 1);
    assert_eq!(active(&env).len(), 3);
}

#[test]
fn a_token_endpoint_busy_beyond_the_retries_fails_the_run_and_deactivates_nobody() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    mock.remove("u3", "deleted");
    {
        let mut s = mock.state();
        s.throttle_token_next = 1000;
        s.throttle_status = 503;
        s.retry_after = "0.05".into();
    }
    mock.clear_log();
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("the token endpoint is throttling or unavailable (503)")
            && err.contains("AADSTS50196"),
        "{err}"
    );
    assert_eq!(token_requests(&mock), 6, "six tries, then the run fails");
    assert!(
        delta_calls(&mock).is_empty(),
        "no Graph call without a token"
    );
    assert!(active(&env).iter().all(|(_, a)| *a), "nobody deactivated");

    mock.state().throttle_token_next = 0;
    assert_ok(&sync(&env, &[]));
    assert_eq!(
        active(&env)
            .into_iter()
            .filter(|(_, a)| !*a)
            .map(|(id, _)| id)
            .collect::<Vec<_>>(),
        ["u3"],
        "the next run completes the deactivation"
    );
}

#[test]
fn national_cloud_asks_for_a_token_for_its_own_graph_root() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state().expected_scope = "https://graph.microsoft.us/.default".into();
    let env = env_for(
        &mock,
        "client_secret = { env = \"CONTOSO_SECRET\" }\ncloud = \"usgov\"",
        "",
    );
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env).len(), 3);
}

#[test]
fn tokens_close_to_expiry_are_renewed_before_use() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    // A token that expires within the renewal margin (5 minutes) is never reused.
    mock.state().token_lifetime = 240;
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    let pages = delta_calls(&mock).len() as u32;
    assert!(mock.state().tokens_issued >= pages, "renewed for each page");
}

#[test]
fn a_rejected_token_is_renewed_once_and_the_read_goes_on() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state().revoked_up_to = 1;
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    assert_eq!(mock.state().tokens_issued, 2);
    assert_eq!(active(&env).len(), 3);
}

#[test]
fn wrong_secret_fails_with_exit_3_and_a_clear_message_without_the_secret() {
    let mock = GraphMock::start("the-real-secret");
    tenant(&mock);
    let env = secret_env(&mock);
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("AADSTS7000215"), "{text}");
    assert!(!text.contains(SECRET), "the secret leaked: {text}");
    assert!(!text.contains("the-real-secret"));
    assert!(delta_calls(&mock).is_empty());
    let check = env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);
    let text = stdout(&check);
    assert_eq!(code(&check), 3, "{text}");
    assert!(
        text.contains("FAIL") && text.contains("Certificates & secrets"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
}

#[test]
fn missing_permission_fails_the_directory_naming_user_read_all() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state().forbidden = vec!["users".into()];
    let env = secret_env(&mock);
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("Authorization_RequestDenied") && text.contains("User.Read.All"),
        "{text}"
    );

    let check = env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);
    let text = stdout(&check);
    assert!(
        text.contains("ok   directory contoso (entra): got a token"),
        "{text}"
    );
    assert!(
        text.contains("User.Read.All") && text.contains("admin consent"),
        "{text}"
    );
}

#[test]
fn check_reads_token_users_and_scope_and_names_group_permission() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state().groups.insert("g1".into(), vec!["u1".into()]);
    let env = env_for(
        &mock,
        r#"client_secret = { env = "CONTOSO_SECRET" }"#,
        r#"scope = { groups = ["g1"] }"#,
    );
    let ok = env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);
    let text = stdout(&ok);
    assert!(
        text.contains("read users") && text.contains("read the scope: 1 users"),
        "{text}"
    );

    mock.state().forbidden = vec!["groups".into()];
    let failed = env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);
    let text = stdout(&failed);
    assert_eq!(code(&failed), 3, "{text}");
    assert!(
        text.contains("FAIL") && text.contains("GroupMember.Read.All"),
        "{text}"
    );
}

#[test]
fn group_scope_keeps_transitive_members_and_deactivates_leavers_as_out_of_scope() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state()
        .groups
        .insert("g1".into(), vec!["u1".into(), "u2".into()]);
    let env = env_for(
        &mock,
        r#"client_secret = { env = "CONTOSO_SECRET" }"#,
        r#"scope = { groups = ["g1"] }"#,
    );
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env), vec![("u1".into(), true), ("u2".into(), true)]);
    assert!(mock
        .log()
        .iter()
        .any(|l| l.contains("/groups/g1/transitiveMembers/microsoft.graph.user")));

    mock.state()
        .groups
        .insert("g1".into(), vec!["u1".into(), "u3".into()]);
    assert_ok(&sync(&env, &[]));
    assert_eq!(
        active(&env),
        vec![
            ("u1".into(), true),
            ("u2".into(), false),
            ("u3".into(), true)
        ]
    );
    assert!(last_actions(&env).contains(&(
        "u2".into(),
        "deactivated".into(),
        "out of scope".into()
    )));
}

#[test]
fn app_scope_includes_users_assigned_directly_and_through_groups() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    {
        let mut s = mock.state();
        s.groups.insert("g2".into(), vec!["u3".into()]);
        s.app_assignments.insert(
            "sp1".into(),
            vec![("u1".into(), "User".into()), ("g2".into(), "Group".into())],
        );
    }
    let env = env_for(
        &mock,
        r#"client_secret = { env = "CONTOSO_SECRET" }"#,
        r#"scope = { app = "sp1" }"#,
    );
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env), vec![("u1".into(), true), ("u3".into(), true)]);

    mock.state().forbidden = vec!["servicePrincipals".into()];
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3);
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("Application.Read.All"));
}

#[test]
fn guests_are_excluded_by_default() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let mut guest = user("u4", "gus_ext#EXT#@contoso.test", "Gus", "Guest");
    guest["userType"] = json!("Guest");
    mock.add_user(guest);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env).len(), 3);
    assert!(column(&env, "u4", "user_name").is_none());
}

#[test]
fn malformed_json_mid_listing_fails_the_run_and_changes_nothing() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    let link = cursor(&env);
    let before = env.learners("learners.db", "contoso");

    mock.update("u1", json!({"department": "Research"}));
    mock.remove("u2", "deleted");
    mock.update("u3", json!({"accountEnabled": false}));
    mock.state().fault = Some((1, Fault::Malformed));
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("malformed"));
    assert_eq!(
        env.learners("learners.db", "contoso"),
        before,
        "store untouched"
    );
    assert_eq!(cursor(&env), link, "cursor not advanced");

    mock.state().fault = None;
    assert_ok(&sync(&env, &[]));
    assert_eq!(
        active(&env),
        vec![
            ("u1".into(), true),
            ("u2".into(), false),
            ("u3".into(), false)
        ]
    );
    assert_eq!(
        column(&env, "u1", "department").as_deref(),
        Some("Research")
    );
}

#[test]
fn dropped_connection_mid_listing_fails_the_run_and_creates_nobody() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    mock.state().fault = Some((1, Fault::Drop));
    let env = secret_env(&mock);
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(cursor(&env).is_none());
    mock.state().fault = None;
    assert_ok(&sync(&env, &[]));
    assert_eq!(active(&env).len(), 3);
}

#[test]
fn run_killed_after_apply_converges_on_the_next_run() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    let link = cursor(&env);

    mock.update("u1", json!({"department": "Research"}));
    mock.remove("u2", "deleted");
    mock.add_user(user("u5", "eve@contoso.test", "Eve", "New"));
    let out = sync(&env, &[("LEARNER_SYNC_FAULT", "after-apply")]);
    assert_ne!(code(&out), 0);
    assert_eq!(
        cursor(&env),
        link,
        "the cursor only advances after a committed run"
    );

    assert_ok(&sync(&env, &[]));
    assert_eq!(
        active(&env),
        vec![
            ("u1".into(), true),
            ("u2".into(), false),
            ("u3".into(), true),
            ("u5".into(), true)
        ]
    );
    assert_eq!(
        column(&env, "u1", "department").as_deref(),
        Some("Research")
    );
    assert_ne!(cursor(&env), link);
    // Nothing left to do: a third run changes nothing.
    mock.clear_log();
    let out = sync(&env, &[]);
    assert_ok(&out);
    assert!(last_actions(&env).len() <= 3);
}

#[test]
fn run_killed_mid_listing_converges_on_the_next_run() {
    let mock = GraphMock::start(SECRET);
    tenant(&mock);
    let env = secret_env(&mock);
    assert_ok(&sync(&env, &[]));
    let link = cursor(&env);
    mock.update("u1", json!({"department": "Research"}));
    mock.remove("u2", "deleted");
    mock.add_user(user("u5", "eve@contoso.test", "Eve", "New"));
    {
        let mut s = mock.state();
        s.page_size = 1;
        s.latency = Duration::from_millis(300);
    }
    mock.clear_log();
    let mut child = env.spawn_quiet(&["sync"], &[("CONTOSO_SECRET", SECRET)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while delta_calls(&mock).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert_eq!(cursor(&env), link, "a killed run never advances the cursor");

    mock.state().latency = Duration::ZERO;
    assert_ok(&sync(&env, &[]));
    assert_eq!(
        active(&env),
        vec![
            ("u1".into(), true),
            ("u2".into(), false),
            ("u3".into(), true),
            ("u5".into(), true)
        ]
    );
    assert_eq!(
        column(&env, "u1", "department").as_deref(),
        Some("Research")
    );
}

#[test]
fn certificate_credential_signs_a_ps256_assertion_the_login_accepts() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use sha2::Digest;
    let mock = GraphMock::start("unused-secret");
    tenant(&mock);
    let mut rng = rand_core_rng();
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    let pair = rcgen::KeyPair::from_pem(&key_pem).expect("rcgen key");
    let cert = rcgen::CertificateParams::new(vec!["learner-sync-test".to_string()])
        .expect("params")
        .self_signed(&pair)
        .expect("cert");
    use base64::Engine as _;
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(cert.der().as_ref()));
    mock.state().cert = Some(TrustedCert {
        public_key_pem: public_pem,
        thumbprint,
    });

    let env = env_for(
        &mock,
        r#"certificate = { cert_file = "app.crt", key_file = "app.key" }"#,
        "",
    );
    env.write("app.crt", &cert.pem());
    env.write("app.key", &key_pem);
    let out = sync(&env, &[]);
    assert_ok(&out);
    assert_eq!(active(&env).len(), 3);
    assert!(mock.state().tokens_issued >= 1);

    // A certificate the app registration does not know is refused.
    mock.state().cert.as_mut().expect("cert").thumbprint = "not-this-one".into();
    let out = sync(&env, &[]);
    assert_eq!(code(&out), 3);
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("invalid_client"));
}

fn rand_core_rng() -> rsa::rand_core::OsRng {
    rsa::rand_core::OsRng
}
