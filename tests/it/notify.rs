//! Notifications through the real binary: each kind's body against receivers on
//! 127.0.0.1 (webhook, Slack and Teams shapes, email to a mock SMTP server), the
//! failure streak across separate one-shot runs, held deactivations with the approve
//! command, retries, a receiver that hangs, and secrets kept out of the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use crate::common::{code, stderr, stdout, ConfigBuilder, Env};
use crate::support::mock_server::MockServer;
use crate::support::smtp::SmtpMock;

const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";
const TOKEN: &str = "T0KEN-9f8e7d6c5b4a";

fn csv(ids: impl IntoIterator<Item = u32>) -> String {
    let mut s = HEADER.to_string();
    for id in ids {
        s.push_str(&format!(
            "E{id},user{id}@x.io,user{id}@x.io,Given{id},Family{id},Sales,true\n"
        ));
    }
    s
}

#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Statuses to answer, in order; 200 once they run out.
    statuses: Arc<Mutex<VecDeque<u16>>>,
    hits: Arc<Mutex<usize>>,
    hang: bool,
}

async fn receive(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    *r.hits.lock().unwrap() += 1;
    if r.hang {
        std::future::pending::<()>().await;
    }
    let status = r.statuses.lock().unwrap().pop_front().unwrap_or(200);
    if status < 300 {
        r.bodies.lock().unwrap().push(body);
    }
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    fn start(self) -> (Receiver, MockServer) {
        let app = axum::Router::new()
            .route("/hook/{token}", axum::routing::post(receive))
            .with_state(self.clone());
        (self, MockServer::start(app))
    }
    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
    fn hits(&self) -> usize {
        *self.hits.lock().unwrap()
    }
}

fn url(server: &MockServer) -> String {
    format!("{}/hook/{TOKEN}", server.base())
}

/// A CSV directory `hr` (its file `hr.csv`), at most `max` deactivations a run, and
/// these `[[notify]]` tables (TOML as written).
fn setup(max: u32, notify: &str) -> Env {
    let env = Env::new();
    let mut text = ConfigBuilder::new()
        .guards(max, 100)
        .csv("hr", "hr.csv")
        .build();
    text.push('\n');
    text.push_str(notify);
    env.write("config.toml", &text);
    env
}

fn sync(env: &Env, envs: &[(&str, &str)]) -> (i32, String) {
    let out = env.run_with(&["sync"], envs);
    (code(&out), stderr(&out))
}

/// Three users, then two of them gone: with max_deactivations = 1 the run is held.
fn hold(env: &Env, envs: &[(&str, &str)]) -> (i32, String) {
    env.write("hr.csv", &csv(1..=3));
    let (c, err) = sync(env, envs);
    assert_eq!(c, 0, "{err}");
    env.write("hr.csv", &csv(1..=1));
    sync(env, envs)
}

#[test]
fn webhook_streak_notifies_at_the_nth_failure_once_and_once_on_recovery() {
    let (rx, server) = Receiver::default().start();
    let env = setup(
        50,
        "[[notify]]\nkind = \"webhook\"\nurl = { env = \"HOOK\" }\n",
    );
    let hook = url(&server);
    let envs = [("HOOK", hook.as_str())];
    // No hr.csv: every run fails, each a separate process (the timer's flavour).
    for _ in 0..2 {
        let (c, err) = sync(&env, &envs);
        assert_eq!(c, 3, "a failed run: {err}");
    }
    assert!(rx.bodies().is_empty(), "N-1 failures: nothing");
    sync(&env, &envs);
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let b = &bodies[0];
    assert_eq!(b["source"], "learner-sync");
    assert_eq!(b["event"], "failing");
    assert_eq!(b["directory"], "hr");
    assert_eq!(b["consecutive_failures"], 3);
    assert!(b["error"].as_str().unwrap().contains("hr.csv"), "{b}");
    assert!(
        b["title"].as_str().unwrap().contains("3 runs in a row"),
        "{b}"
    );
    assert!(b["time"].as_str().unwrap().ends_with('Z'), "{b}");
    sync(&env, &envs);
    assert_eq!(rx.bodies().len(), 1, "N+1: nothing more");
    env.write("hr.csv", &csv(1..=2));
    let (c, err) = sync(&env, &envs);
    assert_eq!(c, 0, "{err}");
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[1]["event"], "recovered");
    assert_eq!(bodies[1]["consecutive_failures"], 4);
    sync(&env, &envs);
    assert_eq!(rx.bodies().len(), 2, "a second good run: nothing");
}

