//! Attribute mappings end to end (issue 15 item 3): `[directory.mapping]` expressions
//! and `[directory.mapping.scim]` extras through the real binary against the Graph,
//! Directory API and SCIM mocks and a CSV file.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common::{
    self, assert_ok, code, column, last_actions, stderr, stdout, ConfigBuilder, Env,
};
use crate::support::google_mock::{self, GoogleMock};
use crate::support::graph_mock::{user, GraphMock};
use crate::support::scim_mock::ScimMock;

use serde_json::json;

const SECRET: &str = "s3cr3t-value-never-printed";
const TOKEN: &str = "scim-token-never-printed";
const KB4: &str = "urn:ietf:params:scim:schemas:extension:knowbe4:kmsat:2.0:User";

fn entra_config(mock: &GraphMock, mapping: &str) -> String {
    let base = ConfigBuilder::new()
        .sync("max_update_percent", "100")
        .entra("contoso", &mock.base(), &[])
        .dir_lines(r#"client_secret = { env = "CONTOSO_SECRET" }"#)
        .build();
    format!("{base}\n{mapping}")
}

fn sync_entra(env: &Env) -> std::process::Output {
    env.run_with(&["sync"], &[("CONTOSO_SECRET", SECRET)])
}

/// The `$select` of each users/delta round the mock saw start (the log is decoded).
fn selects(mock: &GraphMock) -> Vec<String> {
    mock.log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .filter_map(|l| {
            l.split(['?', '&'])
                .find_map(|p| p.strip_prefix("$select="))
                .map(str::to_string)
        })
        .collect()
}

const DEPT: &str = r#"[directory.mapping]
department = "coalesce(onPremisesExtensionAttributes.extensionAttribute3, department)"
job_title = "join(' - ', jobTitle, companyName)"
"#;

#[test]
fn a_department_mapped_from_an_extension_attribute_falls_back_and_survives_partial_deltas() {
    let mock = GraphMock::start(SECRET);
    let mut ada = user("u1", "ada@contoso.test", "Ada", "Lovelace");
    ada["onPremisesExtensionAttributes"] =
        json!({"extensionAttribute3": "R&D", "extensionAttribute1": null});
    ada["companyName"] = json!("Contoso");
    mock.add_user(ada);
    let mut bob = user("u2", "bob@contoso.test", "Bob", "Builder");
    bob["onPremisesExtensionAttributes"] = json!({"extensionAttribute3": null});
    mock.add_user(bob);
    let env = Env::new();
    env.write("config.toml", &entra_config(&mock, DEPT));

    assert_ok(&sync_entra(&env));
    assert_eq!(
        column(&env, "contoso", "u1", "department").as_deref(),
        Some("R&D")
    );
    assert_eq!(
        column(&env, "contoso", "u2", "department").as_deref(),
        Some("Sales"),
        "coalesce falls back to the user's own department"
    );
    assert_eq!(
        column(&env, "contoso", "u1", "job_title").as_deref(),
        Some("Rep - Contoso")
    );
    assert_eq!(
        column(&env, "contoso", "u2", "job_title").as_deref(),
        Some("Rep")
    );
    // Exactly the default properties plus the ones the mapping reads.
    assert_eq!(
        selects(&mock),
        ["id,userPrincipalName,mail,givenName,surname,displayName,department,jobTitle,employeeId,accountEnabled,userType,manager,companyName,onPremisesExtensionAttributes"]
    );

    // A delta item with only jobTitle: the extension attribute read before stays.
    mock.update("u1", json!({"jobTitle": "Lead"}));
    mock.update(
        "u2",
        json!({"onPremisesExtensionAttributes": {"extensionAttribute3": "Ops"}}),
    );
    mock.clear_log();
    assert_ok(&sync_entra(&env));
    assert!(
        mock.log().iter().any(|l| l.contains("$deltatoken=")),
        "a delta run: {:?}",
        mock.log()
    );
    assert_eq!(
        column(&env, "contoso", "u1", "department").as_deref(),
        Some("R&D")
    );
    assert_eq!(
        column(&env, "contoso", "u1", "job_title").as_deref(),
        Some("Lead - Contoso")
    );
    assert_eq!(
        column(&env, "contoso", "u2", "department").as_deref(),
        Some("Ops")
    );
    assert_eq!(
        last_actions(&env),
        [
            ("u1".into(), "updated".into(), "changed: job_title".into()),
            ("u2".into(), "updated".into(), "changed: department".into()),
        ]
    );
}

#[test]
fn a_changed_mapping_updates_everyone_on_the_next_run() {
    let mock = GraphMock::start(SECRET);
    for (id, upn) in [("u1", "ada@contoso.test"), ("u2", "bob@contoso.test")] {
        mock.add_user(user(id, upn, "X", "Y"));
    }
    let env = Env::new();
    env.write("config.toml", &entra_config(&mock, ""));
    assert_ok(&sync_entra(&env));
    assert_eq!(
        column(&env, "contoso", "u1", "department").as_deref(),
        Some("Sales")
    );

    // Nothing changed in the directory, only the mapping: a delta would name nobody.
    env.write(
        "config.toml",
        &entra_config(
            &mock,
            "[directory.mapping]\ndepartment = \"upper(department)\"\nemail = \"lower(replace(userPrincipalName, '@contoso.test', '@mail.contoso.test'))\"\n",
        ),
    );
    assert_ok(&sync_entra(&env));
    assert_eq!(
        column(&env, "contoso", "u1", "department").as_deref(),
        Some("SALES")
    );
    assert_eq!(
        column(&env, "contoso", "u2", "email").as_deref(),
        Some("bob@mail.contoso.test")
    );
    let actions = last_actions(&env);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(actions
        .iter()
        .all(|(_, a, r)| a == "updated" && r == "changed: email, department"));
}

#[test]
fn a_mapping_change_counts_toward_the_mass_update_guard() {
    let dir = Env::new();
    let rows: String = (1..=12).map(|i| format!("{i},u{i}@x.io,Sales\n")).collect();
    dir.write(
        "hr.csv",
        &format!("external_id,user_name,department\n{rows}"),
    );
    let base = ConfigBuilder::new().csv("hr", "hr.csv").build();
    dir.write("config.toml", &base);
    assert_ok(&dir.run(&["sync"]));
    dir.write(
        "config.toml",
        &format!("{base}\n[directory.mapping]\ndepartment = \"lower(department)\"\n"),
    );
    let out = dir.run(&["sync"]);
    assert!(
        stdout(&out).contains("max_update_percent") || stderr(&out).contains("max_update_percent"),
        "stdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        column(&dir, "hr", "1", "department").as_deref(),
        Some("Sales"),
        "held"
    );
}

#[test]
fn csv_columns_beyond_the_learner_columns_feed_mappings() {
    let env = Env::new();
    env.write(
        "hr.csv",
        "external_id,user_name,given_name,family_name,cost_center,site\n1,ada@x.io,Ada,Lovelace,CC-1,London\n2,bob@x.io,Bob,,,\n",
    );
    let base = ConfigBuilder::new().csv("hr", "hr.csv").build();
    env.write(
        "config.toml",
        &format!(
            "{base}\n[directory.mapping]\ndepartment = \"if_empty(cost_center, 'Unassigned')\"\ndisplay_name = \"join(' ', given_name, family_name, site)\"\n"
        ),
    );
    assert_ok(&env.run(&["sync"]));
    assert_eq!(
        column(&env, "hr", "1", "department").as_deref(),
        Some("CC-1")
    );
    assert_eq!(
        column(&env, "hr", "2", "department").as_deref(),
        Some("Unassigned")
    );
    assert_eq!(
        column(&env, "hr", "1", "display_name").as_deref(),
        Some("Ada Lovelace London")
    );
    assert_eq!(
        column(&env, "hr", "2", "display_name").as_deref(),
        Some("Bob")
    );
    // A column the mapping does not read is still a typo, and a missing one is named.
    env.write(
        "hr.csv",
        "external_id,user_name,cost_centre\n1,ada@x.io,CC-1\n",
    );
    let out = env.run(&["sync"]);
    assert_ne!(code(&out), 0);
    assert!(
        stdout(&out).contains("unknown column `cost_centre`")
            || stderr(&out).contains("unknown column `cost_centre`"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        column(&env, "hr", "1", "department").as_deref(),
        Some("CC-1"),
        "nothing changed"
    );
}

#[test]
fn a_bad_expression_or_unknown_attribute_is_a_config_error_with_file_line_and_key() {
    let mock = GraphMock::start(SECRET);
    let env = Env::new();
    for (mapping, key, message) in [
        (
            "[directory.mapping]\ndepartment = \"coalesce(companyName, \"\n",
            "directory[0].mapping.department",
            "bad expression",
        ),
        (
            "[directory.mapping]\njob_title = \"lower(costCentre)\"\n",
            "directory[0].mapping.job_title",
            "unknown attribute: `costCentre` is not a Microsoft Graph user property",
        ),
    ] {
        let text = entra_config(&mock, mapping);
        let path = env.write("config.toml", &text);
        let line = text
            .lines()
            .position(|l| l.starts_with(key.rsplit('.').next().unwrap()))
            .unwrap()
            + 1;
        let out = sync_entra(&env);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let want = format!("{}:{line}: {key}: {message}", path.display());
        assert!(
            stderr(&out).contains(&want),
            "want {want}\n got {}",
            stderr(&out)
        );
        assert!(mock.log().is_empty(), "nothing was read");
    }
}

#[test]
fn a_knowbe4_custom_attribute_reaches_the_scim_provider_and_follows_changes() {
    let scim = ScimMock::start(TOKEN);
    let env = Env::new();
    env.write(
        "hr.csv",
        "external_id,user_name,email,cost_center\n1,ada@x.io,ada@x.io,CC-1\n",
    );
    let base = ConfigBuilder::new()
        .scim(&scim.base(), r#"{ env = "SCIM_TOKEN" }"#)
        .csv("hr", "hr.csv")
        .build();
    env.write(
        "config.toml",
        &format!(
            "{base}\n[directory.mapping.scim]\n\"{KB4}:customField1\" = \"upper(cost_center)\"\n"
        ),
    );
    let sync = || env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]);
    assert_ok(&sync());
    let u = scim.user("1");
    assert_eq!(u[KB4]["customField1"], "CC-1", "{u}");
    assert!(
        u["schemas"].as_array().unwrap().contains(&json!(KB4)),
        "{u}"
    );

    env.write(
        "hr.csv",
        "external_id,user_name,email,cost_center\n1,ada@x.io,ada@x.io,cc-2\n",
    );
    assert_ok(&sync());
    assert_eq!(scim.user("1")[KB4]["customField1"], "CC-2");
    let patches = scim.requests("PATCH");
    assert_eq!(patches.len(), 1, "{patches:?}");
    assert!(
        patches[0].body.contains("customField1"),
        "{}",
        patches[0].body
    );
    assert!(
        !patches[0].body.contains("userName"),
        "only the change: {}",
        patches[0].body
    );
    assert_eq!(
        last_actions(&env),
        [(
            "1".into(),
            "updated".into(),
            format!("changed: {KB4}:customField1")
        )]
    );

    // Unchanged: the value last pushed is remembered, nothing is sent.
    assert_ok(&sync());
    assert_eq!(scim.requests("PATCH").len(), 1);
}

#[test]
fn google_cost_center_and_custom_schema_attributes_are_requested_and_mapped() {
    let mock = GoogleMock::start();
    let mut u = google_mock::user("g1", "ada@fabrikam.example", "/Staff");
    u["organizations"] = json!([
        {"department": "Old", "costCenter": "CC-old"},
        {"department": "Sales", "title": "Rep", "primary": true, "costCenter": "CC-7"}
    ]);
    u["customSchemas"] = json!({"HR": {"division": "EMEA"}});
    mock.with(|s| s.users.push(u));
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
        &format!("{base}\n[directory.mapping]\ndepartment = \"organizations[primary].costCenter\"\njob_title = \"join(' / ', organizations[primary].title, customSchemas.HR.division)\"\n"),
    );
    assert_ok(&env.run(&["sync"]));
    assert_eq!(
        column(&env, "fab", "g1", "department").as_deref(),
        Some("CC-7")
    );
    assert_eq!(
        column(&env, "fab", "g1", "job_title").as_deref(),
        Some("Rep / EMEA")
    );
    let q = mock.with(|s| s.user_queries[0].clone());
    assert_eq!(
        q.get("fields").map(String::as_str),
        Some("nextPageToken,users(id,primaryEmail,name(givenName,familyName,fullName),suspended,archived,orgUnitPath,organizations(department,title,primary,costCenter),externalIds(value,type),relations(value,type),customSchemas(HR(division))),kind")
    );
    assert_eq!(q.get("projection").map(String::as_str), Some("custom"));
    assert_eq!(q.get("customFieldMask").map(String::as_str), Some("HR"));
    let _ = common::bin();
}

