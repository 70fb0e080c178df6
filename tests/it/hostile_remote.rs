//! Odd and hostile directory data through the remote parts, with the real binary:
//! the Entra source (mock Graph) and the Google source (mock Directory API) into the
//! SQLite store, and a CSV source into the SCIM store on the real `scim2-server`.
//! Each case pins the outcome README.md documents under "Odd data" (or the row the
//! remote path adds to it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::google_mock;
use crate::support::graph_mock;
use crate::support::scim_server;

use std::collections::BTreeMap;
use std::process::Output;

use common::{code, rows, stderr, stdout, ConfigBuilder, Env};
use graph_mock::{user as graph_user, GraphMock};
use scim_server::{ScimServer, TOKEN};
use serde_json::{json, Value};

const SECRET: &str = "graph-secret-never-printed";

fn assert_ok(out: &Output) {
    assert_eq!(
        code(out),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The counts of the run's summary line, without the timing:
/// `created 1, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2`.
fn counts(out: &Output) -> String {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.contains(": created "))
        .unwrap_or_else(|| panic!("no summary line:\n{text}\n{}", stderr(out)));
    let from = line.find("created ").unwrap();
    let to = line.rfind(" (").unwrap_or(line.len());
    line[from..to].to_string()
}

/// One column of one learner of the SQLite store (the id is bound, never spliced).
fn field(env: &Env, directory: &str, id: &str, column: &str) -> Option<String> {
    let found = rows(
        &env.path("learners.db"),
        &format!("SELECT {column} FROM learners WHERE directory = ?1 AND external_id = ?2"),
        &[directory, id],
    );
    assert_eq!(found.len(), 1, "exactly one learner {id:?}");
    found[0][0].clone()
}

/// (external_id, active) of every learner of a directory, in id order.
fn active(env: &Env, directory: &str) -> Vec<(String, bool)> {
    env.learners("learners.db", directory)
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

/// `updated_at` of every learner: unchanged means the store was not written.
fn stamps(env: &Env, directory: &str) -> Vec<Vec<Option<String>>> {
    rows(
        &env.path("learners.db"),
        "SELECT external_id, created_at, updated_at FROM learners WHERE directory = ?1 ORDER BY external_id",
        &[directory],
    )
}

/// The action log, oldest first.
fn history(env: &Env, envs: &[(&str, &str)], extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["history", "--json"];
    args.extend_from_slice(extra);
    let out = env.run_with(&args, envs);
    assert_ok(&out);
    let mut records: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("history json");
    records.reverse();
    records
}

/// (action, reason, fields) of one learner's records, oldest first.
fn actions_of(log: &[Value], id: &str) -> Vec<(String, String, Vec<String>)> {
    log.iter()
        .filter(|r| r["external_id"] == id)
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
                r["fields"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|f| f.as_str().unwrap_or_default().to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect()
}

fn act(action: &str, reason: &str, fields: &[&str]) -> (String, String, Vec<String>) {
    (
        action.to_string(),
        reason.to_string(),
        fields.iter().map(|f| f.to_string()).collect(),
    )
}

// ---------------------------------------------------------------------------------
// Entra (mock Graph) into SQLite
// ---------------------------------------------------------------------------------

const ENTRA: &str = "contoso";

fn entra_env(mock: &GraphMock, scope: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(1000, 100)
        .entra(
            ENTRA,
            &mock.base(),
            &[("client_secret", r#"{ env = "CONTOSO_SECRET" }"#)],
        )
        .dir_lines(scope)
        .write(&env);
    env
}

const ENTRA_ENV: &[(&str, &str)] = &[("CONTOSO_SECRET", SECRET)];

fn entra_sync(env: &Env, args: &[&str]) -> Output {
    let mut all = vec!["sync"];
    all.extend_from_slice(args);
    let out = env.run_with(&all, ENTRA_ENV);
    assert_ok(&out);
    out
}

#[test]
fn entra_unicode_emoji_rtl_and_10k_fields_are_stored_verbatim_and_never_re_updated() {
    let mock = GraphMock::start(SECRET);
    let long_title = "x".repeat(10_000);
    // 10,000 characters, 40,000 bytes of UTF-8: a limit in bytes would cut it.
    let long_department = "😀".repeat(10_000);
    let mut zoe = graph_user("u-zoe", "zoe@contoso.test", "Zoë", "Ångström");
    zoe["displayName"] = json!("Zoë 👩‍💻 Ångström");
    zoe["department"] = json!("Ingeniería");
    // Decomposed (NFD) e + combining diaeresis: stored as sent, not normalised.
    zoe["jobTitle"] = json!("Chloe\u{0308} Lead");
    let mut rtl = graph_user("u-rtl", "rtl@contoso.test", "محمد", "عبد الله");
    rtl["displayName"] = json!("\u{202e}محمد عبد الله");
    rtl["department"] = json!("مالية");
    rtl["jobTitle"] = json!("\u{200f}مدير\u{200f}");
    let mut long = graph_user("u-long", "long@contoso.test", "Long", "Fields");
    long["jobTitle"] = json!(long_title);
    long["department"] = json!(long_department);
    for u in [&zoe, &rtl, &long] {
        mock.add_user(u.clone());
    }
    let env = entra_env(&mock, "");
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 3, updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );

    let f = |id: &str, col: &str| field(&env, ENTRA, id, col);
    assert_eq!(
        f("u-zoe", "display_name").as_deref(),
        Some("Zoë 👩‍💻 Ångström")
    );
    assert_eq!(f("u-zoe", "given_name").as_deref(), Some("Zoë"));
    assert_eq!(f("u-zoe", "family_name").as_deref(), Some("Ångström"));
    assert_eq!(f("u-zoe", "department").as_deref(), Some("Ingeniería"));
    assert_eq!(
        f("u-zoe", "job_title").as_deref(),
        Some("Chloe\u{0308} Lead")
    );
    assert_eq!(
        f("u-rtl", "display_name").as_deref(),
        Some("\u{202e}محمد عبد الله")
    );
    assert_eq!(f("u-rtl", "family_name").as_deref(), Some("عبد الله"));
    assert_eq!(f("u-rtl", "department").as_deref(), Some("مالية"));
    // The right-to-left marks at both ends are not white space: they stay.
    assert_eq!(
        f("u-rtl", "job_title").as_deref(),
        Some("\u{200f}مدير\u{200f}")
    );
    assert_eq!(f("u-long", "job_title"), Some(long_title.clone()));
    assert_eq!(f("u-long", "department"), Some(long_department.clone()));
    let before = stamps(&env, ENTRA);

    // The same users again, as a full re-send in a delta round and then as a fresh
    // round: nothing is re-encoded, nothing counts as a change, nothing is written.
    for u in [&zoe, &rtl, &long] {
        mock.add_user(u.clone());
    }
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 3"
    );
    let out = entra_sync(&env, &["--full"]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 3"
    );
    assert_eq!(stamps(&env, ENTRA), before, "no learner was written again");
    let log = history(&env, ENTRA_ENV, &[]);
    assert_eq!(log.len(), 3, "three creates and nothing else: {log:?}");
}

#[test]
fn entra_control_characters_are_kept_and_unicode_white_space_at_the_ends_is_trimmed() {
    let mock = GraphMock::start(SECRET);
    let mut u = graph_user("u1", "ctl@contoso.test", "Tab\there", "New\nLine");
    u["displayName"] = json!("Nul\u{0}Byte\u{7f}Del");
    // A byte-order mark is not white space; a no-break and an em space are.
    u["department"] = json!("\u{feff}Bom");
    u["jobTitle"] = json!("\u{00a0}nbsp\u{2003}");
    mock.add_user(u);
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    let f = |col: &str| field(&env, ENTRA, "u1", col);
    assert_eq!(f("given_name").as_deref(), Some("Tab\there"));
    assert_eq!(f("family_name").as_deref(), Some("New\nLine"));
    assert_eq!(f("display_name").as_deref(), Some("Nul\u{0}Byte\u{7f}Del"));
    assert_eq!(f("department").as_deref(), Some("\u{feff}Bom"));
    assert_eq!(f("job_title").as_deref(), Some("nbsp"));
    let before = stamps(&env, ENTRA);
    let out = entra_sync(&env, &["--full"]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(stamps(&env, ENTRA), before);
}

#[test]
fn entra_delta_null_clears_a_property_and_an_omitted_one_is_kept() {
    let mock = GraphMock::start(SECRET);
    let mut ada = graph_user("u1", "ada@contoso.test", "Ada", "Lovelace");
    ada["mail"] = json!("ada.mail@contoso.test");
    ada["employeeId"] = json!("E-1");
    mock.add_user(ada);
    // Never-set properties: one explicitly null, the other omitted from the object.
    let mut bob = graph_user("u2", "bob@contoso.test", "Bob", "Builder");
    bob["department"] = json!(null);
    bob.as_object_mut().unwrap().remove("jobTitle");
    bob.as_object_mut().unwrap().remove("surname");
    mock.add_user(bob);
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    let f = |id: &str, col: &str| field(&env, ENTRA, id, col);
    assert_eq!(f("u2", "department"), None, "null in a full round: NULL");
    assert_eq!(f("u2", "job_title"), None, "omitted in a full round: NULL");
    assert_eq!(f("u2", "family_name"), None);

    // A partial delta item: department null (cleared), a new displayName, and
    // jobTitle, employeeId, mail and the names omitted (unchanged).
    mock.update("u1", json!({"department": null, "displayName": "Ada L."}));
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(f("u1", "department"), None, "null clears");
    assert_eq!(f("u1", "display_name").as_deref(), Some("Ada L."));
    assert_eq!(
        f("u1", "job_title").as_deref(),
        Some("Rep"),
        "omitted keeps"
    );
    assert_eq!(
        f("u1", "employee_id").as_deref(),
        Some("E-1"),
        "omitted keeps"
    );
    assert_eq!(
        f("u1", "given_name").as_deref(),
        Some("Ada"),
        "omitted keeps"
    );
    assert_eq!(
        f("u1", "email").as_deref(),
        Some("ada.mail@contoso.test"),
        "omitted keeps"
    );

    // mail null: the email falls back to the UPN (a learner keeps an address).
    // jobTitle "" and employeeId "   ": blank is the same as null.
    mock.update(
        "u1",
        json!({"mail": null, "jobTitle": "", "employeeId": "   "}),
    );
    entra_sync(&env, &[]);
    assert_eq!(f("u1", "email").as_deref(), Some("ada@contoso.test"));
    assert_eq!(f("u1", "job_title"), None);
    assert_eq!(f("u1", "employee_id"), None);

    // null again on what is already null, and omitted everything else: no change.
    mock.update("u1", json!({"department": null, "jobTitle": null}));
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    // A fresh round reads what the merges built: the merge lost nothing, added nothing.
    let before = stamps(&env, ENTRA);
    let out = entra_sync(&env, &["--full"]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    assert_eq!(stamps(&env, ENTRA), before);

    let log = history(&env, ENTRA_ENV, &["--user", "u1"]);
    assert_eq!(
        actions_of(&log, "u1"),
        [
            act("created", "new in directory", &[]),
            act(
                "updated",
                "changed: display_name, department",
                &["display_name", "department"]
            ),
            act(
                "updated",
                "changed: email, job_title, employee_id",
                &["email", "job_title", "employee_id"]
            ),
        ]
    );
}

#[test]
fn entra_two_users_with_one_mail_are_two_learners_and_each_is_updated_alone() {
    let mock = GraphMock::start(SECRET);
    for (id, upn) in [("u1", "ann@contoso.test"), ("u2", "ann.b@contoso.test")] {
        let mut u = graph_user(id, upn, "Ann", id);
        u["mail"] = json!("shared@contoso.test");
        mock.add_user(u);
    }
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    let rows = env.learners("learners.db", ENTRA);
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.email.as_deref() == Some("shared@contoso.test") && r.active));

    mock.update("u2", json!({"department": "Legal"}));
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(
        field(&env, ENTRA, "u2", "department").as_deref(),
        Some("Legal")
    );
    assert_eq!(
        field(&env, ENTRA, "u1", "department").as_deref(),
        Some("Sales")
    );
    // Identity is the id: removing one of them deactivates that one only.
    mock.remove("u1", "deleted");
    entra_sync(&env, &[]);
    assert_eq!(
        active(&env, ENTRA),
        [("u1".to_string(), false), ("u2".to_string(), true)]
    );
}

#[test]
fn entra_case_only_mail_change_is_no_update_and_a_case_only_upn_change_is_one() {
    let mock = GraphMock::start(SECRET);
    let mut ada = graph_user("u1", "ada@contoso.test", "Ada", "Lovelace");
    ada["mail"] = json!("Ada.Lovelace@Contoso.test");
    mock.add_user(ada);
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    let before = stamps(&env, ENTRA);

    mock.update("u1", json!({"mail": "ada.lovelace@contoso.test"}));
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    let out = entra_sync(&env, &["--full"]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(
        field(&env, ENTRA, "u1", "email").as_deref(),
        Some("Ada.Lovelace@Contoso.test"),
        "the stored value stays"
    );
    assert_eq!(stamps(&env, ENTRA), before);

    // The sign-in name is not an email column: its new spelling is one update.
    mock.update("u1", json!({"userPrincipalName": "Ada@Contoso.test"}));
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    assert_eq!(
        field(&env, ENTRA, "u1", "user_name").as_deref(),
        Some("Ada@Contoso.test")
    );
    let out = entra_sync(&env, &["--full"]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(env.learners("learners.db", ENTRA).len(), 1, "same learner");
    let log = history(&env, ENTRA_ENV, &[]);
    assert_eq!(
        actions_of(&log, "u1"),
        [
            act("created", "new in directory", &[]),
            act("updated", "changed: user_name", &["user_name"]),
        ]
    );
}

/// Ids a hostile or careless directory could hand us, each a valid JSON string.
const ODD_IDS: [&str; 7] = [
    "'; DROP TABLE learners; --",
    "Robert'); DELETE FROM actions; --",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "a\"b c/d?e#f&g=h",
    "100%_match",
    "null",
];

#[test]
fn entra_ids_that_look_like_sql_or_paths_are_just_ids_in_scope_and_store() {
    let mock = GraphMock::start(SECRET);
    for (i, id) in ODD_IDS.iter().enumerate() {
        mock.add_user(graph_user(id, &format!("odd{i}@contoso.test"), "Odd", "Id"));
    }
    mock.add_user(graph_user("plain", "plain@contoso.test", "Plain", "Id"));
    // The manager is the SQL-looking id: resolved like any other.
    mock.set_manager("plain", ODD_IDS[0]);
    let mut members: Vec<String> = ODD_IDS.iter().map(|s| s.to_string()).collect();
    members.push("plain".into());
    mock.state().groups.insert("g1".into(), members.clone());
    let env = entra_env(&mock, r#"scope = { groups = ["g1"] }"#);
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 8, updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    let mut want: Vec<String> = members.clone();
    want.sort();
    let ids: Vec<String> = env
        .learners("learners.db", ENTRA)
        .into_iter()
        .map(|r| r.external_id)
        .collect();
    assert_eq!(ids, want, "every id stored verbatim");
    assert_eq!(
        field(&env, ENTRA, "plain", "manager_email").as_deref(),
        Some("odd0@contoso.test")
    );
    assert!(!env.path("etc").exists(), "no id became a path");

    // A rerun is quiet; then the path-looking id leaves the group: only it goes.
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 8"
    );
    members.retain(|m| m != "../../etc/passwd");
    mock.state().groups.insert("g1".into(), members);
    entra_sync(&env, &[]);
    let inactive: Vec<String> = active(&env, ENTRA)
        .into_iter()
        .filter(|(_, a)| !a)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(inactive, ["../../etc/passwd"]);
    // The state DB survived every id: its log has 8 creates and 1 deactivation.
    let log = history(&env, ENTRA_ENV, &[]);
    assert_eq!(log.len(), 9, "{log:?}");
    assert_eq!(
        actions_of(&log, "../../etc/passwd"),
        [
            act("created", "new in directory", &[]),
            act("deactivated", "out of scope", &[]),
        ]
    );
}

#[test]
fn entra_history_user_filter_takes_percent_and_underscore_literally() {
    let mock = GraphMock::start(SECRET);
    for id in ["50%off", "50-and-off", "a_b", "acb"] {
        mock.add_user(graph_user(id, &format!("{id}@contoso.test"), "X", "Y"));
    }
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    for (needle, want) in [("50%off", "50%off"), ("a_b", "a_b")] {
        let found = history(&env, ENTRA_ENV, &["--user", needle]);
        let found: Vec<&str> = found
            .iter()
            .map(|r| r["external_id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(found, [want], "history --user {needle:?}");
    }
}

#[test]
fn entra_history_finds_a_user_by_a_non_ascii_name_in_any_case() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(graph_user("u1", "Åsa.Öberg@contoso.test", "Åsa", "Öberg"));
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    // An admin types the name as the platform shows it, or in lower case.
    for needle in ["Åsa.Öberg", "åsa.öberg", "ÅSA"] {
        let log = history(&env, ENTRA_ENV, &["--user", needle]);
        assert_eq!(log.len(), 1, "history --user {needle:?}: {log:?}");
    }
}

#[test]
fn entra_user_flapping_in_and_out_of_group_scope_toggles_the_same_row() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(graph_user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(graph_user("u2", "bob@contoso.test", "Bob", "Builder"));
    let both = vec!["u1".to_string(), "u2".to_string()];
    mock.state().groups.insert("g1".into(), both.clone());
    let env = entra_env(&mock, r#"scope = { groups = ["g1"] }"#);
    entra_sync(&env, &[]);
    let created_at = field(&env, ENTRA, "u2", "created_at");
    let expected = [
        (vec!["u1".to_string()], "deactivated 1, reactivated 0"),
        (both.clone(), "deactivated 0, reactivated 1"),
        (vec!["u1".to_string()], "deactivated 1, reactivated 0"),
        (both, "deactivated 0, reactivated 1"),
    ];
    for (members, change) in expected {
        let inside = members.contains(&"u2".to_string());
        mock.state().groups.insert("g1".into(), members);
        let out = entra_sync(&env, &[]);
        assert!(counts(&out).contains(change), "{}", counts(&out));
        assert!(counts(&out).starts_with("created 0, updated 0,"));
        assert_eq!(
            active(&env, ENTRA),
            [("u1".to_string(), true), ("u2".to_string(), inside)]
        );
    }
    assert_eq!(env.learners("learners.db", ENTRA).len(), 2, "no new row");
    assert_eq!(field(&env, ENTRA, "u2", "created_at"), created_at);
    assert_eq!(field(&env, ENTRA, "u2", "deactivated_at"), None);
    let log = history(&env, ENTRA_ENV, &[]);
    let out = act("deactivated", "out of scope", &[]);
    let back = act("reactivated", "active in directory again", &[]);
    assert_eq!(
        actions_of(&log, "u2"),
        [
            act("created", "new in directory", &[]),
            out.clone(),
            back.clone(),
            out,
            back
        ]
    );
    assert_eq!(
        actions_of(&log, "u1").len(),
        1,
        "u1 was never touched again"
    );
}

#[test]
fn entra_the_same_user_twice_in_one_full_listing_is_one_learner_and_the_later_item_wins() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(graph_user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(graph_user("u2", "bob@contoso.test", "Bob", "Builder"));
    // Later in the same round: Ada again with a new title (a full item), and Bob
    // again as a partial item (only his department).
    let mut later = graph_user("u1", "ada@contoso.test", "Ada", "Lovelace");
    later["jobTitle"] = json!("Countess");
    mock.state().first_round_extra = vec![later, json!({"id": "u2", "department": "Legal"})];
    let env = entra_env(&mock, "");
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 2, updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    assert_eq!(env.learners("learners.db", ENTRA).len(), 2);
    assert_eq!(
        field(&env, ENTRA, "u1", "job_title").as_deref(),
        Some("Countess")
    );
    assert_eq!(
        field(&env, ENTRA, "u2", "department").as_deref(),
        Some("Legal")
    );
    assert_eq!(
        field(&env, ENTRA, "u2", "given_name").as_deref(),
        Some("Bob"),
        "a partial duplicate merges into the first item"
    );
    // Every fresh round carries the same duplicates: the result does not flap.
    let before = stamps(&env, ENTRA);
    let out = entra_sync(&env, &["--full"]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    assert_eq!(stamps(&env, ENTRA), before);

    // In a delta round too: two items for one user, the later wins.
    mock.update("u1", json!({"department": "Ops"}));
    mock.update("u1", json!({"department": "Research"}));
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(
        field(&env, ENTRA, "u1", "department").as_deref(),
        Some("Research")
    );
}

#[test]
fn entra_a_user_removed_and_restored_within_one_delta_round_stays_active() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(graph_user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(graph_user("u2", "bob@contoso.test", "Bob", "Builder"));
    let env = entra_env(&mock, "");
    entra_sync(&env, &[]);
    let before = stamps(&env, ENTRA);
    // Out and back in between two runs: both items come in one round, the later wins.
    mock.remove("u2", "changed");
    mock.restore("u2");
    let out = entra_sync(&env, &[]);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    assert_eq!(
        active(&env, ENTRA),
        [("u1".to_string(), true), ("u2".to_string(), true)]
    );
    assert_eq!(stamps(&env, ENTRA), before);
    assert_eq!(
        history(&env, ENTRA_ENV, &[]).len(),
        2,
        "only the two creates"
    );
}

// ---------------------------------------------------------------------------------
// Google (mock Directory API) into SQLite
// ---------------------------------------------------------------------------------

const GOOGLE: &str = "fabrikam";

fn google_env(mock: &google_mock::GoogleMock, scope: &str) -> Env {
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    ConfigBuilder::new()
        .guards(1000, 100)
        .google(GOOGLE, &mock.url(), "sa.json", google_mock::ADMIN)
        .dir("scope", scope)
        .write(&env);
    env
}

const GOOGLE_ENV: &[(&str, &str)] = &[("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1")];

fn google_sync(env: &Env) -> Output {
    let out = env.run_with(&["sync"], GOOGLE_ENV);
    assert_ok(&out);
    out
}

#[test]
fn google_unicode_long_and_missing_nested_fields_are_stored_as_given_and_stable() {
    let mock = google_mock::GoogleMock::start();
    let long = "ß".repeat(10_000);
    let mut zoe = google_mock::user("201", "zoe@fabrikam.example", "/Staff");
    zoe["name"] =
        json!({"givenName": "Zoë 👩‍💻", "familyName": "Ångström", "fullName": "Zoë 👩‍💻 Ångström"});
    let mut rtl = google_mock::user("202", "rtl@fabrikam.example", "/Staff");
    rtl["name"] =
        json!({"givenName": "محمد", "familyName": "عبد الله", "fullName": "\u{202e}محمد عبد الله"});
    rtl["organizations"] = json!([{"department": "مالية", "title": long, "primary": true}]);
    // No `name` at all, and a `name` with only a given name.
    let mut nameless = google_mock::user("203", "nameless@fabrikam.example", "/Staff");
    nameless.as_object_mut().unwrap().remove("name");
    let mut half = google_mock::user("204", "half@fabrikam.example", "/Staff");
    half["name"] = json!({"givenName": "Half"});
    // No `organizations`, no `externalIds`, no `relations`; and an empty list.
    let mut bare = google_mock::user("205", "bare@fabrikam.example", "/Staff");
    for key in ["organizations", "externalIds", "relations"] {
        bare.as_object_mut().unwrap().remove(key);
    }
    let mut empty = google_mock::user("206", "empty@fabrikam.example", "/Staff");
    empty["organizations"] = json!([]);
    mock.with(|s| s.users = vec![zoe, rtl, nameless, half, bare, empty]);
    let env = google_env(&mock, r#""all""#);
    let out = google_sync(&env);
    assert_eq!(
        counts(&out),
        "created 6, updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    let f = |id: &str, col: &str| field(&env, GOOGLE, id, col);
    assert_eq!(f("201", "display_name").as_deref(), Some("Zoë 👩‍💻 Ångström"));
    assert_eq!(f("201", "given_name").as_deref(), Some("Zoë 👩‍💻"));
    assert_eq!(
        f("202", "display_name").as_deref(),
        Some("\u{202e}محمد عبد الله")
    );
    assert_eq!(f("202", "department").as_deref(), Some("مالية"));
    assert_eq!(f("202", "job_title"), Some(long));
    for col in ["given_name", "family_name", "display_name"] {
        assert_eq!(f("203", col), None, "no name: {col} NULL");
    }
    assert_eq!(
        f("203", "user_name").as_deref(),
        Some("nameless@fabrikam.example")
    );
    assert_eq!(f("204", "given_name").as_deref(), Some("Half"));
    assert_eq!(f("204", "family_name"), None);
    for col in ["department", "job_title", "employee_id", "manager_email"] {
        assert_eq!(f("205", col), None, "no organizations etc.: {col} NULL");
    }
    assert_eq!(f("206", "department"), None);
    assert_eq!(f("206", "employee_id").as_deref(), Some("E-206"));

    let before = stamps(&env, GOOGLE);
    let out = google_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 6"
    );
    assert_eq!(stamps(&env, GOOGLE), before);
}

#[test]
fn google_nested_fields_sent_as_null_are_read_like_missing_ones() {
    let mock = google_mock::GoogleMock::start();
    let plain = google_mock::user("251", "plain@fabrikam.example", "/Staff");
    // api-notes: where the docs leave it open, tolerate both behaviours. A null
    // list must not make the whole listing unreadable.
    let mut nulls = google_mock::user("252", "nulls@fabrikam.example", "/Staff");
    for key in ["name", "organizations", "externalIds", "relations"] {
        nulls[key] = Value::Null;
    }
    mock.with(|s| s.users = vec![plain, nulls]);
    let env = google_env(&mock, r#""all""#);
    let out = env.run_with(&["sync"], GOOGLE_ENV);
    assert_ok(&out);
    assert_eq!(
        counts(&out),
        "created 2, updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    for col in [
        "given_name",
        "display_name",
        "department",
        "job_title",
        "employee_id",
        "manager_email",
    ] {
        assert_eq!(field(&env, GOOGLE, "252", col), None, "{col}");
    }
}

#[test]
fn google_the_same_user_on_two_pages_is_one_learner_and_the_later_page_wins() {
    let mock = google_mock::GoogleMock::start();
    let a = google_mock::user("301", "a@fabrikam.example", "/Staff");
    let b = google_mock::user("302", "b@fabrikam.example", "/Staff");
    let mut a_later = a.clone();
    a_later["organizations"] =
        json!([{"department": "Legal", "title": "Counsel", "primary": true}]);
    // Two users a page: `a` on page 1, again (changed) on page 2.
    mock.with(|s| {
        s.page_cap = 2;
        s.users = vec![a, b, a_later];
    });
    let env = google_env(&mock, r#""all""#);
    let out = google_sync(&env);
    assert_eq!(
        counts(&out),
        "created 2, updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    assert!(mock.with(|s| s.user_queries.len()) >= 2, "two pages read");
    assert_eq!(env.learners("learners.db", GOOGLE).len(), 2);
    assert_eq!(
        field(&env, GOOGLE, "301", "department").as_deref(),
        Some("Legal")
    );
    assert_eq!(
        field(&env, GOOGLE, "301", "job_title").as_deref(),
        Some("Counsel")
    );
    let before = stamps(&env, GOOGLE);
    let out = google_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    assert_eq!(stamps(&env, GOOGLE), before, "the duplicate does not flap");
}

#[test]
fn google_a_user_moved_between_pages_is_scoped_by_the_later_page_like_its_values() {
    let mock = google_mock::GoogleMock::start();
    let stays = google_mock::user("401", "stays@fabrikam.example", "/Staff");
    let mover = google_mock::user("402", "mover@fabrikam.example", "/Staff");
    let other = google_mock::user("403", "other@fabrikam.example", "/Staff");
    mock.with(|s| {
        s.page_cap = 2;
        s.users = vec![stays.clone(), mover.clone(), other.clone()];
    });
    let env = google_env(&mock, r#"{ org_units = ["/Staff"] }"#);
    google_sync(&env);
    // The mover left /Staff while the listing was paged: page 1 still shows the old
    // OU, page 2 the new one. The later page wins for its values: for its scope too.
    let mut moved = mover.clone();
    moved["orgUnitPath"] = json!("/Alumni");
    moved["organizations"] = json!([{"department": "Alumni", "primary": true}]);
    mock.with(|s| s.users = vec![stays, mover, other, moved]);
    let out = google_sync(&env);
    assert_eq!(
        field(&env, GOOGLE, "402", "department").as_deref(),
        Some("Alumni"),
        "values from the later page"
    );
    assert_eq!(
        active(&env, GOOGLE),
        [
            ("401".to_string(), true),
            ("402".to_string(), false),
            ("403".to_string(), true)
        ],
        "scope from the later page too: {}",
        counts(&out)
    );
}

#[test]
fn google_user_flapping_in_and_out_of_an_org_unit_toggles_the_same_row() {
    let mock = google_mock::GoogleMock::start();
    let at = |ou: &str| {
        vec![
            google_mock::user("501", "stay@fabrikam.example", "/Staff"),
            google_mock::user("502", "flap@fabrikam.example", ou),
        ]
    };
    mock.with(|s| s.users = at("/Staff"));
    let env = google_env(&mock, r#"{ org_units = ["/Staff"] }"#);
    google_sync(&env);
    // Out, back into a sub-unit, out, back: four runs.
    for (ou, inside) in [
        ("/Contractors", false),
        ("/Staff/Sales", true),
        ("/StaffAlumni", false),
        ("/Staff", true),
    ] {
        mock.with(|s| s.users = at(ou));
        let out = google_sync(&env);
        let want = if inside {
            "created 0, updated 0, deactivated 0, reactivated 1, held 0, unchanged 1"
        } else {
            "created 0, updated 0, deactivated 1, reactivated 0, held 0, unchanged 1"
        };
        assert_eq!(counts(&out), want, "moved to {ou}");
        assert_eq!(
            active(&env, GOOGLE),
            [("501".to_string(), true), ("502".to_string(), inside)]
        );
    }
    assert_eq!(env.learners("learners.db", GOOGLE).len(), 2);
    let log = history(&env, GOOGLE_ENV, &[]);
    let out = act("deactivated", "out of scope", &[]);
    let back = act("reactivated", "active in directory again", &[]);
    assert_eq!(
        actions_of(&log, "502"),
        [
            act("created", "new in directory", &[]),
            out.clone(),
            back.clone(),
            out,
            back
        ]
    );
}

#[test]
fn google_case_only_primary_email_change_is_one_update_of_the_same_learner() {
    let mock = google_mock::GoogleMock::start();
    let spelled = |email: &str| {
        let mut u = google_mock::user("601", email, "/");
        u["name"] =
            json!({"givenName": "Ada", "familyName": "Lovelace", "fullName": "Ada Lovelace"});
        u
    };
    mock.with(|s| s.users = vec![spelled("Ada.Lovelace@Fabrikam.example")]);
    let env = google_env(&mock, r#""all""#);
    google_sync(&env);
    mock.with(|s| s.users = vec![spelled("ada.lovelace@fabrikam.example")]);
    let out = google_sync(&env);
    // primaryEmail is the sign-in name: its new spelling is stored (one update),
    // and the email, the same address, is not a change of its own.
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 0"
    );
    assert_eq!(
        field(&env, GOOGLE, "601", "user_name").as_deref(),
        Some("ada.lovelace@fabrikam.example")
    );
    // The row is written whole: the email (the same address) takes the new spelling
    // with it, so user_name and email agree.
    assert_eq!(
        field(&env, GOOGLE, "601", "email").as_deref(),
        Some("ada.lovelace@fabrikam.example")
    );
    let out = google_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    assert_eq!(env.learners("learners.db", GOOGLE).len(), 1);
    let log = history(&env, GOOGLE_ENV, &[]);
    assert_eq!(
        actions_of(&log, "601"),
        [
            act("created", "new in directory", &[]),
            act("updated", "changed: user_name", &["user_name"]),
        ]
    );
}

// ---------------------------------------------------------------------------------
// CSV into the SCIM store on the real scim2-server
// ---------------------------------------------------------------------------------

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const SCIM_ENV: &[(&str, &str)] = &[("SCIM_TOKEN", TOKEN)];

fn scim_env(server: &ScimServer) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(1000, 100)
        .scim(&server.base, r#"{ env = "SCIM_TOKEN" }"#)
        // scim2-server is strict RFC 7644 (scim_interop.rs says why).
        .store("dialect", r#""rfc""#)
        .csv("hr", "hr.csv")
        .write(&env);
    env
}

fn scim_sync(env: &Env) -> Output {
    let out = env.run_with(&["sync"], SCIM_ENV);
    assert_ok(&out);
    out
}

/// externalId -> the user on the server; fails on a duplicate externalId.
fn by_external_id(server: &ScimServer) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for u in server.users() {
        let ext = u["externalId"].as_str().unwrap_or_default().to_string();
        assert!(
            out.insert(ext.clone(), u).is_none(),
            "duplicate externalId {ext:?} on the server"
        );
    }
    out
}

/// externalId -> (SCIM id, meta.version): unchanged means nothing was written.
fn versions(server: &ScimServer) -> BTreeMap<String, (Value, Value)> {
    by_external_id(server)
        .into_iter()
        .map(|(k, u)| (k, (u["id"].clone(), u["meta"]["version"].clone())))
        .collect()
}

/// A CSV field, RFC 4180 quoted.
fn q(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// Ids that reach SCIM filters (`externalId eq "..."`) and JSON bodies.
const SCIM_ODD_IDS: [&str; 10] = [
    "'; DROP TABLE users; --",
    "../../etc/passwd",
    "a\"b",
    "back\\slash\\",
    "with space/and slash",
    // Unescaped, this makes `externalId eq "x" or userName pr and externalId pr or
    // externalId eq "y"`: a valid filter that matches every user with an externalId.
    "x\" or userName pr and externalId pr or externalId eq \"y",
    "c) or (d",
    "50%_[x]",
    "{\"$ne\": null}",
    "ünïcødé-👩‍💻",
];

#[test]
fn scim_odd_ids_unicode_and_10k_fields_land_verbatim_and_a_rerun_writes_nothing() {
    let server = ScimServer::start();
    // Someone already on the provider: a filter broken by an odd id (for example
    // `externalId eq "x" or userName pr or ""`) would match and adopt her.
    let (status, victim) = server.request(
        "POST",
        "/Users",
        Some(
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "victim@x.io", "externalId": "V1", "displayName": "Victim"}),
        ),
    );
    assert_eq!(status, 201, "{victim}");
    // Some odd ids are already on the provider under another userName: only a
    // correctly escaped `externalId eq "..."` finds them, and they must be adopted.
    let mut pre = BTreeMap::new();
    for i in [2, 3, 4, 5, 9] {
        let (status, created) = server.request(
            "POST",
            "/Users",
            Some(
                &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("stale{i}@x.io"), "externalId": SCIM_ODD_IDS[i]}),
            ),
        );
        assert_eq!(status, 201, "{created}");
        pre.insert(SCIM_ODD_IDS[i], created["id"].clone());
    }
    let env = scim_env(&server);
    let long_title = "x".repeat(10_000);
    let long_name = "ü".repeat(10_000);
    let mut csv = String::from(
        "external_id,user_name,email,given_name,family_name,display_name,department,job_title\n",
    );
    for (i, id) in SCIM_ODD_IDS.iter().enumerate() {
        csv.push_str(&format!("{},odd{i}@x.io,odd{i}@x.io,Odd,Id,,,\n", q(id)));
    }
    csv.push_str("zoe,zoe@x.io,zoe@x.io,Zoë 👩‍💻,Ångström,Zoë 👩‍💻 Ångström,Ingeniería,\n");
    csv.push_str(&format!(
        "rtl,rtl@x.io,rtl@x.io,محمد,عبد الله,{},مالية,\u{200f}مدير\u{200f}\n",
        q("\u{202e}محمد عبد الله")
    ));
    csv.push_str(&format!(
        "long,long@x.io,long@x.io,Long,Fields,{long_name},,{long_title}\n"
    ));
    csv.push_str(&format!(
        "ctl,ctl@x.io,ctl@x.io,{},Ctl,,,\n",
        q("Tab\tNew\nLine\u{0}Nul")
    ));
    // A 10,000-character id (it goes into a filter in the query string) and userName.
    let long_id = "i".repeat(10_000);
    let long_user_name = format!("{}@x.io", "u".repeat(10_000));
    csv.push_str(&format!("{long_id},longid@x.io,,,,,,\n"));
    csv.push_str(&format!("longname,{long_user_name},,,,,,\n"));
    // Two learners with one email.
    csv.push_str("s1,s1@x.io,shared@x.io,Sam,One,,,\ns2,s2@x.io,shared@x.io,Sam,Two,,,\n");
    env.write("hr.csv", &csv);
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 18 (of them 5 adopted: already on the provider), updated 0, deactivated 0, reactivated 0, held 0, unchanged 0"
    );

    let users = by_external_id(&server);
    let mut want: Vec<String> = SCIM_ODD_IDS.iter().map(|s| s.to_string()).collect();
    want.extend(
        [
            "zoe", "rtl", "long", "ctl", "s1", "s2", "V1", "longname", &long_id,
        ]
        .map(String::from),
    );
    want.sort();
    assert_eq!(
        users.keys().cloned().collect::<Vec<_>>(),
        want,
        "exactly the right users, each id verbatim, nobody adopted twice"
    );
    let victim_now = &users["V1"];
    assert_eq!(victim_now["id"], victim["id"]);
    assert_eq!(
        victim_now["userName"], "victim@x.io",
        "the victim untouched"
    );
    assert_eq!(victim_now["displayName"], "Victim");
    for (i, id) in SCIM_ODD_IDS.iter().enumerate() {
        assert_eq!(users[*id]["userName"], format!("odd{i}@x.io"), "{id}");
        assert_ne!(users[*id]["id"], victim["id"], "{id} adopted the victim");
        if let Some(pre_id) = pre.get(id) {
            assert_eq!(&users[*id]["id"], pre_id, "{id} adopted by externalId");
        }
    }
    let zoe = &users["zoe"];
    assert_eq!(zoe["name"]["givenName"], "Zoë 👩‍💻");
    assert_eq!(zoe["name"]["familyName"], "Ångström");
    assert_eq!(zoe["displayName"], "Zoë 👩‍💻 Ångström");
    assert_eq!(zoe[ENTERPRISE]["department"], "Ingeniería");
    let rtl = &users["rtl"];
    assert_eq!(rtl["displayName"], "\u{202e}محمد عبد الله");
    assert_eq!(rtl["name"]["familyName"], "عبد الله");
    assert_eq!(rtl["title"], "\u{200f}مدير\u{200f}");
    assert_eq!(rtl[ENTERPRISE]["department"], "مالية");
    assert_eq!(users["long"]["title"], long_title.as_str());
    assert_eq!(users["ctl"]["name"]["givenName"], "Tab\tNew\nLine\u{0}Nul");
    assert_eq!(users[&long_id]["userName"], "longid@x.io");
    assert_eq!(users["longname"]["userName"], long_user_name.as_str());
    assert_eq!(users["long"]["displayName"], long_name.as_str());
    for id in ["s1", "s2"] {
        assert_eq!(
            users[id]["emails"],
            json!([{"value": "shared@x.io", "type": "work", "primary": true}])
        );
    }
    assert_ne!(users["s1"]["id"], users["s2"]["id"]);

    let before = versions(&server);
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 18"
    );
    assert_eq!(versions(&server), before, "nothing written again");

    // Updates and a deactivation address the right resource for an odd id too.
    let csv2 = csv
        .replace(
            "odd5@x.io,odd5@x.io,Odd,Id",
            "odd5@x.io,odd5@x.io,Renamed,Id",
        )
        .replace(
            &format!("{},odd1@x.io,odd1@x.io,Odd,Id,,,\n", q(SCIM_ODD_IDS[1])),
            "",
        );
    env.write("hr.csv", &csv2);
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 1, reactivated 0, held 0, unchanged 16"
    );
    let users = by_external_id(&server);
    assert_eq!(users[SCIM_ODD_IDS[5]]["name"]["givenName"], "Renamed");
    assert_eq!(users[SCIM_ODD_IDS[1]]["active"], false);
    assert_eq!(users["V1"]["displayName"], "Victim");
    assert_eq!(users.len(), 19);
}

#[test]
fn scim_case_only_changes_cleared_fields_and_a_shared_email() {
    let server = ScimServer::start();
    let env = scim_env(&server);
    let header = "external_id,user_name,email,given_name,department,job_title\n";
    env.write(
        "hr.csv",
        &format!(
            "{header}E1,ada@x.io,Ada@X.io,Ada,Sales,Rep\nE2,bob@x.io,Ada@X.io,Bob,Sales,Rep\n"
        ),
    );
    scim_sync(&env);
    let before = versions(&server);

    // The email's case alone: no request, the provider keeps the first spelling.
    env.write(
        "hr.csv",
        &format!(
            "{header}E1,ada@x.io,ada@x.io,Ada,Sales,Rep\nE2,bob@x.io,Ada@X.io,Bob,Sales,Rep\n"
        ),
    );
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    assert_eq!(versions(&server), before);
    assert_eq!(server.user("E1")["emails"][0]["value"], "Ada@X.io");

    // A blank value clears the attribute on the provider; the other learner with
    // the same email is left alone.
    env.write(
        "hr.csv",
        &format!("{header}E1,ada@x.io,ada@x.io,Ada,,\nE2,bob@x.io,Ada@X.io,Bob,Sales,Rep\n"),
    );
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    let e1 = server.user("E1");
    assert!(e1.get("title").is_none_or(Value::is_null), "{e1}");
    assert!(
        e1.get(ENTERPRISE)
            .and_then(|x| x.get("department"))
            .is_none_or(Value::is_null),
        "{e1}"
    );
    assert_eq!(server.user("E2")["title"], "Rep");
    assert_eq!(versions(&server)["E2"], before["E2"]);

    // The userName's case alone: one update of the same resource (SCIM userName is
    // case-insensitive, so a provider must not see it as a clash with itself).
    env.write(
        "hr.csv",
        &format!("{header}E1,Ada@X.io,ada@x.io,Ada,,\nE2,bob@x.io,Ada@X.io,Bob,Sales,Rep\n"),
    );
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 1, deactivated 0, reactivated 0, held 0, unchanged 1"
    );
    let e1 = server.user("E1");
    assert_eq!(e1["userName"], "Ada@X.io");
    assert_eq!(e1["id"], before["E1"].0);
    assert_eq!(server.users().len(), 2);
    let settled = versions(&server);
    let out = scim_sync(&env);
    assert_eq!(
        counts(&out),
        "created 0, updated 0, deactivated 0, reactivated 0, held 0, unchanged 2"
    );
    assert_eq!(versions(&server), settled);
}

#[test]
fn scim_user_flapping_in_and_out_keeps_one_resource_and_a_rerun_writes_nothing() {
    let server = ScimServer::start();
    let env = scim_env(&server);
    let with = "external_id,user_name,email\nE1,ada@x.io,ada@x.io\nE2,bob@x.io,bob@x.io\n";
    let without = "external_id,user_name,email\nE1,ada@x.io,ada@x.io\n";
    env.write("hr.csv", with);
    scim_sync(&env);
    let id = server.user("E2")["id"].clone();
    for round in 0..3 {
        env.write("hr.csv", without);
        let out = scim_sync(&env);
        assert_eq!(
            counts(&out),
            "created 0, updated 0, deactivated 1, reactivated 0, held 0, unchanged 1",
            "round {round}"
        );
        assert_eq!(server.user("E2")["active"], false);
        env.write("hr.csv", with);
        let out = scim_sync(&env);
        assert_eq!(
            counts(&out),
            "created 0, updated 0, deactivated 0, reactivated 1, held 0, unchanged 1",
            "round {round}"
        );
        let e2 = server.user("E2");
        assert_eq!(e2["active"], true);
        assert_eq!(e2["id"], id, "the same resource every time");
    }
    assert_eq!(server.users().len(), 2);
    let before = versions(&server);
    scim_sync(&env);
    assert_eq!(versions(&server), before);
    let log = history(&env, SCIM_ENV, &["--user", "E2"]);
    let actions: Vec<String> = actions_of(&log, "E2").into_iter().map(|a| a.0).collect();
    assert_eq!(
        actions,
        [
            "created",
            "deactivated",
            "reactivated",
            "deactivated",
            "reactivated",
            "deactivated",
            "reactivated"
        ]
    );
}

#[test]
fn scim_two_learners_with_one_user_name_never_share_a_resource() {
    let server = ScimServer::start();
    let env = scim_env(&server);
    // One request at a time, so the order of the creates (and of the bug) is fixed.
    let config = std::fs::read_to_string(env.config()).unwrap();
    env.write(
        "config.toml",
        &config.replace("[store]\n", "[store]\nconcurrency = 1\n"),
    );
    let header = "external_id,user_name,given_name\n";
    env.write(
        "hr.csv",
        &format!("{header}E1,dup@x.io,Ann\nE2,dup@x.io,Bea\n"),
    );
    let first = env.run_with(&["sync"], SCIM_ENV);
    // SCIM userName is unique: the provider can hold only one of them. The other
    // must be refused and reported, not linked to the first one's resource.
    let consistent = |u: &Value| {
        matches!(
            (u["externalId"].as_str(), u["name"]["givenName"].as_str()),
            (Some("E1"), Some("Ann" | "Ann2")) | (Some("E2"), Some("Bea"))
        )
    };
    let users = server.users();
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(consistent(&users[0]), "{}", users[0]);

    // A change to one learner must land on its own resource, or nowhere.
    env.write(
        "hr.csv",
        &format!("{header}E1,dup@x.io,Ann2\nE2,dup@x.io,Bea\n"),
    );
    env.run_with(&["sync"], SCIM_ENV);
    let users = server.users();
    assert_eq!(users.len(), 1);
    assert!(
        consistent(&users[0]),
        "one learner's change landed on the other's resource: {}",
        users[0]
    );
    assert_eq!(code(&first), 3, "one learner refused: {}", stdout(&first));
    assert!(counts(&first).ends_with("failed 1"), "{}", counts(&first));
    // The refused learner counts as failed, not as created too.
    assert!(
        counts(&first).starts_with("created 1,"),
        "{}",
        counts(&first)
    );
}

#[test]
fn scim_a_user_name_passed_to_a_new_learner_does_not_tie_the_two_learners_together() {
    let server = ScimServer::start();
    let env = scim_env(&server);
    let header = "external_id,user_name,given_name\n";
    env.write(
        "hr.csv",
        &format!("{header}E1,ada@x.io,Ann\nE9,other@x.io,Oz\n"),
    );
    scim_sync(&env);
    // Ann leaves; a new hire gets her sign-in name.
    env.write(
        "hr.csv",
        &format!("{header}E2,ada@x.io,Bea\nE9,other@x.io,Oz\n"),
    );
    env.run_with(&["sync"], SCIM_ENV);
    // Ann comes back under a new name: whatever happened to her old resource, her
    // return must not rewrite the new hire's.
    env.write(
        "hr.csv",
        &format!("{header}E1,ada.old@x.io,Ann\nE2,ada@x.io,Bea\nE9,other@x.io,Oz\n"),
    );
    env.run_with(&["sync"], SCIM_ENV);
    let out = env.run_with(&["sync"], SCIM_ENV);
    assert_ok(&out);
    let users = by_external_id(&server);
    let summary: Vec<(String, Value, Value, Value)> = users
        .iter()
        .map(|(k, u)| {
            (
                k.clone(),
                u["userName"].clone(),
                u["name"]["givenName"].clone(),
                u["active"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "E1".to_string(),
                json!("ada.old@x.io"),
                json!("Ann"),
                json!(true)
            ),
            (
                "E2".to_string(),
                json!("ada@x.io"),
                json!("Bea"),
                json!(true)
            ),
            (
                "E9".to_string(),
                json!("other@x.io"),
                json!("Oz"),
                json!(true)
            ),
        ]
    );
}
