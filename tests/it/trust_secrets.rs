//! Secrets echoed by remotes (issue 14 item 5): a token endpoint that quotes the
//! request (the client secret, the signed assertion) and a Graph that quotes the
//! `Authorization` header, in a JSON error, a plain-text body and an HTML title. None
//! of it may reach stdout, stderr (text or JSON logs, at trace level), or any file the
//! run writes (the state DB with `runs.error`, the store), grepped as raw bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;
use crate::support::graph_mock;

use common::{code, stderr, stdout, Env};
use graph_mock::{user, Echo, GraphMock, TrustedCert};

/// Characters that change when form-urlencoded or JSON-escaped, so that each form of
/// the echo is tried.
const SECRET: &str = "Echo+Secret/Value=&\"q\\1";

const ECHOES: [Echo; 3] = [Echo::JsonError, Echo::PlainText, Echo::HtmlTitle];

const COMMANDS: [&[&str]; 4] = [
    &["sync"],
    &["sync", "--full"],
    &["check"],
    &["--log-format", "json", "sync"],
];

fn env_for(mock: &GraphMock, credential: &str) -> Env {
    let env = Env::new();
    let base = mock.base();
    env.write(
        "config.toml",
        &format!(
            r#"[sync]
state_db = "state.db"

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "contoso"
kind = "entra"
tenant_id = "tenant-1"
client_id = "client-1"
{credential}
authority_url = "{base}"
graph_url = "{base}/v1.0"
"#
        ),
    );
    env
}

fn tenant(mock: &GraphMock) {
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
}

/// The forms an echo may carry `secret` in.
fn forms(secret: &str) -> Vec<String> {
    let urlencoded: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap();
    vec![
        secret.to_string(),
        urlencoded,
        json.trim_matches('"').to_string(),
    ]
}

/// Run every command; nothing it prints, and no file it leaves (but the config and the
/// key it was given), holds any of `secrets`. Returns the runs' stored errors.
fn assert_nothing_leaks(what: &str, env: &Env, secrets: &dyn Fn() -> Vec<String>) -> Vec<String> {
    for args in COMMANDS {
        let out = env.run_with(
            args,
            &[("CONTOSO_SECRET", SECRET), ("LEARNER_SYNC_LOG", "trace")],
        );
        assert_ne!(code(&out), 0, "{what} {args:?}: the echo fails the run");
        for s in secrets() {
            assert!(
                !stdout(&out).contains(&s),
                "{what} {args:?}: stdout holds {s:?}:\n{}",
                stdout(&out)
            );
            assert!(
                !stderr(&out).contains(&s),
                "{what} {args:?}: stderr holds {s:?}:\n{}",
                stderr(&out)
            );
        }
    }
    for path in files(env.dir.path()) {
        let name = path
            .strip_prefix(env.dir.path())
            .unwrap()
            .display()
            .to_string();
        if ["config.toml", "app.key", "app.crt"].contains(&name.as_str()) {
            continue;
        }
        let bytes = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for s in secrets() {
            assert!(!bytes.contains(&s), "{what}: {name} holds {s:?}");
        }
    }
    let conn = rusqlite::Connection::open_with_flags(
        env.path("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT error FROM runs WHERE error IS NOT NULL")
        .unwrap();
    let errors: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!errors.is_empty(), "{what}: the failed runs are recorded");
    errors
}

/// Every file under `dir`, at any depth.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_token_endpoint_echoing_the_client_secret_leaks_it_nowhere() {
    for echo in ECHOES {
        let mock = GraphMock::start(SECRET);
        tenant(&mock);
        mock.state().echo_token = Some(echo);
        let env = env_for(&mock, r#"client_secret = { env = "CONTOSO_SECRET" }"#);
        let errors = assert_nothing_leaks(&format!("{echo:?}"), &env, &|| forms(SECRET));
        // The echo did arrive, masked: the test sees what it is meant to.
        assert!(
            errors.iter().any(|e| e.contains("***")),
            "{echo:?}: {errors:?}"
        );
    }
}

#[test]
fn a_token_endpoint_echoing_the_client_assertion_leaks_it_nowhere() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use sha2::Digest;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    let pair = rcgen::KeyPair::from_pem(&key_pem).expect("rcgen key");
    let cert = rcgen::CertificateParams::new(vec!["learner-sync-test".to_string()])
        .expect("params")
        .self_signed(&pair)
        .expect("cert");
    use base64::Engine as _;
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(cert.der().as_ref()));
    let key_lines: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::to_string)
        .collect();
    for echo in ECHOES {
        let mock = GraphMock::start("unused-secret");
        tenant(&mock);
        mock.state().cert = Some(TrustedCert {
            public_key_pem: public_pem.clone(),
            thumbprint: thumbprint.clone(),
        });
        mock.state().echo_token = Some(echo);
        let env = env_for(
            &mock,
            r#"certificate = { cert_file = "app.crt", key_file = "app.key" }"#,
        );
        env.write("app.crt", &cert.pem());
        env.write("app.key", &key_pem);
        let secrets = || {
            let mut out = key_lines.clone();
            for a in mock.state().assertions.clone() {
                // The header is public (algorithm, thumbprint); the claims and the
                // signature are the credential: no 32 characters of them may show.
                let (_, rest) = a.split_once('.').expect("a JWT");
                let chars: Vec<char> = rest.chars().collect();
                for w in chars.windows(32).step_by(8) {
                    out.push(w.iter().collect());
                }
                out.push(a);
            }
            out
        };
        let errors = assert_nothing_leaks(&format!("{echo:?}"), &env, &secrets);
        assert!(
            mock.state().assertions.len() >= COMMANDS.len(),
            "{echo:?}: assertions were sent"
        );
        assert!(
            errors.iter().any(|e| e.contains("***")),
            "{echo:?}: {errors:?}"
        );
    }
}

#[test]
fn graph_echoing_the_access_token_leaks_it_nowhere() {
    for echo in ECHOES {
        let mock = GraphMock::start(SECRET);
        tenant(&mock);
        mock.state().echo_graph = Some(echo);
        let env = env_for(&mock, r#"client_secret = { env = "CONTOSO_SECRET" }"#);
        let secrets = || {
            let mut out = forms(SECRET);
            // Tokens are `mock-token-N`: no issued token may show, whichever N.
            out.push("mock-token-".to_string());
            out
        };
        let errors = assert_nothing_leaks(&format!("{echo:?}"), &env, &secrets);
        assert!(mock.state().tokens_issued >= 1);
        assert!(
            errors.iter().any(|e| e.contains("***")),
            "{echo:?}: the echo reached the error, masked: {errors:?}"
        );
    }
}
