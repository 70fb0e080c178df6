//! The guards across runs, through the real binary with a CSV directory and the
//! SQLite store: the 24-hour deactivation window, the mass-update guard, and a
//! directory renamed in the config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_mock;

use common::{code, stderr, stdout, Env};
use scim_mock::ScimMock;

const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

/// Users `ids` with their email at `domain` and department `Sales` (or `Legal` for `legal`).
fn csv(ids: impl IntoIterator<Item = u32>, domain: &str, legal: Option<u32>) -> String {
    let mut s = HEADER.to_string();
    for id in ids {
        let dept = if legal == Some(id) { "Legal" } else { "Sales" };
        s.push_str(&format!(
            "E{id},user{id}@x.io,user{id}@{domain},Given{id},Family{id},{dept},true\n"
        ));
    }
    s
}

fn config(env: &Env, name: &str, sync_extra: &str) {
    env.write(
        "config.toml",
        &format!(
            r#"
[sync]
state_db = "state/state.db"
{sync_extra}

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "{name}"
kind = "csv"
path = "hr.csv"
"#
        ),
    );
}

fn sync(env: &Env) -> (i32, String) {
    let out = env.run(&["sync"]);
    (code(&out), format!("{}{}", stdout(&out), stderr(&out)))
}

fn active(env: &Env, directory: &str) -> usize {
    env.learners("learners.db", directory)
        .iter()
        .filter(|r| r.active)
        .count()
}

