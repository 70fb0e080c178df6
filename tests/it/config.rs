//! Config: every shipped TOML parses; every kind of bad input is refused with the
//! file, the line and the key, and exit code 2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::path::Path;

use learner_sync::config::{Config, DirectoryKind, EntraScope, GoogleScope, StoreConfig};

#[test]
fn every_shipped_config_parses() {
    let mut files = vec![Path::new("config.example.toml").to_path_buf()];
    for entry in std::fs::read_dir("examples").unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            files.push(p);
        }
    }
    assert!(files.len() >= 2);
    for f in files {
        Config::load(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn the_example_config_documents_the_contract_defaults_and_all_kinds() {
    let c = Config::load(Path::new("config.example.toml")).unwrap();
    assert_eq!(c.sync.max_deactivations, 50);
    assert_eq!(c.sync.max_deactivation_percent, 10.0);
    assert_eq!(c.sync.concurrency, 4);
    let kinds: Vec<&str> = c.directories.iter().map(|d| d.kind.name()).collect();
    assert_eq!(kinds, ["entra", "google", "csv"]);
    assert!(matches!(c.store_for("contoso"), StoreConfig::Sqlite { .. }));
    match &c.directories[0].kind {
        DirectoryKind::Entra(e) => {
            assert_eq!(e.scope, EntraScope::All);
            assert_eq!(e.graph_url.as_str(), "https://graph.microsoft.com/v1.0");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.directories[0].mapping.exclude_guests);
    assert_eq!(
        c.directories[2].mapping.default_department.as_deref(),
        Some("Staff")
    );
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let c = Config::parse(
        Path::new("/etc/ls/config.toml"),
        "[[directory]]\nname = \"a\"\nkind = \"csv\"\npath = \"a.csv\"\n",
    )
    .unwrap();
    assert_eq!(c.sync.max_deactivations, 50);
    assert_eq!(c.sync.max_deactivation_percent, 10.0);
    assert_eq!(c.sync.concurrency, 4);
    assert_eq!(c.sync.full_resync.as_secs(), 24 * 3600);
    assert_eq!(c.sync.request_timeout.as_secs(), 120);
    assert_eq!(
        c.sync.schedule,
        learner_sync::config::Schedule::Every(std::time::Duration::from_secs(2400))
    );
    assert!(c.directories[0].mapping.exclude_guests);
}

#[test]
fn relative_paths_resolve_against_the_config_folder_not_the_working_directory() {
    let text = r#"
[sync]
state_db = "state/state.db"
[store]
kind = "sqlite"
path = "learners.db"
[[directory]]
name = "hr"
kind = "csv"
path = "../exports/hr.csv"
[[directory]]
name = "g"
kind = "google"
service_account_key = { file = "keys/sa.json" }
admin_email = "admin@example.com"
scope = { org_units = ["/Staff"] }
"#;
    let c = Config::parse(Path::new("/etc/learner-sync/config.toml"), text).unwrap();
    assert_eq!(
        c.sync.state_db,
        Path::new("/etc/learner-sync/state/state.db")
    );
    match c.store_for("any") {
        StoreConfig::Sqlite { path } => {
            assert_eq!(path, Path::new("/etc/learner-sync/learners.db"))
        }
        other => panic!("{other:?}"),
    }
    match &c.directories[0].kind {
        DirectoryKind::Csv { path, .. } => {
            assert_eq!(path, Path::new("/etc/learner-sync/../exports/hr.csv"))
        }
        other => panic!("{other:?}"),
    }
    match &c.directories[1].kind {
        DirectoryKind::Google(g) => {
            assert_eq!(
                g.service_account_key,
                learner_sync::config::SecretRef::File("/etc/learner-sync/keys/sa.json".into())
            );
            assert_eq!(g.scope, GoogleScope::OrgUnits(vec!["/Staff".into()]));
            assert_eq!(g.customer, "my_customer");
        }
        other => panic!("{other:?}"),
    }
}

/// (config text, expected "line: key" prefix after the file name, words in the message)
const BAD: &[(&str, &str, &str)] = &[
    (
        "[sync]\nmax_deactivations = 5\nmax_deactivatons = 3\n",
        ":3: sync.max_deactivatons:",
        "unknown field",
    ),
    (
        "[sync]\nconcurrency = \"four\"\n",
        ":2: sync.concurrency:",
        "invalid type",
    ),
    (
        "[sync]\n\nmax_deactivations = -1\n",
        ":3: sync.max_deactivations:",
        "must not be negative",
    ),
    (
        "[sync]\nmax_deactivation_percent = 150\n",
        ":2: sync.max_deactivation_percent:",
        "between 0 and 100",
    ),
    (
        "[sync]\nschedule = \"every forty minutes\"\n",
        ":2: sync.schedule:",
        "not a duration",
    ),
    (
        "[[directory]]\nname = \"a\"\nkind = \"csv\"\npath = \"a.csv\"\n\n[[directory]]\nname = \"a\"\nkind = \"csv\"\npath = \"b.csv\"\n",
        ":7: directory[1].name:",
        "duplicate directory name `a`",
    ),
    (
        "[[directory]]\nname = \"c\"\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"hunter2-inline\"\n",
        ":6: directory[0].client_secret:",
        "secrets are not written in the config",
    ),
    (
        "[[directory]]\nname = \"c\"\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = { env = \"S\" }\ngraph_url = \"http://graph.example.com/v1.0\"\n",
        ":7: directory[0].graph_url:",
        "only for loopback",
    ),
    (
        "[[directory]]\nname = \"c\"\nkind = \"entra\"\nclient_id = \"c\"\nclient_secret = { env = \"S\" }\n",
        ":1: directory[0].tenant_id:",
        "needs `tenant_id`",
    ),
    (
        "[[directory]]\nname = \"h\"\nkind = \"csv\"\npath = \"x.csv\"\ntenant_id = \"t\"\n",
        ":5: directory[0].tenant_id:",
        "not a key of a `csv` directory",
    ),
    (
        "[store]\nkind = \"scim\"\nurl = \"https://app.example.com/scim/v2\"\ntoken = \"inline-token\"\n",
        ":4: store.token:",
        "secrets are not written in the config",
    ),
    (
        "[[directory]]\nname = \"h\"\nkind = \"csv\"\npath = \"x.csv\"\n[directory.mapping]\ndefault_departmnet = \"Staff\"\n",
        ":6: directory[0].mapping.default_departmnet:",
        "unknown field",
    ),
    (
        "[[directory]]\nname = \"g\"\nkind = \"google\"\nservice_account_key = { file = \"k.json\" }\nadmin_email = \"a@b.c\"\nscope = { org_units = [\"Staff\"] }\n",
        ":6: directory[0].scope:",
        "start with '/'",
    ),
    (
        "[sync]\nconcurrency = 2\nrequest_timeout = \"0s\"\n",
        ":3: sync.request_timeout:",
        "longer than zero",
    ),
    ("[sync\n", ":1:", "unclosed table"),
];

#[test]
fn bad_configs_name_the_file_line_and_key() {
    for (text, at, words) in BAD {
        let err = Config::parse(Path::new("/etc/ls/config.toml"), text)
            .expect_err(text)
            .to_string();
        assert!(
            err.starts_with(&format!("/etc/ls/config.toml{at}")),
            "config:\n{text}\nerror: {err}\nexpected prefix: {at}"
        );
        assert!(err.contains(words), "error `{err}` lacks `{words}`");
        assert!(
            !err.contains("hunter2") && !err.contains("inline-token"),
            "{err}"
        );
    }
}

#[test]
fn the_binary_exits_2_on_a_bad_config_and_names_line_and_key() {
    let env = common::Env::new();
    env.write(
        "config.toml",
        "[sync]\nstate_db = \"s.db\"\nmax_deactivations = \"many\"\n",
    );
    let out = env.run(&["sync"]);
    assert_eq!(common::code(&out), 2);
    let err = common::stderr(&out);
    assert!(
        err.contains("config.toml:3: sync.max_deactivations:"),
        "{err}"
    );
    assert!(
        !env.path("s.db").exists(),
        "nothing is created on a bad config"
    );
}

#[test]
fn a_missing_config_file_is_a_usage_error_naming_it() {
    let env = common::Env::new();
    let out = env.run(&["status"]);
    assert_eq!(common::code(&out), 2);
    assert!(common::stderr(&out).contains("config.toml"));
}

#[test]
fn the_config_path_comes_from_the_environment_when_no_flag_is_given() {
    let env = common::Env::new();
    let p = env.write(
        "elsewhere/c.toml",
        "[sync]\nstate_db = \"s.db\"\n[store]\nkind = \"sqlite\"\npath = \"l.db\"\n[[directory]]\nname = \"x\"\nkind = \"csv\"\npath = \"x.csv\"\n",
    );
    env.write("elsewhere/x.csv", "external_id,user_name\n1,a@x.io\n");
    let out = std::process::Command::new(common::bin())
        .arg("sync")
        .env("LEARNER_SYNC_CONFIG", &p)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert_eq!(common::code(&out), 0, "{}", common::stderr(&out));
    assert!(env.path("elsewhere/l.db").exists());
}
