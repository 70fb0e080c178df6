//! Where secrets come from, through the binary: `{ credential = "NAME" }` is read from
//! `$CREDENTIALS_DIRECTORY/NAME` (systemd's LoadCredential=) and sent, and a secret file
//! that is a FIFO, a device or larger than 1 MiB is refused with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "scim-Credential-Token.5b2e";

/// A SCIM endpoint on 127.0.0.1 that records each request's Authorization header and
/// answers 401, as a SCIM server does for a token it does not know.
struct Recorder {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            auth = value.trim().to_string();
                        }
                    }
                }
                record.lock().unwrap().push(auth);
                let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"401","detail":"unknown token"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Recorder { port, seen }
    }

    fn authorizations(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A config with one CSV directory and a SCIM store whose token is `token`.
fn config(dir: &Path, port: u16, token: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("hr.csv"), "external_id,user_name\n1,a@x.io\n").unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[sync]
state_db = "state.db"
[store]
kind = "scim"
url = "http://127.0.0.1:{port}/scim/v2"
token = {token}
[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#
        ),
    )
    .unwrap();
    path
}

/// `learner-sync check`, with CREDENTIALS_DIRECTORY set to `credentials` or unset.
/// A hang guard (not a speed test): a blocked read of a FIFO would never return.
fn check(config: &Path, credentials: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_learner-sync"));
    cmd.args(["check", "--config"])
        .arg(config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("LEARNER_SYNC_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = credentials {
        cmd.env("CREDENTIALS_DIRECTORY", dir);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("learner-sync check did not finish: blocked on a secret?");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_credential_is_read_from_credentials_directory_and_sent_as_the_bearer_token() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("scim-token"), format!("{TOKEN}\n")).unwrap();
    let scim = Recorder::start();
    let cfg = config(tmp.path(), scim.port, r#"{ credential = "scim-token" }"#);

    let out = check(&cfg, Some(&creds));
    let seen = scim.authorizations();
    assert!(
        !seen.is_empty(),
        "no request reached the store: {}",
        text(&out)
    );
    assert!(
        seen.iter().all(|a| a == &format!("Bearer {TOKEN}")),
        "{seen:?}"
    );
    assert!(!text(&out).contains(TOKEN), "the token was printed");
}

#[test]
fn without_credentials_directory_the_error_says_how_systemd_provides_it() {
    let tmp = tempfile::tempdir().unwrap();
    let scim = Recorder::start();
    let cfg = config(tmp.path(), scim.port, r#"{ credential = "scim-token" }"#);

    let out = check(&cfg, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("$CREDENTIALS_DIRECTORY is not set"), "{t}");
    assert!(t.contains("LoadCredential=scim-token:PATH"), "{t}");
    assert!(
        scim.authorizations().is_empty(),
        "a request went out without the token"
    );
}

#[test]
fn a_credential_the_unit_does_not_load_names_the_missing_loadcredential_line() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let scim = Recorder::start();
    let cfg = config(tmp.path(), scim.port, r#"{ credential = "scim-token" }"#);

    let out = check(&cfg, Some(&creds));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "{} does not exist; add LoadCredential=scim-token:PATH",
            creds.join("scim-token").display()
        )),
        "{t}"
    );
}

#[test]
fn a_credential_name_that_is_a_path_is_refused_at_load_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["../scim-token", "sub/scim-token", ".."] {
        let cfg = config(tmp.path(), 9, &format!(r#"{{ credential = "{name}" }}"#));
        let out = check(&cfg, Some(tmp.path()));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains("store.token"), "{t}");
        assert!(t.contains("a credential name is one file name"), "{t}");
    }
}

#[test]
fn a_fifo_as_secret_file_is_refused_at_once_instead_of_blocking_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("scim-token");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo(3) touches nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let scim = Recorder::start();
    let cfg = config(tmp.path(), scim.port, r#"{ file = "scim-token" }"#);

    let out = check(&cfg, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains(&format!("{} is a FIFO, not a regular file", fifo.display())),
        "{t}"
    );
    assert!(scim.authorizations().is_empty());
}

#[test]
fn a_device_as_secret_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let scim = Recorder::start();
    let cfg = config(tmp.path(), scim.port, r#"{ file = "/dev/zero" }"#);

    let out = check(&cfg, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("/dev/zero is a device, not a regular file"),
        "{}",
        text(&out)
    );
    assert!(scim.authorizations().is_empty());
}

#[test]
fn a_secret_file_over_1_mib_is_refused_and_one_of_1_mib_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let scim = Recorder::start();
    let cfg = config(tmp.path(), scim.port, r#"{ file = "scim-token" }"#);

    std::fs::write(tmp.path().join("scim-token"), vec![b'a'; 1024 * 1024 + 1]).unwrap();
    let out = check(&cfg, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("is larger than 1024 KiB"),
        "{}",
        text(&out)
    );
    assert!(scim.authorizations().is_empty());

    // At the limit it is read (and sent: the store refuses it, not the reader).
    std::fs::write(tmp.path().join("scim-token"), vec![b'a'; 1024 * 1024]).unwrap();
    let out = check(&cfg, None);
    assert!(!text(&out).contains("larger than"), "{}", text(&out));
    assert!(
        !text(&out).contains("cannot read secret file"),
        "{}",
        text(&out)
    );
}