#[test]
fn held_deactivations_reach_slack_teams_and_email_with_the_approve_command() {
    let (slack, slack_server) = Receiver::default().start();
    let (teams, teams_server) = Receiver::default().start();
    let smtp = SmtpMock::start(false);
    let env = setup(
        1,
        &format!(
            "[[notify]]\nkind = \"slack\"\nurl = {{ env = \"SLACK\" }}\n\n\
             [[notify]]\nkind = \"teams\"\nurl = {{ env = \"TEAMS\" }}\nevents = [\"held\"]\ndirectories = [\"hr\"]\n\n\
             [[notify]]\nkind = \"email\"\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"learner-sync@x.io\"\nto = [\"admins@x.io\"]\nusername = \"relay\"\npassword = {{ file = \"smtp.pass\" }}\n",
            smtp.port()
        ),
    );
    env.write("smtp.pass", "s3cret-pa55\n");
    let (s, t) = (url(&slack_server), url(&teams_server));
    let envs = [("SLACK", s.as_str()), ("TEAMS", t.as_str())];
    let (c, err) = hold(&env, &envs);
    assert_eq!(c, 4, "held: {err}");
    // The password file is world-readable (0644): the same warning as for other secrets.
    assert!(err.contains("notify[2].password: "), "{err}");
    assert!(err.contains("readable by other users"), "{err}");
    let approve = format!(
        "learner-sync --config {} approve hr",
        env.config().display()
    );

    let s = slack.bodies();
    assert_eq!(s.len(), 1, "{s:?}");
    let obj = s[0].as_object().unwrap();
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["text"],
        "Slack's shape: {{\"text\"}}"
    );
    let text = s[0]["text"].as_str().unwrap();
    assert!(text.contains("2 deactivations held in hr"), "{text}");
    assert!(text.contains(&approve), "{text}");

    let t = teams.bodies();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["type"], "message");
    let a = &t[0]["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(a["content"]["type"], "AdaptiveCard");
    assert!(a["content"]["version"].as_str().unwrap().starts_with("1."));
    let blocks = a["content"]["body"].as_array().unwrap();
    assert!(blocks.iter().all(|b| b["type"] == "TextBlock"));
    assert!(
        blocks.iter().any(|b| b["text"] == approve.as_str()),
        "{blocks:?}"
    );

    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    assert_eq!(
        m.login,
        Some(("relay".to_string(), "s3cret-pa55".to_string()))
    );
    assert_eq!(m.from, "learner-sync@x.io");
    assert_eq!(m.to, ["admins@x.io"]);
    assert!(
        m.data.contains("Subject: learner-sync: changes held in hr"),
        "{}",
        m.data
    );
    assert!(m.data.contains(&approve), "{}", m.data);

    // Still held at the next run: no second notification.
    let (c, _) = sync(&env, &envs);
    assert_eq!(c, 4);
    assert_eq!(
        (
            slack.bodies().len(),
            teams.bodies().len(),
            smtp.mails().len()
        ),
        (1, 1, 1)
    );
}

#[test]
fn a_receiver_answering_500_then_200_gets_the_notification_on_the_retry() {
    let rx = Receiver::default();
    rx.statuses.lock().unwrap().push_back(500);
    let (rx, server) = rx.start();
    let env = setup(
        1,
        "[[notify]]\nkind = \"webhook\"\nurl = { env = \"HOOK\" }\nevents = [\"held\"]\n",
    );
    let hook = url(&server);
    let (c, err) = hold(&env, &[("HOOK", hook.as_str())]);
    assert_eq!(c, 4, "{err}");
    assert_eq!(rx.hits(), 2, "one 500, then the retry");
    assert_eq!(rx.bodies().len(), 1);
    assert_eq!(rx.bodies()[0]["event"], "held");
    assert!(err.contains("notification sent"), "{err}");
}

#[test]
fn a_receiver_that_hangs_leaves_the_run_and_its_exit_code_as_they_are() {
    let (rx, server) = Receiver {
        hang: true,
        ..Receiver::default()
    }
    .start();
    let env = setup(
        1,
        "[[notify]]\nkind = \"webhook\"\nurl = { env = \"HOOK\" }\n",
    );
    let hook = url(&server);
    let envs = [
        ("HOOK", hook.as_str()),
        ("LEARNER_SYNC_TEST_NOTIFY_FLUSH_MS", "300"),
    ];
    let (c, err) = hold(&env, &envs);
    assert_eq!(c, 4, "the held run's exit code: {err}");
    assert_eq!(rx.hits(), 1);
    assert!(
        err.contains("notifications not delivered before exit"),
        "{err}"
    );
    // The run itself was recorded in full.
    let status = stdout(&env.run(&["status"]));
    assert!(status.contains("held:      2 deactivations"), "{status}");
}

