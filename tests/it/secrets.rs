//! Secrets never leave: every command, with known secret values in env vars and files,
//! must not print them, log them (text or JSON) or write them to the state DB or store.
//! Also: files holding secrets that other users can read draw a warning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::google_mock;
use crate::support::graph_mock;
use crate::support::scim_mock;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{stderr, stdout, ConfigBuilder, Env};
use google_mock::GoogleMock;
use graph_mock::GraphMock;
use scim_mock::ScimMock;

const ENTRA_SECRET: &str = "entra-Secret~Value.7Qx9";
const SCIM_TOKEN: &str = "scim-bearer-Token-3f8a1c";
const KEY_MATERIAL: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjSECRETKEYMATERIAL";

/// A loopback port with nothing listening: every request is refused at once.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn setup(store: &str) -> Env {
    let env = Env::new();
    let port = closed_port();
    env.write("hr.csv", "external_id,user_name\n1,a@x.io\n2,b@x.io\n");
    env.write("scim-token", &format!("{SCIM_TOKEN}\n"));
    env.write(
        "sa.json",
        &format!(
            r#"{{"type":"service_account","project_id":"p","private_key_id":"k1","private_key":"-----BEGIN PRIVATE KEY-----\n{KEY_MATERIAL}\n-----END PRIVATE KEY-----\n","client_email":"sync@p.iam.gserviceaccount.com","client_id":"123","token_uri":"http://127.0.0.1:{port}/token"}}"#
        ),
    );
    let remote = format!("http://127.0.0.1:{port}");
    let config = match store {
        "scim" => {
            ConfigBuilder::new().scim(&format!("{remote}/scim/v2"), r#"{ file = "scim-token" }"#)
        }
        _ => ConfigBuilder::new(),
    };
    config
        .entra(
            "contoso",
            &remote,
            &[("client_secret", r#"{ env = "CONTOSO_SECRET" }"#)],
        )
        .dir("tenant_id", r#""t""#)
        .dir("client_id", r#""c""#)
        .google("fabrikam", &remote, "sa.json", "admin@fabrikam.example")
        .csv("hr", "hr.csv")
        .write(&env);
    for f in ["config.toml", "scim-token", "sa.json"] {
        std::fs::set_permissions(env.path(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    env
}

fn assert_clean(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for secret in [ENTRA_SECRET, SCIM_TOKEN, KEY_MATERIAL] {
        assert!(!text.contains(secret), "{what} contains a secret:\n{text}");
    }
}

#[test]
fn no_command_prints_logs_or_stores_a_secret() {
    for store in ["sqlite", "scim"] {
        let env = setup(store);
        let commands: &[&[&str]] = &[
            &["check"],
            &["sync", "--dry-run"],
            &["sync"],
            &["sync", "--full"],
            &["--log-format", "json", "sync"],
            &["--log-format", "json", "check"],
            &["status"],
            &["status", "--json"],
            &["history"],
            &["history", "--json"],
            &["approve", "hr"],
        ];
        for args in commands {
            let out = env.run_with(
                args,
                &[
                    ("CONTOSO_SECRET", ENTRA_SECRET),
                    ("LEARNER_SYNC_LOG", "trace"),
                ],
            );
            assert_clean(&format!("{store} {args:?} stdout"), &out.stdout);
            assert_clean(&format!("{store} {args:?} stderr"), &out.stderr);
        }
        for db in ["state.db", "learners.db"] {
            if let Ok(bytes) = std::fs::read(env.path(db)) {
                assert_clean(&format!("{store} {db}"), &bytes);
            }
        }
    }
}

#[test]
fn files_with_secrets_readable_by_others_draw_a_warning() {
    let env = setup("sqlite");
    let out = env.run_with(&["status"], &[("CONTOSO_SECRET", ENTRA_SECRET)]);
    assert!(
        !stderr(&out).contains("readable by other users"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(env.path("sa.json"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        env.path("config.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = env.run_with(&["status"], &[("CONTOSO_SECRET", ENTRA_SECRET)]);
    let err = stderr(&out);
    assert!(
        err.contains("fabrikam.service_account_key:")
            && err.contains("sa.json is readable by other users (mode 0644)"),
        "{err}"
    );
    // The config holds references to secrets, never secrets (issue 19 item 6).
    assert!(
        !err.contains("config.toml is readable by other users"),
        "{err}"
    );
    assert!(stdout(&out).contains("hr (csv)"), "status still works");
}

/// `runs` finished `ok` per directory, from the state DB (0 while it does not exist).
fn ok_runs(env: &Env, directory: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        env.path("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    conn.query_row(
        "SELECT COUNT(*) FROM runs WHERE directory = ?1 AND outcome = 'ok'",
        [directory],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The refused-connection test above never sends a secret anywhere. Here every secret
/// really travels (client secret and JWT to the token endpoints, bearer tokens to Graph,
/// the Directory API and SCIM) over several daemon runs at trace level, and then the
/// logs, /metrics, /healthz, the state DB and the SCIM mirror are searched for them and
/// for the access tokens the mocks issued.
#[test]
fn a_daemon_talking_to_live_remotes_leaks_no_secret_or_token_anywhere() {
    let graph = GraphMock::start(ENTRA_SECRET);
    graph.add_user(graph_mock::user(
        "u1",
        "ada@contoso.test",
        "Ada",
        "Lovelace",
    ));
    graph.add_user(graph_mock::user("u2", "bob@contoso.test", "Bob", "Builder"));
    let google = GoogleMock::start();
    google.with(|s| s.users = vec![google_mock::user("101", "cy@fabrikam.example", "/")]);
    let scim = ScimMock::start(SCIM_TOKEN);

    let env = Env::new();
    env.write("sa.json", &google.key_json());
    env.write("scim-token", &format!("{SCIM_TOKEN}\n"));
    env.write(
        "config.toml",
        &format!(
            r#"
[sync]
state_db = "state.db"
schedule = "every 1s"
[daemon]
listen = "127.0.0.1:0"
[store]
kind = "scim"
url = "{scim}"
token = {{ file = "scim-token" }}
[[directory]]
name = "contoso"
kind = "entra"
tenant_id = "tenant-1"
client_id = "client-1"
client_secret = {{ env = "CONTOSO_SECRET" }}
authority_url = "{graph}"
graph_url = "{graph}/v1.0"
[[directory]]
name = "fabrikam"
kind = "google"
service_account_key = {{ file = "sa.json" }}
admin_email = "{admin}"
directory_url = "{google}"
"#,
            scim = scim.base(),
            graph = graph.base(),
            google = google.url(),
            admin = google_mock::ADMIN,
        ),
    );
    for f in ["config.toml", "scim-token", "sa.json"] {
        std::fs::set_permissions(env.path(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let log = env.path("daemon.log");
    let mut daemon = Command::new(common::bin())
        .args(["--log-format", "json", "daemon", "--config"])
        .arg(env.config())
        .env("CONTOSO_SECRET", ENTRA_SECRET)
        .env("LEARNER_SYNC_LOG", "trace")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    // Several runs each, so that cached tokens are reused and renewed paths are logged.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ok_runs(&env, "contoso") < 2 || ok_runs(&env, "fabrikam") < 2 {
        let text = std::fs::read_to_string(&log).unwrap();
        let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        assert!(
            Instant::now() < deadline,
            "no two good runs per directory; the log ends:\n{tail}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let at = text.find("127.0.0.1:").expect("listen address in the log") + "127.0.0.1:".len();
    let port: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("directory=\"contoso\""),
        "the scrape is real: {metrics}"
    );
    let health = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"))
        .unwrap()
        .text()
        .unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(daemon.wait().unwrap().success());
    assert_eq!(scim.state().users.len(), 3, "every learner reached SCIM");

    let tokens: Vec<String> = (1..=graph.state().tokens_issued)
        .map(|n| format!("mock-token-{n}"))
        .chain(google.with(|s| s.issued.clone()))
        .collect();
    assert!(tokens.len() >= 2, "both token endpoints issued tokens");
    let key_line = google_mock::TEST_KEY_PEM.lines().nth(3).unwrap();
    let log = std::fs::read(&log).unwrap();
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("the daemon log".into(), log),
        ("/metrics".into(), metrics.into_bytes()),
        ("/healthz".into(), health.into_bytes()),
    ];
    for db in ["state.db", "state.db.scim-mirror.db"] {
        places.push((db.into(), std::fs::read(env.path(db)).unwrap()));
    }
    for (what, bytes) in &places {
        assert_clean(what, bytes);
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(key_line), "{what} holds key material");
        for t in &tokens {
            let line = text.lines().find(|l| l.contains(t.as_str()));
            assert!(line.is_none(), "{what} holds the token {t}: {line:?}");
        }
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Start a daemon on a CSV directory as `uid` (None: as this process), let it finish
/// one run, stop it and return its log.
fn daemon_log_as(uid: Option<u32>) -> String {
    let env = Env::new();
    env.write("hr.csv", "external_id,user_name\n1,a@x.io\n");
    env.write(
        "config.toml",
        "[sync]\nstate_db = \"state.db\"\n[store]\nkind = \"sqlite\"\npath = \"learners.db\"\n\
         [[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n",
    );
    let mut cmd = Command::new(common::bin());
    cmd.args(["daemon", "--config"])
        .arg(env.config())
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(env.path("daemon.log")).unwrap());
    if let Some(uid) = uid {
        // The unprivileged user must reach the folder and its files.
        for entry in std::fs::read_dir(env.dir.path()).unwrap() {
            std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(uid)).unwrap();
        }
        std::os::unix::fs::chown(env.dir.path(), Some(uid), Some(uid)).unwrap();
        cmd.uid(uid).gid(uid);
    }
    let mut daemon = cmd.spawn().unwrap();
    wait_until("the first run", || ok_runs(&env, "hr") >= 1);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(daemon.wait().unwrap().success());
    std::fs::read_to_string(env.path("daemon.log")).unwrap()
}

#[test]
fn the_daemon_warns_when_it_runs_as_root_and_only_then() {
    const WARNING: &str = "the daemon is running as root";
    let own = daemon_log_as(None);
    assert_eq!(own.contains(WARNING), euid() == 0, "{own}");
    if euid() != 0 {
        eprintln!("not root: the root case is covered only where the tests run as root (CI)");
        return;
    }
    let nobody = daemon_log_as(Some(65534));
    assert!(nobody.contains("daemon started"), "{nobody}");
    assert!(!nobody.contains(WARNING), "{nobody}");
}
