//! The PostgreSQL learner store (`kind = "postgres"`) through the real binary against a
//! real PostgreSQL (the throwaway cluster of `support::postgres`): the documented
//! tables and their life (creates, updates, deactivations, reactivations, groups),
//! dry runs that write nothing, `check` and `status`, a password that only comes from
//! a secret and never shows, config errors with line and key, and a database that was
//! dropped and re-created behind the state DB's back.
//! The crash suite runs on it too (crash.rs, `..._on_postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::graph_mock::{user, GraphMock};
use crate::support::postgres::{database, psql};

use common::{code, pg_learners, stderr, stdout, ConfigBuilder, Env};

fn csv_env(url: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(100, 100)
        .csv("hr", "hr.csv")
        .dir("groups", r#"{ prefix = "G-" }"#)
        .postgres(url)
        .write(&env);
    env
}

fn ids_active(url: &str) -> Vec<(String, bool)> {
    pg_learners(url, "hr")
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

fn memberships(url: &str) -> String {
    psql(
        url,
        "SELECT group_external_id || ':' || learner_external_id FROM group_members \
         WHERE directory = 'hr' ORDER BY 1",
    )
}

#[test]
fn a_csv_directory_lives_its_whole_life_in_a_postgres_store() {
    let url = database();
    let env = csv_env(&url);
    env.write(
        "hr.csv",
        "external_id,user_name,email,department,groups\n\
         1,ada@x.io,ada@x.io,Sales,G-Sales\n\
         2,bob@x.io,bob@x.io,Ops,G-Ops;G-Sales\n\
         3,cy@x.io,cy@x.io,Ops,\n",
    );
    // A dry run connects but creates nothing.
    let out = env.run(&["sync", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(psql(&url, "SELECT to_regclass('learners') IS NULL"), "t");

    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("created 3,"), "{}", stdout(&out));
    let rows = pg_learners(&url, "hr");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].user_name, "bob@x.io");
    assert_eq!(rows[1].department.as_deref(), Some("Ops"));
    assert_eq!(
        memberships(&url),
        "G-Ops:2\nG-Sales:1\nG-Sales:2",
        "the groups and their members"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT display_name FROM groups WHERE directory = 'hr' ORDER BY 1"
        ),
        "G-Ops\nG-Sales"
    );

    // An update, a leaver (deactivated, row kept), a group left.
    env.write(
        "hr.csv",
        "external_id,user_name,email,department,groups\n\
         1,ada@x.io,ada@x.io,Marketing,G-Sales\n\
         2,bob@x.io,bob@x.io,Ops,G-Ops\n",
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("updated 1, deactivated 1,"),
        "{}",
        stdout(&out)
    );
    let rows = pg_learners(&url, "hr");
    assert_eq!(rows[0].department.as_deref(), Some("Marketing"));
    assert!(
        !rows[2].active && rows[2].deactivated_at.is_some(),
        "{rows:?}"
    );
    assert_eq!(memberships(&url), "G-Ops:2\nG-Sales:1");

    // The dry run of a change shows it and writes nothing.
    env.write(
        "hr.csv",
        "external_id,user_name,email,department,groups\n\
         1,ada@x.io,ada@x.io,Marketing,G-Sales\n\
         2,bob@x.io,bob@x.io,Ops,G-Ops\n\
         3,cy@x.io,cy@x.io,Ops,G-Ops\n",
    );
    let runs_before = psql(&url, "SELECT count(*) FROM learner_sync_runs");
    let out = env.run(&["sync", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("reactivated 1"), "{}", stdout(&out));
    assert_eq!(
        ids_active(&url),
        [
            ("1".to_string(), true),
            ("2".to_string(), true),
            ("3".to_string(), false)
        ]
    );
    assert_eq!(
        psql(&url, "SELECT count(*) FROM learner_sync_runs"),
        runs_before
    );

    // The leaver comes back: the same row, reactivated.
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("reactivated 1,"), "{}", stdout(&out));
    let rows = pg_learners(&url, "hr");
    assert!(
        rows[2].active && rows[2].deactivated_at.is_none(),
        "{rows:?}"
    );
    assert_eq!(memberships(&url), "G-Ops:2\nG-Ops:3\nG-Sales:1");

    // Settled: one more run changes nothing.
    let out = env.run(&["sync"]);
    assert!(
        stdout(&out).contains("created 0, updated 0, deactivated 0, reactivated 0, held 0"),
        "{}",
        stdout(&out)
    );

    let out = env.run(&["check"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains(&format!("postgres store {url}: 3 learners")),
        "{}",
        stdout(&out)
    );
    let out = env.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("2 groups, 3 memberships"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn the_password_comes_from_a_secret_is_checked_by_the_server_and_never_shows() {
    let url = database();
    let role = format!("ls_pw_{}", std::process::id());
    let secret = "pg-S3cret-never-printed";
    psql(
        &url,
        &format!(
            "DO $$ BEGIN CREATE ROLE learner_sync_password NOLOGIN; \
             EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             DROP ROLE IF EXISTS {role}; \
             CREATE ROLE {role} LOGIN PASSWORD '{secret}' IN ROLE learner_sync_password; \
             GRANT ALL ON SCHEMA public TO {role}"
        ),
    );
    let as_role = url.replacen("learner_sync_test@", &format!("{role}@"), 1);
    let env = Env::new();
    env.write("hr.csv", "external_id,user_name\n1,ada@x.io\n");
    ConfigBuilder::new()
        .csv("hr", "hr.csv")
        .postgres(&as_role)
        .store("password", r#"{ env = "PG_PASSWORD" }"#)
        .write(&env);

    let out = env.run_with(
        &["sync"],
        &[("PG_PASSWORD", "wrong-password-shown-nowhere")],
    );
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("password authentication failed"), "{all}");
    assert!(!all.contains("wrong-password-shown-nowhere"), "{all}");
    assert_eq!(psql(&url, "SELECT to_regclass('learners') IS NULL"), "t");

    let out = env.run_with(&["sync"], &[("PG_PASSWORD", secret)]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(ids_active(&url), [("1".to_string(), true)]);
    let out = env.run_with(&["check"], &[("PG_PASSWORD", secret)]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("1 learners"), "{all}");
    for (what, text) in [
        ("output", all),
        ("state DB", read_all(&env.path("state.db"))),
    ] {
        assert!(!text.contains(secret), "the password is in the {what}");
    }
}

fn read_all(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
}

#[test]
fn a_postgres_store_config_with_a_password_in_the_url_or_a_wrong_key_is_refused_with_line_and_key()
{
    for (store, expect) in [
        (
            "kind = \"postgres\"\nurl = \"postgres://u:hunter2@127.0.0.1/db\"",
            "config.toml:3: store.url: holds a password: a secret is never written inline",
        ),
        (
            "kind = \"postgres\"\nurl = \"postgres://u@127.0.0.1/db?password=hunter2\"",
            "config.toml:3: store.url: holds a password",
        ),
        (
            "kind = \"postgres\"",
            "config.toml:1: store.url: a postgres store needs `url`",
        ),
        (
            "kind = \"postgres\"\nurl = \"https://127.0.0.1/db\"",
            "config.toml:3: store.url: must be a postgres:// URL",
        ),
        (
            "kind = \"postgres\"\nurl = \"postgres://127.0.0.1/db\"",
            "config.toml:3: store.url: names no user",
        ),
        (
            "kind = \"postgres\"\nurl = \"postgres://u@127.0.0.1/db\"\npath = \"x.db\"",
            "config.toml:4: store.path: not a key of a `postgres` store",
        ),
        (
            "kind = \"postgres\"\nurl = \"postgres://u@127.0.0.1/db\"\npassword = \"hunter2\"",
            "config.toml:4: store.password",
        ),
        (
            "kind = \"postgres\"\nurl = \"postgres://u@127.0.0.1/db\"\nlease = \"2h\"",
            "config.toml:4: store.lease: must be between 1s and 1h",
        ),
    ] {
        let env = Env::new();
        env.write("hr.csv", "external_id,user_name\n1,ada@x.io\n");
        env.write(
            "config.toml",
            &format!("[store]\n{store}\n\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n"),
        );
        let out = env.run(&["sync"]);
        assert_eq!(code(&out), 2, "{store}: {}", stderr(&out));
        assert!(stderr(&out).contains(expect), "{store}:\n{}", stderr(&out));
        assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
        assert!(!env.path("state.db").exists(), "{store}: nothing written");
    }
}

#[test]
fn a_postgres_store_dropped_and_recreated_behind_the_state_db_is_refilled_by_a_full_read() {
    let secret = "graph-secret-never-printed";
    let mock = GraphMock::start(secret);
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    let url = database();
    let env = Env::new();
    ConfigBuilder::new()
        .entra(
            "contoso",
            &mock.base(),
            &[("client_secret", r#"{ env = "CONTOSO_SECRET" }"#)],
        )
        .postgres(&url)
        .write(&env);
    let run = |args: &[&str]| env.run_with(args, &[("CONTOSO_SECRET", secret)]);
    let out = run(&["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let gen1 = psql(&url, "SELECT generation FROM learner_sync_store");

    // The DBA drops the tables (a restore into a new database looks the same).
    psql(
        &url,
        "DROP TABLE learners, learner_sync_runs, learner_sync_store, groups, group_members, \
         learner_sync_leases, learner_sync_daemons, learner_sync_schema",
    );
    mock.clear_log();
    let out = run(&["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_ne!(
        psql(&url, "SELECT generation FROM learner_sync_store"),
        gen1
    );
    let rows: Vec<(String, bool)> = pg_learners(&url, "contoso")
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect();
    assert_eq!(rows, [("u1".to_string(), true), ("u2".to_string(), true)]);
    let delta: Vec<String> = mock
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .collect();
    assert!(
        !delta.is_empty() && !delta[0].contains("$deltatoken"),
        "a fresh round, not the stored deltaLink: {delta:?}"
    );
}

#[test]
fn an_unreachable_postgres_store_fails_the_run_and_the_next_run_completes() {
    let url = database();
    // A port nothing listens on: one the kernel just gave out and took back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dead = format!("postgres://learner_sync_test@127.0.0.1:{port}/nothing");
    let env = Env::new();
    env.write("hr.csv", "external_id,user_name\n1,ada@x.io\n2,bob@x.io\n");
    ConfigBuilder::new()
        .csv("hr", "hr.csv")
        .postgres(&dead)
        .write(&env);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains(&dead),
        "the error names the store: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = env.run(&["check"]);
    assert_ne!(code(&out), 0, "{}", stdout(&out));

    // The store comes back (here: the config points at the live one).
    ConfigBuilder::new()
        .csv("hr", "hr.csv")
        .postgres(&url)
        .write(&env);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(
        ids_active(&url),
        [("1".to_string(), true), ("2".to_string(), true)]
    );
}

#[test]
fn rename_directory_moves_the_learners_in_postgres_and_waits_for_another_holder() {
    let url = database();
    let env = Env::new();
    env.write(
        "hr.csv",
        "external_id,user_name,groups\n1,ada@x.io,G-A\n2,bob@x.io,\n",
    );
    let write = |name: &str| {
        ConfigBuilder::new()
            .csv(name, "hr.csv")
            .dir("groups", r#"{ prefix = "G-" }"#)
            .postgres(&url)
            .write(&env);
    };
    write("hr");
    assert_eq!(code(&env.run(&["sync"])), 0);
    // A daemon of another machine is running `hr`: the rename waits for it.
    psql(
        &url,
        "UPDATE learner_sync_leases SET holder = 'vm-2:7:ab', machine = 'vm-2', pid = 7, \
         expires_at = now() + interval '1 hour' WHERE directory = 'hr'",
    );
    let out = env.run(&["rename-directory", "hr", "people"]);
    assert_ne!(code(&out), 0, "{}", stdout(&out));
    assert!(stderr(&out).contains("vm-2:7:ab"), "{}", stderr(&out));
    assert_eq!(pg_learners(&url, "hr").len(), 2, "nothing moved");

    psql(
        &url,
        "UPDATE learner_sync_leases SET expires_at = now() WHERE directory = 'hr'",
    );
    let out = env.run(&["rename-directory", "hr", "people"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(pg_learners(&url, "hr").is_empty());
    assert_eq!(pg_learners(&url, "people").len(), 2);
    assert_eq!(
        psql(&url, "SELECT directory || ':' || group_external_id || ':' || learner_external_id FROM group_members"),
        "people:G-A:1"
    );
    write("people");
    let out = env.run(&["sync"]);
    assert!(
        stdout(&out).contains("created 0, updated 0, deactivated 0, reactivated 0, held 0"),
        "{}",
        stdout(&out)
    );
}

/// A cluster of this test's own (its TLS settings are not for the others), stopped and
/// removed when dropped.
struct OwnCluster {
    dir: std::path::PathBuf,
    url: String,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let dir = std::env::temp_dir().join(format!(
            "learner-sync-pg-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        let out = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster"),
        )
        .arg("start")
        .arg(&dir)
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        OwnCluster { dir, url }
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster"),
        )
        .arg("stop")
        .arg(&self.dir)
        .output();
    }
}

#[test]
fn tls_with_a_private_ca_from_sslrootcert_is_verified_and_required() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cluster = OwnCluster::start();
    // A CA of the test's own, and a server certificate for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "learner-sync test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let data = cluster.dir.join("data");
    let owner = std::fs::metadata(&data).unwrap();
    for (name, text, mode) in [
        ("server.crt", server_cert.pem(), 0o644),
        ("server.key", server_key.serialize_pem(), 0o600),
    ] {
        let path = data.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).unwrap();
    }
    // TLS on, and TCP only over TLS.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    psql(&cluster.url, "ALTER SYSTEM SET ssl = on");
    psql(&cluster.url, "SELECT pg_reload_conf()");
    psql(&cluster.url, "CREATE DATABASE tls_store");
    let url = crate::support::postgres::with_database(&cluster.url, "tls_store");

    let env = Env::new();
    env.write("ca.pem", &ca_cert.pem());
    env.write("hr.csv", "external_id,user_name\n1,ada@x.io\n");
    let sync_with = |query: &str| {
        ConfigBuilder::new()
            .csv("hr", "hr.csv")
            .postgres(&format!("{url}?{query}"))
            .write(&env);
        env.run(&["sync"])
    };
    // Without the CA the server's certificate is not trusted.
    let out = sync_with("sslmode=require");
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.to_lowercase().contains("certificate"), "{all}");
    // Without TLS the server refuses.
    let out = sync_with("sslmode=disable");
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("no encryption"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(psql(&url, "SELECT to_regclass('learners') IS NULL"), "t");
    // With the CA (libpq's own spelling, a path beside the config): verified, synced.
    let out = sync_with("sslmode=verify-full&sslrootcert=ca.pem");
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(ids_active(&url), [("1".to_string(), true)]);
}
