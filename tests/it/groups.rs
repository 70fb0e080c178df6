//! Directory groups into the learner store (issue 16), through the real binary: from
//! the mock Graph (prefix, nesting flattened, scope, renames, deletions), the mock
//! Directory API (derived membership), and a CSV `groups` column; into the SQLite
//! tables and the real scim2-server's /Groups (crashes mid-push converge, no duplicate
//! group); a provider without /Groups fails the group step, never the learners.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;

use crate::common::{assert_ok, code, sql, stderr, stdout, ConfigBuilder, Env};
use crate::support::graph_mock::{user, GraphMock};
use crate::support::scim_mock::ScimMock;
use crate::support::scim_server::{ScimServer, TOKEN};

const SECRET: &str = "graph-secret-never-printed";

/// group display name -> its members' external ids, from the SQLite store.
fn store_groups(env: &Env, directory: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in sql(
        env,
        "learners.db",
        &format!("SELECT display_name FROM groups WHERE directory = '{directory}'"),
    ) {
        out.entry(r[0].clone().unwrap()).or_default();
    }
    for r in sql(
        env,
        "learners.db",
        &format!(
            "SELECT g.display_name, m.learner_external_id FROM group_members m
             JOIN groups g ON g.directory = m.directory AND g.external_id = m.group_external_id
             WHERE m.directory = '{directory}' ORDER BY 1, 2"
        ),
    ) {
        out.entry(r[0].clone().unwrap())
            .or_default()
            .push(r[1].clone().unwrap());
    }
    out
}

