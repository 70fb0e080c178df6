//! Secrets never leave: every command, with known secret values in env vars and files,
//! must not print them, log them (text or JSON) or write them to the state DB or store.
//! Also: files holding secrets that other users can read draw a warning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{stderr, stdout, Env};

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
    let store = match store {
        "scim" => format!(
            "kind = \"scim\"\nurl = \"http://127.0.0.1:{port}/scim/v2\"\ntoken = {{ file = \"scim-token\" }}"
        ),
        _ => "kind = \"sqlite\"\npath = \"learners.db\"".to_string(),
    };
    env.write(
        "config.toml",
        &format!(
            r#"
[sync]
state_db = "state.db"
[store]
{store}
[[directory]]
name = "contoso"
kind = "entra"
tenant_id = "t"
client_id = "c"
client_secret = {{ env = "CONTOSO_SECRET" }}
authority_url = "http://127.0.0.1:{port}"
graph_url = "http://127.0.0.1:{port}/v1.0"
[[directory]]
name = "fabrikam"
kind = "google"
service_account_key = {{ file = "sa.json" }}
admin_email = "admin@fabrikam.example"
directory_url = "http://127.0.0.1:{port}"
[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#
        ),
    );
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
    assert!(
        err.contains("config: ") && err.contains("config.toml is readable by other users"),
        "{err}"
    );
    assert!(stdout(&out).contains("hr (csv)"), "status still works");
}
