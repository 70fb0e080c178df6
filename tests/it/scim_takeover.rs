//! Taking over from Entra push provisioning, through the real binary: a provider built
//! for Entra (it takes only Entra's PATCH shapes) holds users as Entra's push created
//! them; the first run adopts every one by `[store] match`, creates no duplicate,
//! writes only what differs, and `sync --dry-run` shows exactly that beforehand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_mock;

use common::{code, stderr, stdout, Env};
use scim_mock::{ScimMock, ENTERPRISE};
use serde_json::{json, Value};

const TOKEN: &str = "mock-scim-token-7d1f-takeover-never-printed";
const CORE: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const HEADER: &str =
    "external_id,user_name,email,given_name,family_name,department,manager_email,active\n";

/// The directory today: Bea moved to Legal since Entra last pushed; Dan is new.
const ROWS: &str = "E1,ann@x.io,ann@x.io,Ann,Ames,Sales,,true\n\
                    E2,bea@x.io,bea@x.io,Bea,Boss,Legal,ann@x.io,true\n\
                    E3,cy@x.io,cy@x.io,Cy,Cole,Sales,ann@x.io,true\n\
                    E4,dan@x.io,dan@x.io,Dan,Dorn,Sales,,true\n";

fn setup(base: &str, store: &str) -> Env {
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
concurrency = 2
{store}

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#
        ),
    );
    env.write("hr.csv", &format!("{HEADER}{ROWS}"));
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    let out = env.run_with(args, &[("SCIM_TOKEN", TOKEN)]);
    assert_eq!(
        code(&out),
        0,
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// A user as Entra's push created it (its create body, api-notes.md), with the manager
/// its second pass set, as the provider stores it.
fn entra_made(
    external_id: &str,
    name: &str,
    given: &str,
    family: &str,
    manager: Option<&str>,
) -> Value {
    let mut ext = json!({"department": "Sales"});
    if let Some(m) = manager {
        ext["manager"] = json!({ "value": m });
    }
    json!({
        "schemas": [CORE, ENTERPRISE],
        "externalId": external_id,
        "userName": name,
        "active": true,
        "emails": [{"primary": true, "type": "work", "value": name}],
        "name": {"givenName": given, "familyName": family},
        ENTERPRISE: ext,
    })
}

/// A provider built for Entra, holding Ann, Bea and Cy as Entra made them, with
/// `externalId` from `ext` (Entra's default mapping: mailNickname).
fn provider(ext: impl Fn(&str, &str) -> String) -> (ScimMock, [String; 3]) {
    let mock = ScimMock::start(TOKEN);
    {
        let mut s = mock.state();
        s.entra_patch_only = true;
        s.no_discovery = true;
    }
    let ann = mock.add_user(entra_made(
        &ext("E1", "ann"),
        "ann@x.io",
        "Ann",
        "Ames",
        None,
    ));
    let bea = mock.add_user(entra_made(
        &ext("E2", "bea"),
        "bea@x.io",
        "Bea",
        "Boss",
        Some(&ann),
    ));
    let cy = mock.add_user(entra_made(
        &ext("E3", "cy"),
        "cy@x.io",
        "Cy",
        "Cole",
        Some(&ann),
    ));
    (mock, [ann, bea, cy])
}

fn writes(mock: &ScimMock) -> Vec<(String, String, Value)> {
    let mut out: Vec<(String, String, Value)> = mock
        .state()
        .log
        .iter()
        .filter(|l| l.method != "GET")
        .map(|l| {
            let body: Value = serde_json::from_str(&l.body).unwrap_or(Value::Null);
            (l.method.clone(), l.path.clone(), body)
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn ops(body: &Value) -> Value {
    body["Operations"].clone()
}

#[test]
fn a_population_entra_push_made_is_adopted_by_user_name_and_only_what_differs_is_written() {
    // Entra's default: externalId = mailNickname; learner-sync writes the directory's id.
    let (mock, [ann, bea, cy]) = provider(|_, nick| nick.to_string());
    let env = setup(&mock.base(), r#"match = "userName""#);

    // The dry run shows the takeover, user by user, and writes nothing.
    let out = run(&env, &["sync", "--dry-run"]);
    let said = stdout(&out);
    for line in [
        format!(
            "hr: takeover    ann@x.io (E1): adopts SCIM user {ann} (matched by userName); changes:"
        ),
        "hr:     externalId: \"ann\" -> \"E1\"".to_string(),
        format!(
            "hr: takeover    bea@x.io (E2): adopts SCIM user {bea} (matched by userName); changes:"
        ),
        "hr:     department: \"Sales\" -> \"Legal\"".to_string(),
        format!(
            "hr: takeover    cy@x.io (E3): adopts SCIM user {cy} (matched by userName); changes:"
        ),
        "hr: takeover    dan@x.io (E4): no SCIM user matched by userName; created".to_string(),
    ] {
        assert!(said.contains(&line), "missing {line:?} in:\n{said}");
    }
    // Bea's and Cy's manager (Ann) is already right: not shown, not written.
    assert!(!said.contains("manager:"), "{said}");
    assert_eq!(writes(&mock), vec![], "a dry run writes nothing");

    // The run does just that: one create (Dan), one PATCH per adopted user, and says
    // how many of its creates were adoptions.
    let out = run(&env, &["sync"]);
    assert!(
        stdout(&out)
            .contains("hr: created 4 (of them 3 adopted: already on the provider), updated 0"),
        "{}",
        stdout(&out)
    );
    let w = writes(&mock);
    let posts: Vec<_> = w.iter().filter(|(m, _, _)| m == "POST").collect();
    assert_eq!(posts.len(), 1, "{w:#?}");
    assert_eq!(posts[0].2["userName"], "dan@x.io");
    let patch = |id: &str| {
        let found: Vec<_> = w
            .iter()
            .filter(|(m, p, _)| m == "PATCH" && *p == format!("/Users/{id}"))
            .collect();
        assert_eq!(found.len(), 1, "PATCHes of {id}: {w:#?}");
        ops(&found[0].2)
    };
    assert_eq!(
        patch(&ann),
        json!([{"op": "Replace", "path": "externalId", "value": "E1"}])
    );
    assert_eq!(
        patch(&bea),
        json!([
            {"op": "Replace", "path": "externalId", "value": "E2"},
            {"op": "Replace", "path": format!("{ENTERPRISE}:department"), "value": "Legal"},
        ])
    );
    assert_eq!(
        patch(&cy),
        json!([{"op": "Replace", "path": "externalId", "value": "E3"}])
    );
    assert_eq!(w.len(), 4, "nothing else written: {w:#?}");
    assert_eq!(mock.state().users.len(), 4, "no duplicate");
    assert_eq!(mock.user("E2")[ENTERPRISE]["department"], "Legal");
    assert_eq!(
        mock.user("E2")[ENTERPRISE]["manager"],
        json!({"value": ann})
    );
    assert_eq!(mock.user("E1")["name"]["givenName"], "Ann");

    // Linked now: the next run has nothing to do.
    let before = writes(&mock).len();
    let out = run(&env, &["sync", "--dry-run"]);
    assert!(!stdout(&out).contains("takeover"), "{}", stdout(&out));
    run(&env, &["sync"]);
    assert_eq!(writes(&mock).len(), before);
}

#[test]
fn matched_by_external_id_a_user_that_already_matches_is_not_written_at_all() {
    // An Entra mapping of externalId from objectId: the directory's id, as learner-sync
    // writes it. Ann and Cy match in every value: no request touches them.
    let (mock, [ann, bea, cy]) = provider(|id, _| id.to_string());
    let env = setup(&mock.base(), r#"match = "externalId""#);
    let out = run(&env, &["sync", "--dry-run"]);
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "hr: takeover    ann@x.io (E1): adopts SCIM user {ann} (matched by externalId); nothing to change"
        )),
        "{said}"
    );
    assert!(
        said.contains("hr:     department: \"Sales\" -> \"Legal\""),
        "{said}"
    );
    assert!(!said.contains("externalId: "), "{said}");

    run(&env, &["sync"]);
    let w = writes(&mock);
    let touched: Vec<&str> = w.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        touched,
        vec![format!("/Users/{bea}").as_str(), "/Users"],
        "{w:#?}"
    );
    assert!(!touched.contains(&format!("/Users/{ann}").as_str()));
    assert!(!touched.contains(&format!("/Users/{cy}").as_str()));
    // Lookups went by the matching attribute only.
    let gets = mock.requests("GET");
    assert!(
        gets.iter()
            .filter(|g| g.path.starts_with("/Users?"))
            .all(|g| g.path.contains("filter=externalId+eq+")),
        "{gets:?}"
    );
    assert_eq!(mock.state().users.len(), 4);
}

#[test]
fn external_id_from_a_directory_attribute_keeps_entra_push_external_ids_as_they_are() {
    // Entra push wrote externalId = mailNickname; the directory gives that attribute
    // (here a CSV column), so learner-sync writes the same values and rewrites none.
    let (mock, [ann, bea, cy]) = provider(|_, nick| nick.to_string());
    let env = setup(
        &mock.base(),
        "match = \"externalId\"\nexternal_id = \"mail_nickname\"",
    );
    let rows: String = ROWS
        .lines()
        .map(|l| {
            let nick = l.split(',').nth(1).unwrap().split('@').next().unwrap();
            format!("{l},{nick}\n")
        })
        .collect();
    env.write(
        "hr.csv",
        &format!("{},mail_nickname\n{rows}", HEADER.trim_end()),
    );

    let out = run(&env, &["sync", "--dry-run"]);
    let said = stdout(&out);
    assert!(
        said.contains(&format!(
            "hr: takeover    ann@x.io (E1): adopts SCIM user {ann} (matched by externalId)"
        )),
        "{said}"
    );
    assert!(
        !said.contains("externalId: "),
        "no externalId rewritten: {said}"
    );

    run(&env, &["sync"]);
    let w = writes(&mock);
    let posts: Vec<_> = w.iter().filter(|(m, _, _)| m == "POST").collect();
    assert_eq!(posts.len(), 1, "{w:#?}");
    assert_eq!(
        posts[0].2["externalId"], "dan",
        "the new hire gets their nickname"
    );
    let patched: Vec<_> = w.iter().filter(|(m, _, _)| m == "PATCH").collect();
    assert_eq!(patched.len(), 1, "only Bea's department: {w:#?}");
    assert_eq!(patched[0].1, format!("/Users/{bea}"));
    assert_eq!(
        ops(&patched[0].2),
        json!([{"op": "Replace", "path": format!("{ENTERPRISE}:department"), "value": "Legal"}])
    );
    for (id, nick) in [(&ann, "ann"), (&bea, "bea"), (&cy, "cy")] {
        let u = mock.state().users.get(id.as_str()).cloned().unwrap();
        assert_eq!(u["externalId"], nick, "{id}");
    }
    assert_eq!(mock.state().users.len(), 4, "no duplicate");

    // Linked now: the next run writes nothing.
    let before = writes(&mock).len();
    run(&env, &["sync"]);
    assert_eq!(writes(&mock).len(), before);
}

#[test]
fn external_id_that_is_not_an_attribute_is_a_config_error_with_file_line_and_key() {
    let env = setup("http://127.0.0.1:9", r#"external_id = "no such thing!""#);
    let out = env.run_with(&["check"], &[("SCIM_TOKEN", TOKEN)]);
    assert_eq!(code(&out), 2);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("config.toml:") && said.contains("store.external_id"),
        "{said}"
    );
}