#[test]
fn webhook_urls_and_smtp_passwords_never_reach_the_log() {
    // 404: not retried, logged as not delivered. 535: the login refused.
    let rx = Receiver::default();
    rx.statuses.lock().unwrap().extend([404]);
    let (_rx, server) = rx.start();
    let smtp = SmtpMock::start(true);
    let env = setup(
        1,
        &format!(
            "[[notify]]\nkind = \"webhook\"\nurl = {{ env = \"HOOK\" }}\n\n\
             [[notify]]\nkind = \"email\"\nserver = \"localhost\"\nport = {}\ntls = \"none\"\n\
             from = \"ls@x.io\"\nto = [\"a@x.io\"]\nusername = \"relay\"\npassword = {{ env = \"SMTP_PASS\" }}\n",
            smtp.port()
        ),
    );
    let hook = url(&server);
    let envs = [
        ("HOOK", hook.as_str()),
        ("SMTP_PASS", "pa55-w0rd-xyz"),
        ("LEARNER_SYNC_LOG", "debug"),
    ];
    let (c, err) = hold(&env, &envs);
    assert_eq!(c, 4, "{err}");
    assert!(err.contains("notification not delivered"), "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    assert_eq!(smtp.mails().len(), 0);
    assert_eq!(
        smtp.logins.lock().unwrap().len(),
        1,
        "one login, refused, not retried"
    );
    assert!(
        !err.contains(TOKEN),
        "the webhook's token in the log: {err}"
    );
    assert!(
        !err.contains("pa55-w0rd-xyz"),
        "the SMTP password in the log: {err}"
    );
    let out = env.run_with(&["check"], &envs);
    assert!(
        stdout(&out).contains("ok   notify[0] (webhook)"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(TOKEN) && !stderr(&out).contains(TOKEN));
}

#[test]
fn check_names_a_notification_whose_secret_is_missing_or_whose_url_is_not_https() {
    let env = setup(
        50,
        "[[notify]]\nkind = \"slack\"\nurl = { env = \"SLACK\" }\n",
    );
    env.write("hr.csv", &csv(1..=2));
    let out = env.run_with(&["check"], &[]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("FAIL notify[0] (slack): url: environment variable SLACK is not set"),
        "{}",
        stdout(&out)
    );
    let secret = format!("http://hooks.example.org/services/{TOKEN}");
    let out = env.run_with(&["check"], &[("SLACK", secret.as_str())]);
    assert!(
        stdout(&out).contains("must be https://"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains(TOKEN), "{}", stdout(&out));
}

/// Poll until `probe` holds, for at most 90 s (never a fixed sleep).
fn wait_for(what: &str, mut probe: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !probe() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn the_daemon_continues_a_streak_a_one_shot_run_began_and_notifies_the_recovery() {
    let (rx, server) = Receiver::default().start();
    let env = Env::new();
    let mut text = ConfigBuilder::new()
        .sync("schedule", "\"every 1s\"")
        .csv("hr", "hr.csv")
        .build();
    text.push_str(
        "\n[[notify]]\nkind = \"webhook\"\nurl = { env = \"HOOK\" }\nafter_failures = 2\n",
    );
    env.write("config.toml", &text);
    let hook = url(&server);
    // One failure recorded by a one-shot run, before the daemon starts.
    let (c, err) = sync(&env, &[("HOOK", hook.as_str())]);
    assert_eq!(c, 3, "{err}");
    assert!(rx.bodies().is_empty());
    let log = std::fs::File::create(env.path("daemon.log")).unwrap();
    let mut daemon = env
        .command(&["daemon"], &[("HOOK", hook.as_str())])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the daemon");
    wait_for("the failing notification", || !rx.bodies().is_empty());
    let first = rx.bodies()[0].clone();
    assert_eq!(first["event"], "failing");
    assert_eq!(
        first["consecutive_failures"], 2,
        "the streak survived the restart"
    );
    env.write("hr.csv.tmp", &csv(1..=2));
    std::fs::rename(env.path("hr.csv.tmp"), env.path("hr.csv")).unwrap();
    wait_for("the recovered notification", || rx.bodies().len() >= 2);
    let _ = daemon.kill();
    let _ = daemon.wait();
    let bodies = rx.bodies();
    assert_eq!(bodies[1]["event"], "recovered", "{bodies:?}");
    assert_eq!(
        bodies.iter().filter(|b| b["event"] == "failing").count(),
        1,
        "{bodies:?}"
    );
}

#[test]
fn starttls_required_sends_no_password_to_a_server_that_does_not_offer_it() {
    let smtp = SmtpMock::start(false);
    let env = setup(
        1,
        &format!(
            "[[notify]]\nkind = \"email\"\nserver = \"127.0.0.1\"\nport = {}\n\
             from = \"ls@x.io\"\nto = [\"a@x.io\"]\nusername = \"relay\"\npassword = {{ env = \"SMTP_PASS\" }}\n",
            smtp.port()
        ),
    );
    let (c, err) = hold(&env, &[("SMTP_PASS", "pa55-w0rd-xyz")]);
    assert_eq!(c, 4, "{err}");
    assert!(err.contains("notification not delivered"), "{err}");
    assert!(smtp.mails().is_empty());
    assert!(
        smtp.logins.lock().unwrap().is_empty(),
        "the password went over plain SMTP"
    );
    assert!(!err.contains("pa55-w0rd-xyz"), "{err}");
}