fn groups_of(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(g, m)| (g.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn entra_env(mock: &GraphMock, lines: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .sync("max_deactivation_percent", "100")
        .entra("contoso", &mock.base(), &[])
        .dir_lines(r#"client_secret = { env = "CONTOSO_SECRET" }"#)
        .dir_lines(lines)
        .write(&env);
    env
}

fn sync(env: &Env) -> std::process::Output {
    env.run_with(
        &["sync"],
        &[("CONTOSO_SECRET", SECRET), ("SCIM_TOKEN", TOKEN)],
    )
}

#[test]
fn entra_groups_by_prefix_are_flattened_limited_to_learners_and_follow_the_directory() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    mock.add_user(user("u3", "cy@contoso.test", "Cy", "Young"));
    {
        let mut s = mock.state();
        // Train-Sales holds Ada directly and Bob through a nested group.
        s.add_group("g1", "Train-Sales", &["u1"]);
        s.add_group("g3", "Sales-Inner", &["u2"]);
        s.group_children.insert("g1".into(), vec!["g3".into()]);
        // A member that is no user of the directory (a device, a contact, a guest).
        s.add_group("g2", "Train-HR", &["u3", "not-a-learner"]);
        s.add_group("g4", "Other", &["u1"]);
    }
    let env = entra_env(&mock, r#"groups = { prefix = "train-" }"#);
    let out = sync(&env);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("groups: created 2, renamed 0, removed 0, members added 3"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        store_groups(&env, "contoso"),
        groups_of(&[("Train-HR", &["u3"]), ("Train-Sales", &["u1", "u2"])])
    );
    let log = mock.log().join("\n");
    assert!(log.contains("startswith(displayName,'train-')"), "{log}");
    assert!(log.contains("/groups/g1/transitiveMembers/microsoft.graph.user"));
    let email = sql(
        &env,
        "learners.db",
        "SELECT email FROM groups WHERE external_id = 'g2'",
    );
    assert_eq!(email[0][0].as_deref(), Some("train-hr@contoso.example"));

    // A rerun with nothing changed writes nothing and records no group step.
    let steps = || {
        sql(
            &env,
            "state.db",
            "SELECT count(*) FROM runs WHERE kind = 'groups'",
        )
    };
    let before = steps();
    assert_ok(&sync(&env));
    assert_eq!(steps(), before);

    // Bob leaves the directory, and so the group he was in through the nested one: no
    // group changed, so the kept read is limited again, without reading any group.
    mock.remove("u2", "deleted");
    mock.clear_log();
    assert_ok(&sync(&env));
    assert_eq!(
        store_groups(&env, "contoso"),
        groups_of(&[("Train-HR", &["u3"]), ("Train-Sales", &["u1"])])
    );
    assert!(!mock.log().iter().any(|l| l.contains("transitiveMembers")));
    // HR is renamed: the delta says so, and the groups are read again.
    mock.state().group_names.get_mut("g2").unwrap().0 = "Train-People".into();
    let out = sync(&env);
    assert_ok(&out);
    assert_eq!(
        store_groups(&env, "contoso"),
        groups_of(&[("Train-People", &["u3"]), ("Train-Sales", &["u1"])])
    );
    let history = env.run(&["history", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&stdout(&history)).unwrap();
    let actions: Vec<(String, String, String)> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_string(),
                r["external_id"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("member_removed".into(), "u2".into(), "Train-Sales".into())),
        "{actions:?}"
    );
    assert!(actions
        .iter()
        .any(|a| a.0 == "group_renamed" && a.1 == "g2"));

    // The group is deleted in Entra: gone from the store (one removal passes the guard).
    {
        let mut s = mock.state();
        s.group_names.remove("g2");
        s.groups.remove("g2");
    }
    assert_ok(&sync(&env));
    assert_eq!(
        store_groups(&env, "contoso"),
        groups_of(&[("Train-Sales", &["u1"])])
    );
    let status = env.run(&["status"]);
    assert!(
        stdout(&status).contains("groups:    1 groups, 1 memberships"),
        "{}",
        stdout(&status)
    );
}

#[test]
fn without_a_group_delta_every_run_reads_the_groups_whole_and_stays_right() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    {
        let mut s = mock.state();
        s.no_group_delta = true;
        s.add_group("g1", "Sales", &["u1"]);
    }
    let env = entra_env(&mock, r#"groups = { names = ["sales"] }"#);
    assert_ok(&sync(&env));
    let check = env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);
    assert!(
        stdout(&check).contains("read the selected groups: 1 groups, 1 memberships"),
        "{}",
        stdout(&check)
    );
    mock.state()
        .groups
        .insert("g1".into(), vec!["u1".into(), "u2".into()]);
    mock.clear_log();
    assert_ok(&sync(&env));
    assert!(mock
        .log()
        .iter()
        .any(|l| l.contains("/groups/g1/transitiveMembers")));
    assert_eq!(
        store_groups(&env, "contoso"),
        groups_of(&[("Sales", &["u1", "u2"])])
    );
    // Graph refuses the groups for a run: the step fails, the next (with nothing to
    // change) is recorded, and `status` shows it recovered.
    mock.state().forbidden = vec!["groups".into()];
    assert_eq!(code(&sync(&env)), 3);
    assert!(stdout(&env.run(&["status"])).contains("groups:    FAILED"));
    mock.state().forbidden.clear();
    assert_ok(&sync(&env));
    let status = stdout(&env.run(&["status"]));
    assert!(
        status.contains("groups:    1 groups, 2 memberships"),
        "{status}"
    );
    // A name no group has fails the group step, never the learners.
    let env = entra_env(&mock, r#"groups = { names = ["nobody's"] }"#);
    let check = env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);
    assert_ne!(code(&check), 0);
    assert!(
        stdout(&check).contains("GroupMember.Read.All"),
        "{}",
        stdout(&check)
    );
    let out = sync(&env);
    assert_eq!(code(&out), 3);
    assert!(
        stdout(&out).contains("no group is named `nobody's`"),
        "{}",
        stdout(&out)
    );
    assert_eq!(env.learners("learners.db", "contoso").len(), 2);
}

#[test]
fn scoped_groups_of_an_app_scope_are_the_groups_assigned_to_the_app() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    {
        let mut s = mock.state();
        s.add_group("g1", "Phishing wave 1", &["u2"]);
        s.add_group("g9", "Unassigned", &["u1", "u2"]);
        s.app_assignments.insert(
            "sp1".into(),
            vec![("u1".into(), "User".into()), ("g1".into(), "Group".into())],
        );
    }
    let env = entra_env(&mock, "scope = { app = \"sp1\" }\ngroups = \"scoped\"");
    assert_ok(&sync(&env));
    assert_eq!(
        store_groups(&env, "contoso"),
        groups_of(&[("Phishing wave 1", &["u2"])])
    );
}

#[test]
fn a_group_selection_the_directory_cannot_serve_is_refused_with_line_and_key() {
    let env = Env::new();
    env.write("hr.csv", "external_id,user_name\n1,a@x\n");
    for (groups, message) in [
        ("\"scoped\"", "this directory's scope names none"),
        ("{ colours = [\"red\"] }", "must be \"none\", \"scoped\""),
        ("{ names = [] }", "at least one non-empty name"),
    ] {
        ConfigBuilder::new()
            .csv("hr", "hr.csv")
            .dir("groups", groups)
            .write(&env);
        let out = env.run(&["sync"]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("directory[0].groups"), "{err}");
        assert!(err.contains(message), "{err}");
        assert!(err.contains("config.toml:"), "{err}");
    }
}

fn csv_with_groups(n_groups: usize) -> String {
    let mut text = String::from("external_id,user_name,groups\n");
    for i in 0..20 {
        let groups: Vec<String> = (0..n_groups)
            .filter(|g| g % 4 == i % 4 || *g == 0)
            .map(|g| format!("Team {g}"))
            .collect();
        text.push_str(&format!("{i},user{i}@x.example,{}\n", groups.join(";")));
    }
    text
}

#[test]
fn many_groups_vanishing_at_once_are_held_until_approve() {
    let env = Env::new();
    env.write("hr.csv", &csv_with_groups(8));
    ConfigBuilder::new()
        .guards(5, 10)
        .csv("hr", "hr.csv")
        .dir("groups", r#"{ prefix = "Team" }"#)
        .write(&env);
    assert_ok(&env.run(&["sync"]));
    assert_eq!(store_groups(&env, "hr").len(), 8);

    // The export lost its groups column's values: every group would go.
    let bare: String = csv_with_groups(8)
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + ",\n")
        .collect();
    env.write(
        "hr.csv",
        &bare.replacen(
            "external_id,user_name,\n",
            "external_id,user_name,groups\n",
            1,
        ),
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 4, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("group removals held: all 8 groups would be removed"),
        "{}",
        stdout(&out)
    );
    // The groups stay, and so do their members.
    let kept = store_groups(&env, "hr");
    assert_eq!(kept.len(), 8);
    assert_eq!(kept["Team 0"].len(), 20);
    // Held stays held on the next run.
    assert_eq!(code(&env.run(&["sync"])), 4);
    assert_eq!(store_groups(&env, "hr").len(), 8);
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("groups held: 8 removals"), "{status}");

    let approved = env.run(&["approve", "hr"]);
    assert_ok(&approved);
    assert!(stdout(&approved).contains("approved 8 held group removals"));
    let out = env.run(&["sync"]);
    assert_ok(&out);
    assert!(store_groups(&env, "hr").is_empty());
    // The approval was used up: nothing is held any more.
    assert!(!stdout(&env.run(&["status"])).contains("groups held"));
}

