//! Scoping filters end to end (issue 15 item 4): `[[directory.filter.include]]` and
//! `[[directory.filter.exclude]]` through the real binary against the Graph mock and
//! a CSV file; users moving out are deactivated `out of scope: filter`, and back in,
//! reactivated.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common::{assert_ok, code, last_actions, stderr, stdout, ConfigBuilder, Env};
use crate::support::graph_mock::{user, GraphMock};

use serde_json::json;

const SECRET: &str = "s3cr3t-value-never-printed";

/// (external_id, active) of the store's learners of `dir`.
fn active(env: &Env, dir: &str) -> Vec<(String, bool)> {
    env.learners("learners.db", dir)
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

/// Exclude rooms and service accounts by UPN, and members without a licence (shared
/// mailboxes), as the README's example does.
const EXCLUDE_NON_PEOPLE: &str = r#"
[[directory.filter.exclude]]
rules = [{ attribute = "userPrincipalName", matches = "^(room|svc)[-.]" }]

[[directory.filter.exclude]]
rules = [
  { attribute = "userType", equals = "Member" },
  { attribute = "assignedLicenses", is_empty = true },
]
"#;

fn licensed(id: &str, upn: &str) -> serde_json::Value {
    let mut u = user(id, upn, "A", "B");
    u["assignedLicenses"] =
        json!([{"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900", "disabledPlans": []}]);
    u
}

#[test]
fn rooms_service_accounts_and_shared_mailboxes_are_kept_out_and_a_user_moves_out_and_back() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(licensed("u1", "ada@contoso.test"));
    mock.add_user(licensed("u2", "room-4.01@contoso.test"));
    mock.add_user(licensed("u3", "svc-backup@contoso.test"));
    let mut shared = user("u4", "helpdesk@contoso.test", "Help", "Desk");
    shared["assignedLicenses"] = json!([]);
    mock.add_user(shared);
    let mut guest = user("u5", "eve_fabrikam.example#EXT#@contoso.test", "Eve", "G");
    guest["userType"] = json!("Guest");
    mock.add_user(guest);
    let env = Env::new();
    let base = ConfigBuilder::new()
        .sync("max_deactivation_percent", "100")
        .entra("contoso", &mock.base(), &[])
        .dir_lines(r#"client_secret = { env = "CONTOSO_SECRET" }"#)
        .dir("exclude_guests", "false")
        .build();
    env.write("config.toml", &format!("{base}{EXCLUDE_NON_PEOPLE}"));
    let sync = || env.run_with(&["sync"], &[("CONTOSO_SECRET", SECRET)]);

    assert_ok(&sync());
    assert_eq!(
        active(&env, "contoso"),
        [("u1".into(), true), ("u5".into(), true)],
        "a guest has no licence but is not a Member"
    );
    let select = mock
        .log()
        .into_iter()
        .find(|l| l.starts_with("GET /v1.0/users/delta"))
        .unwrap();
    assert!(
        select.contains("userType,manager,assignedLicenses"),
        "the filter's attributes are selected: {select}"
    );

    // Ada loses her licence (a delta with only that property): out of the filter.
    mock.update("u1", json!({"assignedLicenses": []}));
    assert_ok(&sync());
    assert_eq!(
        last_actions(&env),
        [(
            "u1".into(),
            "deactivated".into(),
            "out of scope: filter".into()
        )]
    );
    assert_eq!(active(&env, "contoso")[0], ("u1".into(), false));
    let status = env.run_with(&["history", "--json"], &[]);
    assert!(
        stdout(&status).contains("out of scope: filter"),
        "{}",
        stdout(&status)
    );

    // A change of another property leaves her out (the licences read before stay).
    mock.update("u1", json!({"jobTitle": "Lead"}));
    assert_ok(&sync());
    assert_eq!(active(&env, "contoso")[0], ("u1".into(), false));

    // Licensed again: back in, reactivated in the same row.
    mock.update(
        "u1",
        json!({"assignedLicenses": [{"skuId": "6fd2c87f-b296-42f0-b197-1e91e994b900"}]}),
    );
    assert_ok(&sync());
    assert_eq!(
        last_actions(&env),
        [(
            "u1".into(),
            "reactivated".into(),
            "active in directory again".into()
        )]
    );
    assert_eq!(active(&env, "contoso")[0], ("u1".into(), true));
}

#[test]
fn an_include_filter_on_a_mapped_field_and_a_column_admits_only_its_users() {
    let env = Env::new();
    let csv = |rows: &str| {
        env.write(
            "hr.csv",
            &format!("external_id,user_name,department,country\n{rows}"),
        )
    };
    csv("1,ada@x.io,sales,DE\n2,bob@x.io,Legal,DE\n3,cy@x.io,Sales,FR\n4,di@x.io,Security,US\n");
    let base = ConfigBuilder::new()
        .sync("max_deactivation_percent", "100")
        .csv("hr", "hr.csv")
        .build();
    env.write(
        "config.toml",
        &format!(
            r#"{base}
[directory.mapping]
department = "upper(department)"

[[directory.filter.include]]
rules = [
  {{ field = "department", equals = "SALES", case_sensitive = true }},
  {{ attribute = "country", in = ["DE", "AT", "CH"] }},
]

[[directory.filter.include]]
rules = [{{ field = "department", starts_with = "SEC" }}]
"#
        ),
    );
    assert_ok(&env.run(&["sync"]));
    assert_eq!(active(&env, "hr"), [("1".into(), true), ("4".into(), true)]);

    // Ada moves to Legal: out; Cy moves to Germany: in.
    csv("1,ada@x.io,Legal,DE\n2,bob@x.io,Legal,DE\n3,cy@x.io,Sales,de\n4,di@x.io,Security,US\n");
    assert_ok(&env.run(&["sync"]));
    assert_eq!(
        last_actions(&env),
        [
            (
                "1".into(),
                "deactivated".into(),
                "out of scope: filter".into()
            ),
            ("3".into(), "created".into(), "new in directory".into()),
        ]
    );
    // Back to Sales: reactivated.
    csv("1,ada@x.io,Sales,DE\n2,bob@x.io,Legal,DE\n3,cy@x.io,Sales,de\n4,di@x.io,Security,US\n");
    assert_ok(&env.run(&["sync"]));
    assert_eq!(
        last_actions(&env),
        [(
            "1".into(),
            "reactivated".into(),
            "active in directory again".into()
        )]
    );
}

#[test]
fn a_bad_filter_rule_is_a_config_error_with_file_line_and_key() {
    let env = Env::new();
    env.write("hr.csv", "external_id,user_name\n1,a@x.io\n");
    let base = ConfigBuilder::new().csv("hr", "hr.csv").build();
    let text = format!(
        "{base}\n[[directory.filter.exclude]]\nrules = [\n  {{ attribute = \"user_name\", matches = \"(svc\" }},\n]\n"
    );
    let path = env.write("config.toml", &text);
    let line = text.lines().position(|l| l.contains("(svc")).unwrap() + 1;
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let want = format!(
        "{}:{line}: directory[0].filter.exclude[0].rules[0].matches: bad regex",
        path.display()
    );
    assert!(
        stderr(&out).contains(&want),
        "want {want}\n got {}",
        stderr(&out)
    );
    assert!(!env.path("learners.db").exists(), "nothing was written");
}

#[test]
fn a_google_filter_on_the_org_unit_keeps_service_accounts_out() {
    use crate::support::google_mock::{self, GoogleMock};
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.users
            .push(google_mock::user("g1", "ada@fabrikam.example", "/Staff"));
        s.users.push(google_mock::user(
            "g2",
            "backup@fabrikam.example",
            "/Service Accounts",
        ));
    });
    let env = Env::new();
    let key = env.write("sa.json", &mock.key_json());
    let base = ConfigBuilder::new()
        .google(
            "fab",
            &mock.url(),
            key.to_str().unwrap(),
            "admin@fabrikam.example",
        )
        .build();
    env.write(
        "config.toml",
        &format!("{base}\n[[directory.filter.exclude]]\nrules = [{{ attribute = \"orgUnitPath\", starts_with = \"/Service Accounts\" }}]\n"),
    );
    assert_ok(&env.run(&["sync"]));
    assert_eq!(active(&env, "fab"), [("g1".into(), true)]);
}
