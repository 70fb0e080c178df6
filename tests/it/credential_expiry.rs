//! `check` and the Entra app's credential expiry, through the real binary against the
//! Graph mock: the certificate file's notAfter, and a client secret's endDateTime from
//! the app registration (matched by the secret's first three characters), with a
//! warning 30 days before and a failure once expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;
use crate::support::graph_mock;

use common::{code, stdout, ConfigBuilder, Env};
use graph_mock::{user, GraphMock, TrustedCert};
use serde_json::json;

const SECRET: &str = "abc-the-client-secret-value";

fn env_for(mock: &GraphMock, credential: &str) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .entra("contoso", &mock.base(), &[])
        .dir_lines(credential)
        .write(&env);
    env
}

fn in_days(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

#[test]
fn a_client_secret_close_to_its_end_date_warns_and_an_expired_one_fails() {
    let mock = GraphMock::start(SECRET);
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    let env = env_for(&mock, r#"client_secret = { env = "CONTOSO_SECRET" }"#);
    let check = || env.run_with(&["check"], &[("CONTOSO_SECRET", SECRET)]);

    // Without Application.Read.All the expiry is not shown, and that is no fault.
    let out = check();
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    assert!(stdout(&out).contains("client secret: expiry not shown: the app registration is not readable (Application.Read.All)"), "{}", stdout(&out));

    // Another secret of the app ends sooner: only the one with our hint counts.
    mock.state().app_secrets = Some(vec![
        json!({"displayName": "old", "hint": "zzz", "endDateTime": in_days(2)}),
        json!({"displayName": "learner-sync", "hint": "abc", "endDateTime": in_days(12)}),
    ]);
    let out = check();
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "a warning does not fail check: {text}");
    assert!(
        text.contains("warn directory contoso (entra): client secret expires on"),
        "{text}"
    );
    assert!(
        text.contains("in 11 days") || text.contains("in 12 days"),
        "{text}"
    );
    assert!(text.contains("hint: add a new client secret"), "{text}");
    assert!(!text.contains(SECRET));

    mock.state().app_secrets = Some(vec![
        json!({"displayName": "learner-sync", "hint": "abc", "endDateTime": in_days(200)}),
    ]);
    let out = check();
    assert!(
        stdout(&out).contains("ok   directory contoso (entra): client secret valid until"),
        "{}",
        stdout(&out)
    );

    mock.state().app_secrets = Some(vec![
        json!({"displayName": "learner-sync", "hint": "abc", "endDateTime": in_days(-1)}),
    ]);
    let out = check();
    assert!(
        stdout(&out).contains("FAIL directory contoso (entra): client secret expired on"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_certificate_that_ends_within_30_days_warns() {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use sha2::Digest;
    let mock = GraphMock::start("unused-secret");
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
    let key_pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public pem");
    let pair = rcgen::KeyPair::from_pem(&key_pem).expect("rcgen key");
    let end = chrono::Utc::now() + chrono::Duration::days(20);
    use chrono::Datelike;
    let mut params = rcgen::CertificateParams::new(vec!["learner-sync-test".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
    let cert = params.self_signed(&pair).expect("cert");
    use base64::Engine as _;
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(cert.der().as_ref()));
    mock.state().cert = Some(TrustedCert {
        public_key_pem: public_pem,
        thumbprint,
    });
    let env = env_for(
        &mock,
        r#"certificate = { cert_file = "app.crt", key_file = "app.key" }"#,
    );
    env.write("app.crt", &cert.pem());
    env.write("app.key", &key_pem);
    let out = env.run(&["check"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(
        text.contains(&format!(
            "warn directory contoso (entra): certificate {}",
            env.path("app.crt").display()
        )) && text.contains(&format!("expires on {}", end.format("%Y-%m-%d"))),
        "{text}"
    );
    assert!(text.contains("hint: upload a new certificate"), "{text}");
}