fn scim_env(base: &str, csv: &str, groups: bool) -> Env {
    let env = Env::new();
    env.write("hr.csv", csv);
    ConfigBuilder::new()
        .guards(1000, 100)
        .scim(base, r#"{ env = "SCIM_TOKEN" }"#)
        .store("dialect", r#""rfc""#)
        .store("groups", if groups { "true" } else { "false" })
        .csv("hr", "hr.csv")
        .dir("groups", r#"{ prefix = "" }"#)
        .write(&env);
    env
}

/// displayName -> sorted member userNames, of every group on the server.
fn server_groups(server: &ScimServer) -> BTreeMap<String, Vec<String>> {
    let users: BTreeMap<String, String> = server
        .users()
        .into_iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_string(),
                u["userName"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (status, list) = server.request("GET", "/Groups?count=1000", None);
    assert_eq!(status, 200, "{list}");
    let mut out = BTreeMap::new();
    for g in list["Resources"].as_array().cloned().unwrap_or_default() {
        let id = g["id"].as_str().unwrap();
        let (_, full) = server.request("GET", &format!("/Groups/{id}"), None);
        let mut members: Vec<String> = full["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| users[m["value"].as_str().unwrap()].clone())
            .collect();
        members.sort();
        let name = g["displayName"].as_str().unwrap().to_string();
        assert!(
            out.insert(name.clone(), members).is_none(),
            "two groups named {name}"
        );
    }
    out
}

fn big_csv(members: usize) -> String {
    let mut text = String::from("external_id,user_name,email,groups\n");
    for i in 0..members {
        let groups = if i < 3 { "All;Leads" } else { "All" };
        text.push_str(&format!("E{i},u{i:03}@x.io,u{i:03}@x.io,{groups}\n"));
    }
    text
}

#[test]
fn scim_groups_land_on_scim2_server_and_a_crash_mid_push_converges_without_a_duplicate() {
    let server = ScimServer::start();
    let env = scim_env(&server.base, &big_csv(150), true);
    // Stopped right after the first 100-member PATCH of "All" landed.
    let out = env.run_with(
        &["sync"],
        &[
            ("SCIM_TOKEN", TOKEN),
            ("LEARNER_SYNC_FAULT", "after-group-members"),
        ],
    );
    assert_ne!(code(&out), 0);
    assert_eq!(server_groups(&server)["All"].len(), 100);

    let out = env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]);
    assert_ok(&out);
    let groups = server_groups(&server);
    assert_eq!(groups["All"].len(), 150);
    assert_eq!(groups["Leads"], ["u000@x.io", "u001@x.io", "u002@x.io"]);
    assert_eq!(groups.len(), 2);

    // Nothing changed: the rerun sends no group request and adds nothing.
    let again = env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]);
    assert_ok(&again);
    assert!(stdout(&again)
        .contains("groups: created 0, renamed 0, removed 0, members added 0, members removed 0"));

    // A member leaves the directory: deactivated, and out of every group.
    env.write(
        "hr.csv",
        &big_csv(150).replace("E1,u001@x.io,u001@x.io,All;Leads\n", ""),
    );
    assert_ok(&env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]));
    let groups = server_groups(&server);
    assert_eq!(groups["Leads"], ["u000@x.io", "u002@x.io"]);
    assert_eq!(groups["All"].len(), 149);
}

