//! Named stores (issue 17.1): `[store.NAME]` tables and `store = "NAME"` per directory,
//! through the real binary. Each SCIM store has its own token and mirror; one store's
//! learners never reach another; the single `[store]` stays the store named "default".

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common::{assert_ok, code, stderr, stdout, Env};
use crate::support::scim_mock::ScimMock;

const TOKEN_A: &str = "token-of-customer-a-never-printed";
const TOKEN_B: &str = "token-of-customer-b-never-printed";

fn config(a: &ScimMock, b: &ScimMock) -> String {
    format!(
        r#"[sync]
state_db = "state.db"

[store.customer-a]
kind = "scim"
url = "{}"
token = {{ env = "TOKEN_A" }}
dialect = "rfc"

[store.customer-b]
kind = "scim"
url = "{}"
token = {{ env = "TOKEN_B" }}
dialect = "rfc"
concurrency = 1

[store.default]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "a-hr"
kind = "csv"
path = "a.csv"
store = "customer-a"

[[directory]]
name = "b-hr"
kind = "csv"
path = "b.csv"
store = "customer-b"

[[directory]]
name = "own"
kind = "csv"
path = "own.csv"
"#,
        a.base(),
        b.base()
    )
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(args, &[("TOKEN_A", TOKEN_A), ("TOKEN_B", TOKEN_B)])
}

#[test]
fn each_directory_writes_to_its_own_store_with_that_stores_token_and_mirror() {
    let a = ScimMock::start(TOKEN_A);
    let b = ScimMock::start(TOKEN_B);
    let env = Env::new();
    env.write(
        "a.csv",
        "external_id,user_name\nA1,ann@a.example\nA2,al@a.example\n",
    );
    env.write("b.csv", "external_id,user_name\nB1,bo@b.example\n");
    env.write("own.csv", "external_id,user_name\nO1,oz@own.example\n");
    env.write("config.toml", &config(&a, &b));
    let out = run(&env, &["sync"]);
    assert_ok(&out);
    let names = |m: &ScimMock| -> Vec<String> {
        let mut v: Vec<String> = m
            .state()
            .users
            .values()
            .map(|u| u["userName"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&a), ["al@a.example", "ann@a.example"]);
    assert_eq!(names(&b), ["bo@b.example"]);
    let own: Vec<String> = env
        .learners("learners.db", "own")
        .into_iter()
        .map(|r| r.external_id)
        .collect();
    assert_eq!(own, ["O1"]);
    // Each provider saw only its own token.
    for (m, token) in [(&a, TOKEN_A), (&b, TOKEN_B)] {
        for r in m.requests("POST") {
            assert_eq!(r.authorization, format!("Bearer {token}"));
        }
    }
    // One mirror per SCIM store: a rerun links, never creates again.
    assert!(env.path("state.db.customer-a.scim-mirror.db").exists());
    assert!(env.path("state.db.customer-b.scim-mirror.db").exists());
    let again = run(&env, &["sync"]);
    assert_ok(&again);
    assert!(
        stdout(&again).contains("a-hr: created 0") && stdout(&again).contains("b-hr: created 0"),
        "{}",
        stdout(&again)
    );
    assert_eq!(names(&a).len(), 2);

    let status = stdout(&run(&env, &["status"]));
    assert!(status.contains("a-hr (csv, store customer-a)"), "{status}");
    assert!(status.contains("own (csv, store default)"), "{status}");
    let history: serde_json::Value =
        serde_json::from_str(&stdout(&run(&env, &["history", "--json"]))).unwrap();
    for r in history.as_array().unwrap() {
        let want = match r["directory"].as_str().unwrap() {
            "a-hr" => "customer-a",
            "b-hr" => "customer-b",
            _ => "default",
        };
        assert_eq!(r["store"], want, "{r}");
    }
    let check = stdout(&run(&env, &["check"]));
    assert!(check.contains("store customer-b (for b-hr)"), "{check}");
    let all = format!("{}{}{check}", stdout(&out), stderr(&out));
    assert!(!all.contains(TOKEN_A) && !all.contains(TOKEN_B));

    // The secrets are listed under the store that has them.
    let c = learner_sync::config::Config::load(&env.config()).unwrap();
    let labels: Vec<String> = c.secrets().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["store.customer-a.token", "store.customer-b.token"]);
}

#[test]
fn a_store_name_that_is_missing_or_mixed_is_refused_with_line_and_key() {
    let a = ScimMock::start(TOKEN_A);
    let b = ScimMock::start(TOKEN_B);
    let env = Env::new();
    let good = config(&a, &b);
    let cases = [
        (
            good.replace("store = \"customer-b\"", "store = \"customer-c\""),
            "directory[1].store",
            "no store is named `customer-c`",
        ),
        (
            good.replace("[store.default]", "[store.local]"),
            "directory[2].store",
            "none named \"default\"",
        ),
        (
            good.replace(
                "[store.customer-a]",
                "[store]\nkind = \"sqlite\"\n\n[store.customer-a]",
            ),
            "store.customer-a",
            "cannot also hold named stores",
        ),
        (
            good.replace("concurrency = 1", "concurrency = 0"),
            "store.customer-b.concurrency",
            "between 1 and 64",
        ),
    ];
    for (text, key, message) in cases {
        env.write("config.toml", &text);
        let out = run(&env, &["sync", "--dry-run"]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("config.toml:"), "{err}");
        assert!(err.contains(key), "{key}: {err}");
        assert!(err.contains(message), "{message}: {err}");
    }
}
