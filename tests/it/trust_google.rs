//! Trust boundaries of the `google` source, through the real binary against the
//! mock token endpoint and Directory API (issue 14): where the credentials may go,
//! paging the API hands back, bounded listings, users without a sign-in name, and
//! a 200 that is not a listing at all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::google_mock;

use std::collections::VecDeque;

use common::{code, stderr, stdout, Env};
use google_mock::{user, GoogleMock};
use serde_json::{json, Value};

const DIR: &str = "fabrikam";

fn setup(mock: &GoogleMock) -> Env {
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    write_config(&env, mock, "");
    env
}

fn write_config(env: &Env, mock: &GoogleMock, extra: &str) {
    env.write(
        "config.toml",
        &format!(
            r#"[sync]
state_db = "state.db"
max_deactivations = 100
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "{DIR}"
kind = "google"
service_account_key = {{ file = "sa.json" }}
admin_email = "{admin}"
scope = "all"
directory_url = "{url}"
{extra}
"#,
            admin = google_mock::ADMIN,
            url = mock.url()
        ),
    );
}

fn run(env: &Env, extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut envs = vec![("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1")];
    envs.extend_from_slice(extra_env);
    let out = env.run_with(&["sync"], &envs);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("ya29.mock"), "access token leaked:\n{all}");
    assert!(!all.contains("PRIVATE KEY"), "key leaked:\n{all}");
    out
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn active(env: &Env) -> Vec<(String, bool)> {
    env.learners("learners.db", DIR)
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

fn users(n: usize) -> Vec<Value> {
    (1..=n)
        .map(|i| {
            user(
                &format!("1{i:02}"),
                &format!("u{i}@fabrikam.example"),
                "/Staff",
            )
        })
        .collect()
}

fn all_active(n: usize) -> Vec<(String, bool)> {
    (1..=n).map(|i| (format!("1{i:02}"), true)).collect()
}

/// Page tokens that would move the request if pasted into the URL instead of
/// being sent as one encoded query value.
const HOSTILE_TOKENS: &[&str] = &[
    "../../../../token",
    "/admin/directory/v1/groups/x/members",
    "x&customer=other_customer&domain=evil.example",
    "?pageToken=y",
    "#fragment",
    "%2F..%2F..%2Fetc",
    "http://127.0.0.1:1/steal",
    "//127.0.0.1:1/steal",
    "a b+c=d;e",
    "\r\nHost: 127.0.0.1:1\r\n",
    "ünïcødé-€-🙂",
    "@127.0.0.1:1",
];

#[test]
fn hostile_page_tokens_go_only_to_directory_url_as_one_encoded_query_value() {
    let mock = GoogleMock::start();
    let all = users(HOSTILE_TOKENS.len() + 1);
    mock.with(|s| {
        // Page k holds user k and hands back hostile token k; the last page ends.
        let mut from = String::new();
        for (k, u) in all.iter().enumerate() {
            let mut body = json!({"kind": "admin#directory#users", "users": [u]});
            if let Some(t) = HOSTILE_TOKENS.get(k) {
                body["nextPageToken"] = json!(t);
            }
            s.scripted.insert(from.clone(), VecDeque::from([body]));
            from = HOSTILE_TOKENS
                .get(k)
                .map(|t| t.to_string())
                .unwrap_or_default();
        }
    });
    let env = setup(&mock);
    let out = run(&env, &[]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(active(&env), all_active(all.len()));
    // Every page came to the users route of this origin (others would 404 or never
    // arrive), with the token as exactly one pageToken value and the tenant intact.
    let raw = mock.with(|s| s.raw_user_queries.clone());
    assert_eq!(raw.len(), HOSTILE_TOKENS.len() + 1, "{raw:?}");
    for (k, query) in raw.iter().enumerate() {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let values = |key: &str| -> Vec<&str> {
            pairs
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        assert_eq!(values("customer"), ["my_customer"], "{query}");
        assert!(values("domain").is_empty(), "{query}");
        let want: Vec<&str> = k
            .checked_sub(1)
            .map(|i| HOSTILE_TOKENS[i])
            .into_iter()
            .collect();
        assert_eq!(values("pageToken"), want, "{query}");
    }
    assert!(
        mock.log()
            .iter()
            .all(|l| l == "token ok" || l.starts_with("users 200")),
        "{:?}",
        mock.log()
    );
}

#[test]
fn a_key_whose_token_uri_is_another_origin_is_refused_and_that_origin_gets_nothing() {
    let mock = GoogleMock::start();
    let foreign = GoogleMock::start();
    mock.with(|s| s.users = users(2));
    let env = setup(&mock);
    // A key file edited (or handed over) to send its assertion elsewhere.
    env.write("sa.json", &foreign.key_json());
    let out = run(&env, &[]);
    assert_eq!(code(&out), 3, "{}", output(&out));
    let text = output(&out);
    assert!(text.contains("token_uri"), "{text}");
    assert!(
        text.contains("token_url"),
        "the hint names the override: {text}"
    );
    assert!(foreign.log().is_empty(), "{:?}", foreign.log());
    assert!(mock.log().is_empty(), "{:?}", mock.log());
    assert!(active(&env).is_empty());
}

#[test]
fn a_token_url_in_the_config_is_trusted_over_a_key_naming_another_origin() {
    let mock = GoogleMock::start();
    let foreign = GoogleMock::start();
    mock.with(|s| s.users = users(2));
    let env = setup(&mock);
    env.write("sa.json", &foreign.key_json());
    write_config(
        &env,
        &mock,
        &format!("token_url = \"{}/token\"", mock.url()),
    );
    let out = run(&env, &[]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(active(&env), all_active(2));
    assert!(foreign.log().is_empty(), "{:?}", foreign.log());
}

#[test]
fn a_huge_expires_in_is_a_token_like_any_other() {
    for expires_in in [json!(u64::MAX), json!(u64::MAX / 1000), json!(0)] {
        let mock = GoogleMock::start();
        mock.with(|s| {
            s.users = users(3);
            s.page_cap = 1;
            s.token_expires_in = Some(expires_in.clone());
        });
        let env = setup(&mock);
        let out = run(&env, &[]);
        assert_eq!(code(&out), 0, "expires_in {expires_in}: {}", output(&out));
        assert_eq!(active(&env), all_active(3));
    }
}

/// A store of `n` active learners from a first, clean sync.
fn synced(n: usize) -> (GoogleMock, Env) {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.users = users(n);
        s.page_cap = 2;
    });
    let env = setup(&mock);
    let out = run(&env, &[]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(active(&env), all_active(n));
    (mock, env)
}

/// The run failed, said `words`, and the store is as the first sync left it.
fn failed_untouched(env: &Env, out: &std::process::Output, n: usize, words: &str) {
    let text = output(out);
    assert_eq!(code(out), 3, "{text}");
    assert!(text.contains(words), "`{words}` missing from:\n{text}");
    assert_eq!(active(env), all_active(n));
    assert!(env
        .learners("learners.db", DIR)
        .iter()
        .all(|r| r.deactivated_at.is_none()));
}

#[test]
fn a_next_page_token_seen_before_fails_the_run_and_changes_nothing() {
    let (mock, env) = synced(6);
    // Page 2 hands back its own token once (then paging would go on normally, so a
    // reader without the check finishes and this test fails rather than hangs).
    mock.with(|s| {
        s.user_queries.clear();
        s.scripted.insert(
            "page-2".into(),
            VecDeque::from([json!({"kind": "admin#directory#users",
                "users": [user("103", "u3@fabrikam.example", "/Staff")],
                "nextPageToken": "page-2"})]),
        );
    });
    let out = run(&env, &[]);
    failed_untouched(&env, &out, 6, "nextPageToken already seen");
    assert_eq!(mock.with(|s| s.user_queries.len()), 2);
}

#[test]
fn a_listing_that_never_ends_fails_at_the_page_cap_and_changes_nothing() {
    let (mock, env) = synced(4);
    mock.with(|s| {
        s.user_queries.clear();
        s.endless_pages = 500;
    });
    let out = run(&env, &[("LEARNER_SYNC_GOOGLE_MAX_PAGES", "40")]);
    failed_untouched(&env, &out, 4, "still a nextPageToken after 40 pages");
    assert_eq!(mock.with(|s| s.user_queries.len()), 40);
}

#[test]
fn a_listing_past_the_user_cap_fails_and_changes_nothing() {
    let (mock, env) = synced(4);
    mock.with(|s| s.users = users(9));
    let out = run(&env, &[("LEARNER_SYNC_GOOGLE_MAX_USERS", "8")]);
    failed_untouched(&env, &out, 4, "more than 8 entries");
    // At the cap itself the listing is fine.
    let out = run(&env, &[("LEARNER_SYNC_GOOGLE_MAX_USERS", "9")]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(active(&env), all_active(9));
}

#[test]
fn a_user_without_a_usable_primary_email_is_refused_by_id_and_nothing_is_written() {
    let cases: &[(Option<Value>, &str)] = &[
        (None, "user id 103 has no primaryEmail"),
        (Some(Value::Null), "user id 103 has no primaryEmail"),
        (Some(json!("")), "user id 103 has an empty primaryEmail"),
        (Some(json!("   ")), "user id 103 has an empty primaryEmail"),
        (
            Some(json!(5)),
            "user id 103 has a primaryEmail that is not a string",
        ),
        (
            Some(json!(["u3@fabrikam.example"])),
            "user id 103 has a primaryEmail that is not a string",
        ),
        (
            Some(json!({"address": "u3@fabrikam.example"})),
            "user id 103 has a primaryEmail that is not a string",
        ),
    ];
    for (email, words) in cases {
        let (mock, env) = synced(4);
        mock.with(|s| {
            let u = s.users[2].as_object_mut().unwrap();
            match email {
                None => {
                    u.remove("primaryEmail");
                }
                Some(v) => {
                    u.insert("primaryEmail".into(), v.clone());
                }
            }
            // And a new user that must not be created either.
            s.users.push(user("109", "new@fabrikam.example", "/Staff"));
        });
        let out = run(&env, &[]);
        failed_untouched(&env, &out, 4, words);
    }
}

#[test]
fn a_user_without_a_usable_id_is_refused_and_nothing_is_written() {
    for id in [None, Some(json!("")), Some(json!(103))] {
        let (mock, env) = synced(4);
        mock.with(|s| {
            let u = s.users[2].as_object_mut().unwrap();
            match &id {
                None => {
                    u.remove("id");
                }
                Some(v) => {
                    u.insert("id".into(), v.clone());
                }
            }
        });
        let out = run(&env, &[]);
        failed_untouched(&env, &out, 4, "a user without a usable id");
    }
}

#[test]
fn a_200_that_is_not_a_users_listing_ends_nothing_early() {
    // `{}` from a proxy or cache reads, without `kind`, as an empty last page: the
    // users after it would be deactivated.
    for body in [
        json!({}),
        json!({"users": []}),
        json!({"kind": "admin#directory#members"}),
    ] {
        let (mock, env) = synced(6);
        mock.with(|s| {
            s.scripted.insert(
                "page-2".into(),
                std::iter::repeat_n(body.clone(), 20).collect(),
            );
        });
        let out = run(&env, &[]);
        failed_untouched(&env, &out, 6, "is not a Directory API listing");
    }
}

/// A group-scoped directory of `n` users, all members of one group, synced once.
fn group_synced(n: usize) -> (GoogleMock, Env) {
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.expected_scopes = vec![google_mock::USER_SCOPE, google_mock::MEMBER_SCOPE];
        s.users = users(n);
        s.page_cap = 2;
        s.groups.insert(
            "staff@fabrikam.example".into(),
            (1..=n)
                .map(|i| {
                    (
                        format!("1{i:02}"),
                        "USER".into(),
                        format!("u{i}@fabrikam.example"),
                    )
                })
                .collect(),
        );
    });
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    write_config(&env, &mock, "");
    let config = std::fs::read_to_string(env.config()).unwrap().replace(
        r#"scope = "all""#,
        r#"scope = { groups = ["staff@fabrikam.example"] }"#,
    );
    env.write("config.toml", &config);
    let out = run(&env, &[]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(active(&env), all_active(n));
    (mock, env)
}

#[test]
fn a_group_listing_that_loops_or_is_not_a_listing_narrows_no_scope() {
    // Without the checks, a members listing cut after page 1 puts members 3..6 out
    // of scope (deactivated), and a looping one never ends.
    let bodies = [
        (
            json!({"kind": "admin#directory#members",
                "members": [{"id": "103", "type": "USER"}], "nextPageToken": "page-2"}),
            "nextPageToken already seen",
        ),
        (json!({}), "is not a Directory API listing"),
        (
            json!({"kind": "admin#directory#members",
                "members": [{"email": "u3@fabrikam.example", "type": "USER"}]}),
            "a user member without an id",
        ),
    ];
    for (body, words) in bodies {
        let (mock, env) = group_synced(6);
        mock.with(|s| {
            s.scripted_members.insert(
                "page-2".into(),
                std::iter::repeat_n(body.clone(), 20).collect(),
            );
        });
        let out = run(&env, &[]);
        failed_untouched(&env, &out, 6, words);
    }
}