#[test]
fn a_crash_between_the_group_post_and_its_record_adopts_the_group_by_display_name() {
    let server = ScimServer::start();
    let env = scim_env(&server.base, &big_csv(4), true);
    let out = env.run_with(
        &["sync"],
        &[
            ("SCIM_TOKEN", TOKEN),
            ("LEARNER_SYNC_FAULT", "after-group-post"),
        ],
    );
    assert_ne!(code(&out), 0);
    // The provider has the group; the mirror does not know it.
    assert_eq!(server_groups(&server).len(), 1);
    assert_ok(&env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]));
    let groups = server_groups(&server);
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups["All"].len(), 4);
    assert_eq!(groups["Leads"].len(), 3);

    // Deleted on the provider behind our back: the next change creates it again.
    let (_, list) = server.request("GET", "/Groups", None);
    let leads = list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["displayName"] == "Leads")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server
            .request("DELETE", &format!("/Groups/{leads}"), None)
            .0,
        204
    );
    env.write(
        "hr.csv",
        &big_csv(4).replace(
            "E3,u003@x.io,u003@x.io,All",
            "E3,u003@x.io,u003@x.io,All;Leads",
        ),
    );
    assert_ok(&env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]));
    assert_eq!(server_groups(&server)["Leads"].len(), 4);
}

#[test]
fn a_provider_without_groups_fails_the_group_step_and_keeps_the_learners() {
    let mock = ScimMock::start(TOKEN);
    let env = scim_env(&mock.base(), &big_csv(3), true);
    let out = env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hr: created 3"), "{text}");
    assert!(
        text.contains("groups FAILED") && text.contains("does not take groups"),
        "{text}"
    );
    assert_eq!(mock.state().users.len(), 3);
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("groups:    FAILED"), "{status}");
    let check = env.run_with(&["check"], &[("SCIM_TOKEN", TOKEN)]);
    assert!(
        stdout(&check).contains("groups = true, but GET /Groups failed"),
        "{}",
        stdout(&check)
    );

    // `groups = false`: the store takes no groups, and the run is clean.
    let env = scim_env(&mock.base(), &big_csv(3), false);
    let out = env.run_with(&["sync"], &[("SCIM_TOKEN", TOKEN)]);
    assert_ok(&out);
    assert!(!stdout(&out).contains("groups"), "{}", stdout(&out));
}

