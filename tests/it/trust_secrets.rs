//! Secrets echoed by remotes (issue 14 item 5): a token endpoint that quotes the
//! request (the client secret, the signed assertion) and a Graph that quotes the
//! `Authorization` header, in a JSON error, a plain-text body and an HTML title. None
//! of it may reach stdout, stderr (text or JSON logs, at trace level), or any file the
//! run writes (the state DB with `runs.error`, the store), grepped as raw bytes. The
//! same for Google (a token endpoint quoting the assertion and the private key, a
//! Directory API quoting the access token) and a SCIM provider quoting the bearer token.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;
use crate::support::{google_mock, graph_mock, scim_mock};

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
    assert_nothing_leaks_from(what, env, &COMMANDS, secrets)
}

/// As `assert_nothing_leaks`, for these commands. Returns the runs' stored errors and
/// the actions' stored reasons.
fn assert_nothing_leaks_from(
    what: &str,
    env: &Env,
    commands: &[&[&str]],
    secrets: &dyn Fn() -> Vec<String>,
) -> Vec<String> {
    for args in commands {
        let out = env.run_with(
            args,
            &[
                ("CONTOSO_SECRET", SECRET),
                ("SCIM_TOKEN", SECRET),
                ("LEARNER_SYNC_LOG", "trace"),
                ("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1"),
            ],
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
        if ["config.toml", "app.key", "app.crt", "sa.json", "hr.csv"].contains(&name.as_str()) {
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
    let mut errors: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut stmt = conn.prepare("SELECT reason FROM actions").unwrap();
    let reasons: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    errors.extend(reasons);
    assert!(!errors.is_empty(), "{what}: the failures are recorded");
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

fn google_env(mock: &google_mock::GoogleMock) -> Env {
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    env.write(
        "config.toml",
        &format!(
            r#"[sync]
state_db = "state.db"

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "fabrikam"
kind = "google"
service_account_key = {{ file = "sa.json" }}
admin_email = "{admin}"
scope = "all"
directory_url = "{url}"
"#,
            admin = google_mock::ADMIN,
            url = mock.url()
        ),
    );
    env
}

/// Every PEM body line of the TEST-ONLY key, and 32-character windows of a JWT's
/// claims and signature (the header is public).
fn key_and_assertions(assertions: &[String]) -> Vec<String> {
    let mut out: Vec<String> = google_mock::TEST_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .flat_map(forms)
        .collect();
    for a in assertions {
        let (_, rest) = a.split_once('.').expect("a JWT");
        let chars: Vec<char> = rest.chars().collect();
        for w in chars.windows(32).step_by(8) {
            out.push(w.iter().collect());
        }
        out.push(a.clone());
    }
    out
}

#[test]
fn a_google_token_endpoint_echoing_the_assertion_and_the_key_leaks_them_nowhere() {
    // A refusal (400) and a failure retried until the loop gives up (503).
    for status in [400, 503] {
        let mock = google_mock::GoogleMock::start();
        mock.with(|s| {
            s.users = vec![google_mock::user("g1", "ada@fabrikam.example", "/")];
            s.echo_assertion = Some(status);
        });
        let env = google_env(&mock);
        let secrets = || key_and_assertions(&mock.with(|s| s.assertions.clone()));
        let errors = assert_nothing_leaks(&format!("token {status}"), &env, &secrets);
        assert!(
            mock.with(|s| s.assertions.len()) >= COMMANDS.len(),
            "{status}: assertions were sent"
        );
        assert!(
            errors.iter().any(|e| e.contains("bad assertion ***")),
            "{status}: the echo reached the error, masked: {errors:?}"
        );
    }
}

#[test]
fn a_directory_api_echoing_the_access_token_leaks_it_nowhere() {
    for status in [403, 503] {
        let mock = google_mock::GoogleMock::start();
        mock.with(|s| {
            s.users = vec![google_mock::user("g1", "ada@fabrikam.example", "/")];
            s.echo_bearer = Some(status);
        });
        let env = google_env(&mock);
        let secrets = || {
            let mut out = key_and_assertions(&mock.with(|s| s.assertions.clone()));
            // Tokens are `ya29.mock-N`: no issued token may show, whichever N.
            out.push("ya29.mock-".to_string());
            out
        };
        let errors = assert_nothing_leaks(&format!("directory {status}"), &env, &secrets);
        assert!(mock.with(|s| !s.issued.is_empty()), "tokens were issued");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("token *** may not read this")),
            "{status}: the echo reached the error, masked: {errors:?}"
        );
    }
}

#[test]
fn a_scim_provider_echoing_the_bearer_token_leaks_it_nowhere() {
    // Refused per user (400, stored as the action's reason), the token refused (401,
    // the run's error) and a failure retried until the loop gives up (503).
    for status in [400, 401, 503] {
        let mock = scim_mock::ScimMock::start(SECRET);
        mock.state().echo_authorization = Some(status);
        let env = Env::new();
        env.write(
            "config.toml",
            &format!(
                r#"[sync]
state_db = "state.db"

[store]
kind = "scim"
url = "{base}"
token = {{ env = "SCIM_TOKEN" }}
concurrency = 1

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#,
                base = mock.base()
            ),
        );
        env.write(
            "hr.csv",
            "external_id,user_name,email,given_name,family_name,department,active\n\
             E1,ada@x.io,ada@x.io,Ada,Lovelace,Sales,true\n",
        );
        let commands: [&[&str]; 2] = [&["sync"], &["--log-format", "json", "sync"]];
        let errors = assert_nothing_leaks_from(&format!("scim {status}"), &env, &commands, &|| {
            forms(SECRET)
        });
        assert!(
            mock.requests("POST")
                .iter()
                .all(|l| l.authorization.contains(SECRET)),
            "the token was sent"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("request with Authorization: Bearer *** was refused")),
            "{status}: the echo reached the error, masked: {errors:?}"
        );
    }
}
