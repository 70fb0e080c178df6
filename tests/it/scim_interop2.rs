//! Interop with a second, independent SCIM server: SCIMMY (npm `scimmy` and
//! `scimmy-routers`, installed by scripts/scim-gateway), through the real binary.
//! SCIMMY takes RFC 7644 shapes and Entra's 2020 ones (lowercase ops, boolean `active`,
//! no-path replace with dotted keys) but not a bare manager id, nor "True"/"False"
//! strings for `active`: the lifecycle runs in the `rfc` dialect, and once, managers
//! aside, in `entra-2020`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::scim_gateway::{ScimGateway, TOKEN};

use common::{code, stderr, stdout, Env};
use serde_json::{json, Value};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const HEADER: &str =
    "external_id,user_name,email,given_name,family_name,department,manager_email,active\n";

fn setup(server: &ScimGateway, store: &str) -> Env {
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
url = "{}"
token = {{ env = "SCIM_TOKEN" }}
concurrency = 2
{store}

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#,
            server.base
        ),
    );
    env
}

fn sync(env: &Env, args: &[&str]) -> std::process::Output {
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

fn rows(bea_dept: &str, bea_active: bool, managers: bool) -> String {
    let m = if managers { "ann@x.io" } else { "" };
    format!(
        "{HEADER}E1,ann@x.io,ann@x.io,Ann,Ames,Board,,true\n\
         E2,bea@x.io,bea@x.io,Bea,Boss,{bea_dept},{m},{bea_active}\n\
         E3,cy@x.io,cy@x.io,Cy,Cole,Sales,{m},true\n"
    )
}

#[test]
fn lifecycle_create_update_deactivate_reactivate_lands_on_scimmy() {
    let Some(server) = ScimGateway::start() else {
        return;
    };
    let env = setup(&server, r#"dialect = "rfc""#);
    env.write("hr.csv", &rows("Sales", true, true));
    sync(&env, &["sync"]);
    assert_eq!(server.users().len(), 3);
    let ann = server.user("ann@x.io");
    let bea = server.user("bea@x.io");
    assert_eq!(bea["externalId"], "E2");
    assert_eq!(bea["emails"][0]["value"], "bea@x.io");
    assert_eq!(bea[ENTERPRISE]["department"], "Sales");
    assert_eq!(bea[ENTERPRISE]["manager"]["value"], ann["id"]);

    env.write("hr.csv", &rows("Legal", true, true));
    sync(&env, &["sync"]);
    assert_eq!(server.user("bea@x.io")[ENTERPRISE]["department"], "Legal");

    env.write("hr.csv", &rows("Legal", false, true));
    sync(&env, &["sync"]);
    assert_eq!(server.user("bea@x.io")["active"], false);
    env.write("hr.csv", &rows("Legal", true, true));
    sync(&env, &["sync"]);
    let bea_now = server.user("bea@x.io");
    assert_eq!(bea_now["active"], true);
    assert_eq!(bea_now["id"], bea["id"], "one resource throughout");
    assert_eq!(server.users().len(), 3);
}

#[test]
fn the_entra_2020_dialect_lands_on_scimmy() {
    let Some(server) = ScimGateway::start() else {
        return;
    };
    let env = setup(&server, r#"dialect = "entra-2020""#);
    env.write("hr.csv", &rows("Sales", true, false));
    sync(&env, &["sync"]);
    let created = server.user("bea@x.io");
    assert_eq!(created["meta"]["resourceType"], "User");
    env.write("hr.csv", &rows("Legal", false, false));
    sync(&env, &["sync"]);
    let bea = server.user("bea@x.io");
    assert_eq!(bea[ENTERPRISE]["department"], "Legal");
    assert_eq!(bea["active"], false);
    env.write("hr.csv", &rows("Legal", true, false));
    sync(&env, &["sync"]);
    assert_eq!(server.user("bea@x.io")["active"], true);
    assert_eq!(server.users().len(), 3);
}

/// Ann, Bea and Cy as Entra's push created them, externalId from objectId (E1..E3).
fn seed_as_entra_made(server: &ScimGateway) {
    for (ext, name, given, family, dept) in [
        ("E1", "ann@x.io", "Ann", "Ames", "Board"),
        ("E2", "bea@x.io", "Bea", "Boss", "Sales"),
        ("E3", "cy@x.io", "Cy", "Cole", "Sales"),
    ] {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "externalId": ext, "userName": name, "active": true,
            "emails": [{"primary": true, "type": "work", "value": name}],
            "name": {"givenName": given, "familyName": family},
            ENTERPRISE: {"department": dept},
            "meta": {"resourceType": "User"},
        });
        let (status, answer) = server.request("POST", "/Users", Some(&body));
        assert_eq!(status, 201, "{answer}");
    }
}

fn modified(server: &ScimGateway, name: &str) -> Value {
    server.user(name)["meta"]["lastModified"].clone()
}

#[test]
fn a_takeover_on_scimmy_adopts_everyone_and_changes_only_what_differs() {
    let Some(server) = ScimGateway::start() else {
        return;
    };
    seed_as_entra_made(&server);
    let (ann_at, cy_at) = (modified(&server, "ann@x.io"), modified(&server, "cy@x.io"));
    let env = setup(&server, "dialect = \"rfc\"\nmatch = \"externalId\"");
    env.write("hr.csv", &rows("Legal", true, false));
    let out = sync(&env, &["sync", "--dry-run"]);
    let said = stdout(&out);
    assert!(
        said.contains("(matched by externalId); nothing to change"),
        "{said}"
    );
    assert!(
        said.contains("hr:     department: \"Sales\" -> \"Legal\""),
        "{said}"
    );
    assert!(!said.contains("; created"), "{said}");

    // Past the clock's millisecond: a write would bump lastModified.
    std::thread::sleep(std::time::Duration::from_millis(20));
    sync(&env, &["sync"]);
    assert_eq!(server.users().len(), 3, "no duplicate");
    assert_eq!(server.user("bea@x.io")[ENTERPRISE]["department"], "Legal");
    assert_eq!(
        modified(&server, "ann@x.io"),
        ann_at,
        "Ann matched: not written"
    );
    assert_eq!(
        modified(&server, "cy@x.io"),
        cy_at,
        "Cy matched: not written"
    );
}