#[test]
fn google_groups_by_name_include_derived_members_of_nested_groups() {
    use crate::support::google_mock::GoogleMock;
    let mock = GoogleMock::start();
    mock.with(|s| {
        s.expected_scopes = vec![
            "https://www.googleapis.com/auth/admin.directory.user.readonly",
            "https://www.googleapis.com/auth/admin.directory.group.readonly",
            "https://www.googleapis.com/auth/admin.directory.group.member.readonly",
        ];
        for (id, email) in [("g-1", "ann@f.example"), ("g-2", "ben@f.example")] {
            s.users
                .push(crate::support::google_mock::user(id, email, "/"));
        }
        s.groups.insert(
            "sales@f.example".into(),
            vec![
                ("g-1".into(), "USER".into(), "ann@f.example".into()),
                ("grp-emea".into(), "GROUP".into(), "emea@f.example".into()),
            ],
        );
        s.groups.insert(
            "emea@f.example".into(),
            vec![("g-2".into(), "USER".into(), "ben@f.example".into())],
        );
        s.group_names.insert(
            "sales@f.example".into(),
            ("grp-sales".into(), "Sales".into()),
        );
        s.group_names
            .insert("emea@f.example".into(), ("grp-emea".into(), "EMEA".into()));
    });
    let env = Env::new();
    env.write("key.json", &mock.key_json());
    ConfigBuilder::new()
        .google(
            "ws",
            &mock.url(),
            "key.json",
            crate::support::google_mock::ADMIN,
        )
        .dir("groups", r#"{ names = ["sales"] }"#)
        .write(&env);
    let out = env.run(&["sync"]);
    assert_ok(&out);
    assert_eq!(
        store_groups(&env, "ws"),
        groups_of(&[("Sales", &["g-1", "g-2"])])
    );
    let email = sql(&env, "learners.db", "SELECT external_id, email FROM groups");
    assert_eq!(email[0][0].as_deref(), Some("grp-sales"));
    assert_eq!(email[0][1].as_deref(), Some("sales@f.example"));
}

#[test]
fn entra_and_entra_2020_group_pushes_land_on_scimmy_a_second_independent_server() {
    use crate::support::scim_gateway::{ScimGateway, TOKEN as GATEWAY_TOKEN};
    for dialect in ["entra", "entra-2020"] {
        let Some(server) = ScimGateway::start() else {
            return;
        };
        let env = Env::new();
        env.write("hr.csv", &big_csv(4));
        ConfigBuilder::new()
            .guards(1000, 100)
            .scim(&server.base, r#"{ env = "SCIM_TOKEN" }"#)
            .store("dialect", &format!("{dialect:?}"))
            .store("groups", "true")
            .csv("hr", "hr.csv")
            .dir("groups", r#"{ prefix = "" }"#)
            .write(&env);
        let run = || env.run_with(&["sync"], &[("SCIM_TOKEN", GATEWAY_TOKEN)]);
        let members = |name: &str| -> Vec<String> {
            let users: BTreeMap<String, String> = server
                .users()
                .into_iter()
                .map(|u| {
                    (
                        u["id"].as_str().unwrap().to_string(),
                        u["userName"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let (_, list) = server.request("GET", "/Groups", None);
            let groups = list["Resources"].as_array().cloned().unwrap_or_default();
            let found: Vec<&serde_json::Value> =
                groups.iter().filter(|g| g["displayName"] == name).collect();
            assert_eq!(found.len(), 1, "{dialect}: groups named {name}: {groups:?}");
            let mut m: Vec<String> = found[0]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|m| users[m["value"].as_str().unwrap()].clone())
                .collect();
            m.sort();
            m
        };
        let out = run();
        assert_ok(&out);
        assert_eq!(
            members("Leads"),
            ["u000@x.io", "u001@x.io", "u002@x.io"],
            "{dialect}"
        );
        assert_eq!(members("All").len(), 4, "{dialect}");
        // u001 leaves the Leads: Entra's `Remove` of `members` (2020: a path filter).
        env.write(
            "hr.csv",
            &big_csv(4).replace(
                "E1,u001@x.io,u001@x.io,All;Leads",
                "E1,u001@x.io,u001@x.io,All",
            ),
        );
        assert_ok(&run());
        assert_eq!(members("Leads"), ["u000@x.io", "u002@x.io"], "{dialect}");
    }
}