#[test]
fn thirty_runs_each_under_the_run_limit_cannot_deactivate_more_than_a_fifth_in_a_day() {
    // The defaults: 10% per run, 20% per day.
    let env = Env::new();
    config(&env, "hr", "");
    env.write("hr.csv", &csv(1..=500, "x.io", None));
    assert_eq!(sync(&env).0, 0);

    // Each run the export loses 16 more people: 3.2% of 500, never near 10% of a run.
    let mut codes = Vec::new();
    let mut outputs = Vec::new();
    for run in 1..=30u32 {
        env.write("hr.csv", &csv(16 * run + 1..=500, "x.io", None));
        let (c, out) = sync(&env);
        codes.push(c);
        outputs.push(out);
    }
    // 6 runs deactivate 96 of the 500 active this morning; the 7th would make 112 > 100.
    assert_eq!(codes[..6], [0; 6], "{:?}", &outputs[..6]);
    assert!(codes[6..].iter().all(|c| *c == 4), "{codes:?}");
    assert!(
        outputs[6].contains(
            "16 deactivations after 96 in the last 24 h would deactivate 112 of the 500 learners active 24 h ago, more than max_deactivation_percent_per_day = 20"
        ),
        "{}",
        outputs[6]
    );
    assert_eq!(
        active(&env, "hr"),
        404,
        "no more than 96 deactivated in the day"
    );

    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("held:      384 deactivations"), "{status}");
    // The admin decides: approve releases what the window held.
    let out = env.run(&["approve", "hr"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(active(&env, "hr"), 20);
    let (c, out) = sync(&env);
    assert_eq!(c, 0, "nothing left to deactivate: {out}");
}

#[test]
fn the_day_allows_exactly_its_limit_and_counts_approved_deactivations() {
    let env = Env::new();
    config(
        &env,
        "hr",
        "max_deactivation_percent = 100\nmax_deactivation_percent_per_day = 20",
    );
    env.write("hr.csv", &csv(1..=50, "x.io", None));
    assert_eq!(sync(&env).0, 0);
    env.write("hr.csv", &csv(6..=50, "x.io", None));
    assert_eq!(sync(&env).0, 0, "5 of 50");
    env.write("hr.csv", &csv(11..=50, "x.io", None));
    assert_eq!(sync(&env).0, 0, "10 of 50 is exactly 20%");
    env.write("hr.csv", &csv(12..=50, "x.io", None));
    let (c, out) = sync(&env);
    assert_eq!(c, 4, "11 of 50 is over 20%: {out}");
    assert_eq!(active(&env, "hr"), 40);
    assert_eq!(code(&env.run(&["approve", "hr"])), 0);
    assert_eq!(active(&env, "hr"), 39);
    // The approved one counts: 12 of the 50 active 24 h ago would be over 20% too.
    env.write("hr.csv", &csv(13..=50, "x.io", None));
    let (c, out) = sync(&env);
    assert_eq!(c, 4, "{out}");
    assert!(out.contains("after 11 in the last 24 h"), "{out}");
}

#[test]
fn every_email_changing_at_once_is_held_until_approve_and_other_changes_apply() {
    let env = Env::new();
    config(&env, "hr", "");
    env.write("hr.csv", &csv(1..=20, "x.io", None));
    assert_eq!(sync(&env).0, 0);

    // A botched export: every email moved to another domain; one real department change.
    env.write("hr.csv", &csv(1..=20, "new.example", Some(7)));
    let dry = stdout(&env.run(&["sync", "--dry-run"]));
    assert!(
        dry.contains(
            "hr: hold update user1@x.io (E1)\nhr:     email: user1@x.io -> user1@new.example"
        ),
        "{dry}"
    );
    assert!(dry.contains("hr:     department: Sales -> Legal"), "{dry}");
    let (c, out) = sync(&env);
    assert_eq!(c, 4, "{out}");
    assert!(
        out.contains("email changes held: 20 of 20 learners would change email, more than max_update_percent = 50"),
        "{out}"
    );
    assert!(out.contains("learner-sync approve hr"), "{out}");
    let rows = env.learners("learners.db", "hr");
    assert!(
        rows.iter()
            .all(|r| r.email.as_deref().is_some_and(|e| e.ends_with("@x.io"))),
        "no email was overwritten: {rows:?}"
    );
    let e7 = rows.iter().find(|r| r.external_id == "E7").unwrap();
    assert_eq!(
        e7.department.as_deref(),
        Some("Legal"),
        "the department applied"
    );

    let status = stdout(&env.run(&["status"]));
    assert!(
        status.contains("held:      20 changes of email (20 of 20 learners would change email"),
        "{status}"
    );
    assert!(
        status.contains("user1@x.io (E1): user1@x.io -> user1@new.example"),
        "{status}"
    );
    let check = env.run(&["check"]);
    assert_eq!(code(&check), 0, "a hold is not a fault of the setup");
    assert!(
        stdout(&check).contains("note directory hr: 20 changes of email held; review with `learner-sync status`, release with `learner-sync approve hr`"),
        "{}",
        stdout(&check)
    );
    let out = env.run(&["history", "--json", "--directory", "hr"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let held: Vec<_> = history.iter().filter(|r| r["action"] == "held").collect();
    assert_eq!(held.len(), 20);
    assert!(held
        .iter()
        .all(|r| r["fields"] == serde_json::json!(["email"])));

    // The next run holds the same again; nothing drifts.
    assert_eq!(sync(&env).0, 4);
    assert!(active(&env, "hr") == 20);

    let out = env.run(&["approve", "hr"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("approved 20 held changes of email: applied 20, changed since 0, failed 0"),
        "{}",
        stdout(&out)
    );
    let rows = env.learners("learners.db", "hr");
    assert!(rows.iter().all(|r| r
        .email
        .as_deref()
        .is_some_and(|e| e.ends_with("@new.example"))));
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("held:      none"), "{status}");
    let (c, out) = sync(&env);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("updated 0"), "{out}");
}

#[test]
fn a_small_directory_changing_every_email_is_not_held() {
    let env = Env::new();
    config(&env, "hr", "");
    env.write("hr.csv", &csv(1..=9, "x.io", None));
    assert_eq!(sync(&env).0, 0);
    env.write("hr.csv", &csv(1..=9, "new.example", None));
    let (c, out) = sync(&env);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("updated 9"), "{out}");
}

#[test]
fn a_directory_renamed_in_the_config_holds_its_creates_until_rename_directory() {
    let env = Env::new();
    config(&env, "hr", "");
    env.write("hr.csv", &csv(1..=30, "x.io", None));
    assert_eq!(sync(&env).0, 0);

    config(&env, "people", "");
    let (c, out) = sync(&env);
    assert_eq!(c, 4, "{out}");
    assert!(out.contains("held 30"), "{out}");
    assert!(
        out.contains(
            "30 of its 30 users are learners of `hr`, a directory no longer in the config"
        ),
        "{out}"
    );
    assert!(
        out.contains("run `learner-sync rename-directory hr people`"),
        "{out}"
    );
    assert!(env.learners("learners.db", "people").is_empty());
    assert_eq!(active(&env, "hr"), 30, "the old learners are untouched");
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("held:      every create:"), "{status}");
    assert!(status.contains("hr (not in the config)"), "{status}");
    let check = stdout(&env.run(&["check"]));
    assert!(
        check.contains("note directory people: every create held: `people` has no learners yet"),
        "{check}"
    );
    assert!(
        check.contains("note state: directory `hr` is not in the config; its learners stay as they are; if it was renamed, run `learner-sync rename-directory hr NEW`"),
        "{check}"
    );

    // Refused: an unknown old name, and a new name with data.
    let out = env.run(&["rename-directory", "nobody", "people"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown directory `nobody`"),
        "{}",
        stderr(&out)
    );

    let out = env.run(&["rename-directory", "hr", "people"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("renamed directory `hr` to `people`: 30 learners in the store"),
        "{}",
        stdout(&out)
    );
    assert!(env.learners("learners.db", "hr").is_empty());
    assert_eq!(active(&env, "people"), 30);

    let (c, out) = sync(&env);
    assert_eq!(c, 0, "{out}");
    assert!(
        out.contains("created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 30"),
        "{out}"
    );
    let status = stdout(&env.run(&["status"]));
    assert!(!status.contains("not in the config"), "{status}");
    assert!(status.contains("held:      none"), "{status}");
    // The history came along.
    let out = env.run(&["history", "--json", "--directory", "people"]);
    let history: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        history.iter().filter(|r| r["action"] == "created").count(),
        30
    );

    let out = env.run(&["rename-directory", "people", "people"]);
    assert_eq!(code(&out), 2);
    config(&env, "hr", "");
    assert_eq!(
        sync(&env).0,
        4,
        "renamed back in the config only: held again"
    );
    let out = env.run(&["rename-directory", "people", "hr"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(sync(&env).0, 0);
    assert_eq!(active(&env, "hr"), 30);
}

#[test]
fn a_new_directory_that_only_looks_renamed_is_created_after_approve() {
    let env = Env::new();
    config(&env, "hr", "");
    env.write("hr.csv", &csv(1..=12, "x.io", None));
    assert_eq!(sync(&env).0, 0);
    config(&env, "people", "");
    assert_eq!(sync(&env).0, 4);

    let out = env.run(&["approve", "people"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("people: approved as a new directory"),
        "{}",
        stdout(&out)
    );
    let (c, out) = sync(&env);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("created 12"), "{out}");
    assert_eq!(active(&env, "people"), 12);
    assert_eq!(active(&env, "hr"), 12, "the old directory's learners stay");
    assert_eq!(sync(&env).0, 0, "approved once, settled");
}

#[test]
fn bad_guard_settings_name_the_file_line_and_key() {
    let env = Env::new();
    config(&env, "hr", "max_update_percent = 150");
    let out = env.run(&["check"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("config.toml:4")
            && err.contains("sync.max_update_percent")
            && err.contains("between 0 and 100"),
        "{err}"
    );
    config(&env, "hr", "max_deactivation_percent_per_day = -1");
    let err = stderr(&env.run(&["check"]));
    assert!(
        err.contains("sync.max_deactivation_percent_per_day"),
        "{err}"
    );
}

#[test]
fn rename_directory_moves_a_scim_stores_learners_without_a_request_to_the_provider() {
    const TOKEN: &str = "mock-scim-token-guards-5e1d";
    let mock = ScimMock::start(TOKEN);
    let env = Env::new();
    let scim_config = |name: &str| {
        env.write(
            "config.toml",
            &format!(
                r#"
[sync]
state_db = "state/state.db"

[store]
kind = "scim"
url = "{}"
token = {{ env = "SCIM_TOKEN" }}

[[directory]]
name = "{name}"
kind = "csv"
path = "hr.csv"
"#,
                mock.base()
            ),
        );
    };
    let run = |args: &[&str]| env.run_with(args, &[("SCIM_TOKEN", TOKEN)]);
    scim_config("hr");
    env.write("hr.csv", &csv(1..=12, "x.io", None));
    assert_eq!(code(&run(&["sync"])), 0);
    assert_eq!(mock.requests("POST").len(), 12);

    scim_config("people");
    let out = run(&["sync"]);
    assert_eq!(code(&out), 4, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("rename-directory hr people"),
        "{}",
        stdout(&out)
    );
    let out = run(&["rename-directory", "hr", "people"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("unchanged 12"), "{}", stdout(&out));
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let n = if method == "POST" { 12 } else { 0 };
        assert_eq!(mock.requests(method).len(), n, "{method} requests");
    }
}