#[test]
fn directory_extensions_and_employee_org_data_map_through_coalesce() {
    let mock = GraphMock::start(SECRET);
    let ext = "extension_0123456789abcdef0123456789abcdef_costCentre";
    let mut ada = user("u1", "ada@contoso.test", "Ada", "L");
    ada[ext] = json!("CC-9");
    ada["employeeOrgData"] = json!({"costCenter": "ORG-1", "division": "EMEA"});
    mock.add_user(ada);
    let mut bob = user("u2", "bob@contoso.test", "Bob", "B");
    bob["employeeOrgData"] = json!({"costCenter": "ORG-2", "division": null});
    mock.add_user(bob);
    let env = Env::new();
    env.write(
        "config.toml",
        &entra_config(
            &mock,
            &format!("[directory.mapping]\nemployee_id = \"coalesce({ext}, employeeOrgData.costCenter)\"\n"),
        ),
    );
    assert_ok(&sync_entra(&env));
    assert_eq!(
        column(&env, "contoso", "u1", "employee_id").as_deref(),
        Some("CC-9")
    );
    assert_eq!(
        column(&env, "contoso", "u2", "employee_id").as_deref(),
        Some("ORG-2")
    );
    let select = &selects(&mock)[0];
    assert!(
        select.ends_with(&format!(",manager,employeeOrgData,{ext}")),
        "{select}"
    );
}

#[test]
fn a_dry_run_shows_what_a_new_mapping_would_change_and_writes_nothing() {
    let env = Env::new();
    env.write(
        "hr.csv",
        "external_id,user_name,department\n1,ada@x.io,Sales\n2,bob@x.io,Legal\n",
    );
    let base = ConfigBuilder::new().csv("hr", "hr.csv").build();
    env.write("config.toml", &base);
    assert_ok(&env.run(&["sync"]));
    env.write(
        "config.toml",
        &format!("{base}\n[directory.mapping]\ndepartment = \"join('/', 'EMEA', department)\"\n"),
    );
    let dry = env.run(&["sync", "--dry-run"]);
    assert_ok(&dry);
    assert!(stdout(&dry).contains("EMEA/Sales"), "{}", stdout(&dry));
    assert_eq!(
        column(&env, "hr", "1", "department").as_deref(),
        Some("Sales")
    );
    assert_ok(&env.run(&["sync"]));
    assert_eq!(
        column(&env, "hr", "1", "department").as_deref(),
        Some("EMEA/Sales")
    );
    assert_eq!(
        column(&env, "hr", "2", "department").as_deref(),
        Some("EMEA/Legal")
    );
}
