//! Network faults on every remote, through the real binary: a fault-injecting proxy
//! (tests/it/support/fault_proxy.rs) sits between learner-sync and the mocks of Graph +
//! the Entra login, the Google token endpoint + Directory API, and a SCIM provider.
//!
//! Each cell of the fault x remote table: a clean run fills the store; the directory
//! then changes (six users move department, one joins); the faulted run must either
//! retry and apply exactly that change (exit 0), or fail the directory cleanly (exit 3,
//! an error naming the remote and the fault in plain words, store and state as they
//! were, the Entra deltaLink not advanced). Then the fault is removed and the next run
//! completes. Never a deactivation, a panic, or a secret in the output.
//!
//! Each test runs one fault on every remote at once (threads; every cell has its own
//! mocks, proxy and ports) so the file stays fast on a small machine. Graph runs
//! twice: a full re-read and an incremental delta round. A cell's outcome is printed
//! as a `MATRIX | fault | remote | outcome` line (`-- --nocapture` shows them), and
//! `NETWORK_FAULTS_VERBOSE=1` prints each faulted run's output and action log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::fault_proxy;
use crate::support::google_mock;
use crate::support::graph_mock;
use crate::support::scim_mock;

use std::process::Output;
use std::time::{Duration, Instant};

use axum::http::Method;
use common::config_builder::q;
use common::{code, sql, stderr, stdout, ConfigBuilder, Env};
use fault_proxy::{Fault, FaultProxy, Rule, When};
use google_mock::GoogleMock;
use graph_mock::GraphMock;
use scim_mock::{ScimMock, ENTERPRISE};
use serde_json::json;

const ENTRA_SECRET: &str = "entra-s3cr3t-value-never-printed";
const SCIM_TOKEN: &str = "scim-token-5d1e0c2a-never-printed";
/// Users in the tenant before the change; the change adds one more.
const USERS: u32 = 30;
/// Users whose department changes between the clean and the faulted run.
const MOVED: u32 = 6;
/// The client's timeout for one request in the slow-server cells; the server
/// answers after `SLOW`. Other cells allow 30 s (80 MiB through a debug build).
const SHORT_TIMEOUT: &str = "2s";
const SLOW: Duration = Duration::from_secs(5);
/// Bigger than `learner_sync::http::MAX_RESPONSE_BYTES` (64 MiB).
const OVERSIZED: u64 = 80 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    /// Microsoft Graph (`graph_url`), the faulted run re-reading everything (`--full`):
    /// a listing cut short there could deactivate the users of the pages not read.
    GraphApi,
    /// Microsoft Graph, the faulted run an incremental delta round from the stored
    /// deltaLink (seven changes over four pages).
    GraphDelta,
    /// The Entra token endpoint (`authority_url`).
    EntraToken,
    /// The Google token endpoint (`token_url`).
    GoogleToken,
    /// The Google Directory API (`directory_url`).
    GoogleDirectory,
    /// The SCIM learner store (`[store] url`), fed by a CSV directory.
    Scim,
}

const REMOTES: [Remote; 6] = [
    Remote::GraphApi,
    Remote::GraphDelta,
    Remote::EntraToken,
    Remote::GoogleToken,
    Remote::GoogleDirectory,
    Remote::Scim,
];

impl Remote {
    fn directory(self) -> &'static str {
        match self {
            Remote::GraphApi | Remote::GraphDelta | Remote::EntraToken => "contoso",
            Remote::GoogleToken | Remote::GoogleDirectory => "fabrikam",
            Remote::Scim => "hr",
        }
    }

    /// The requests a one-shot fault hits: (path prefix, method, which one). For a
    /// listing, its second page, so that a half-read listing is possible.
    fn one_shot(self) -> (&'static str, Option<Method>, u32) {
        match self {
            Remote::GraphApi | Remote::GraphDelta => ("/v1.0/users", None, 2),
            Remote::EntraToken => ("/tenant-1/oauth2/v2.0/token", None, 1),
            Remote::GoogleToken => ("/token", None, 1),
            Remote::GoogleDirectory => ("/admin/directory/v1/users", None, 2),
            // The answer to a create: the provider made the user, the client may not know.
            Remote::Scim => ("/Users", Some(Method::POST), 1),
        }
    }

    /// The requests a storm hits: everything this remote serves.
    fn storm_prefix(self) -> &'static str {
        match self {
            Remote::GraphApi | Remote::GraphDelta => "/v1.0/",
            Remote::EntraToken => "/tenant-1/oauth2/",
            Remote::GoogleToken => "/token",
            Remote::GoogleDirectory => "/admin/directory/v1/",
            Remote::Scim => "/",
        }
    }

    /// Words of which at least one must name this remote in a failure's stderr.
    fn names(self) -> &'static [&'static str] {
        match self {
            // Graph errors name the path read (/v1.0/users/delta).
            Remote::GraphApi | Remote::GraphDelta => &["graph", "/v1.0/"],
            Remote::EntraToken => &["token endpoint"],
            Remote::GoogleToken => &["token endpoint"],
            Remote::GoogleDirectory => &["directory api", "users.list"],
            Remote::Scim => &["scim", "learner store"],
        }
    }
}

/// Where the fault is injected.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// Nothing listens on the remote's port (its proxy is paused): connecting is refused.
    Refused,
    /// One request (see [`Remote::one_shot`]).
    Once,
    /// Every request of the remote, as `When` says.
    Storm(When),
}

/// What the faulted run must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Retry (or tolerate) and apply the change: exit 0.
    Success,
    /// Fail the directory cleanly: exit 3.
    CleanFailure,
    /// Either of the two, each checked in full.
    Either,
}

struct Cell {
    target: Target,
    fault: Option<Fault>,
    expect: Expect,
    /// On a failure, stderr must hold one word of each group (lowercased).
    words: &'static [&'static [&'static str]],
    /// `[sync] request_timeout`.
    timeout: &'static str,
}

impl Cell {
    fn new(target: Target, fault: Option<Fault>, expect: Expect) -> Cell {
        Cell {
            target,
            fault,
            expect,
            words: &[],
            timeout: "30s",
        }
    }

    fn words(self, words: &'static [&'static [&'static str]]) -> Cell {
        Cell { words, ..self }
    }
}

/// The whole cell: returns what happened, for the matrix in the test output.
fn run_cell(remote: Remote, cell: &Cell) -> String {
    let rig = Rig::start(remote, cell.timeout);

    let out = rig.sync(false);
    rig.assert_sound(&out);
    assert_eq!(code(&out), 0, "{remote:?}: clean run\n{}", both(&out));
    let initial = rig.store();
    assert_eq!(
        initial,
        expected(remote, false),
        "{remote:?}: clean run store"
    );

    rig.change_directory();
    let before_store = rig.store();
    let before_state = rig.state();
    let before_cursor = rig.cursor();

    match cell.target {
        Target::Refused => rig.proxy.pause(),
        Target::Once => {
            let (prefix, method, n) = remote.one_shot();
            let mut rule = Rule::new(prefix, When::Nth(n), cell.fault.clone().expect("fault"));
            if let Some(m) = method {
                rule = rule.method(m);
            }
            rig.proxy.add(rule);
        }
        Target::Storm(when) => rig.proxy.add(Rule::new(
            remote.storm_prefix(),
            when,
            cell.fault.clone().expect("fault"),
        )),
    }
    rig.proxy.clear_log();
    if let Some(s) = &rig.sibling {
        s.clear_log();
    }

    let started = Instant::now();
    let out = rig.sync(true);
    let took = started.elapsed();
    rig.assert_sound(&out);
    if cell.fault.is_some() {
        assert!(
            rig.proxy.injected() > 0,
            "{remote:?}: the fault was never injected; proxy logs:\n{}",
            rig.summary()
        );
    }
    let after = rig.store();
    assert_no_deactivation(remote, &before_store, &after);
    if std::env::var_os("NETWORK_FAULTS_VERBOSE").is_some() {
        println!(
            "=== {remote:?} {:?}, faulted run:\n{}",
            cell.fault,
            both(&out)
        );
        println!(
            "actions: {:?}\nruns: {:?}",
            sql(&rig.env, "state.db", "SELECT external_id, action, reason FROM actions WHERE run_id = (SELECT MAX(run_id) FROM actions)"),
            sql(&rig.env, "state.db", "SELECT id, outcome, created, updated, failed, error FROM runs ORDER BY id DESC LIMIT 1")
        );
    }
    let err = stderr(&out).to_lowercase();
    let both = |out: &Output| format!("{}\nproxy logs:\n{}", both(out), rig.summary());
    let outcome = match code(&out) {
        0 => {
            assert_ne!(
                cell.expect,
                Expect::CleanFailure,
                "{remote:?}: the faulted run should have failed\n{}",
                both(&out)
            );
            assert_eq!(
                after,
                expected(remote, true),
                "{remote:?}: store after retry\n{}",
                both(&out)
            );
            format!("succeeded ({} faulted answers)", rig.proxy.injected())
        }
        3 => {
            assert_ne!(
                cell.expect,
                Expect::Success,
                "{remote:?}: the faulted run should have retried and succeeded\n{}",
                both(&out)
            );
            assert!(
                remote.names().iter().any(|w| err.contains(w)),
                "{remote:?}: stderr does not name the remote ({:?})\n{}",
                remote.names(),
                both(&out)
            );
            for group in cell.words {
                assert!(
                    group.iter().any(|w| mentions(&err, w)),
                    "{remote:?}: stderr does not say what went wrong (one of {group:?})\n{}",
                    both(&out)
                );
            }
            if remote == Remote::Scim {
                // Requests sent before the fault did land: no rollback on a remote
                // store. What is there is either the old or the new value.
                rig.assert_scim_partial(&before_store, &after);
            } else {
                assert_eq!(after, before_store, "{remote:?}: store changed on failure");
                assert_eq!(rig.state(), before_state, "{remote:?}: state changed");
            }
            assert_eq!(
                rig.cursor(),
                before_cursor,
                "{remote:?}: the stored deltaLink advanced on a failed run"
            );
            format!("clean failure: {}", error_line(&out, remote))
        }
        other => panic!("{remote:?}: exit {other}\n{}", both(&out)),
    };

    // The fault goes away: the next run completes.
    rig.proxy.clear();
    rig.proxy.resume();
    let out = rig.sync(true);
    rig.assert_sound(&out);
    assert_eq!(
        code(&out),
        0,
        "{remote:?}: run after the fault\n{}",
        both(&out)
    );
    let fin = rig.store();
    assert_no_deactivation(remote, &before_store, &fin);
    assert_eq!(
        fin,
        expected(remote, true),
        "{remote:?}: store after recovery"
    );
    // And a run after that has nothing left to do.
    let out = rig.sync(false);
    rig.assert_sound(&out);
    assert_eq!(code(&out), 0, "{remote:?}: last run\n{}", both(&out));
    assert!(
        stdout(&out).contains("created 0, updated 0, deactivated 0, reactivated 0, held 0"),
        "{remote:?}: the last run still had work\n{}",
        both(&out)
    );
    assert_eq!(rig.store(), expected(remote, true));
    format!("{outcome} [{:.1}s]", took.as_secs_f64())
}

/// Run `cell` on every remote at once; fail with every cell's failure.
fn on_every_remote(name: &str, cell: impl Fn(Remote) -> Cell + Sync) {
    let results: Vec<(Remote, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = REMOTES
            .iter()
            .map(|&remote| {
                let cell = cell(remote);
                (remote, s.spawn(move || run_cell(remote, &cell)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(remote, h)| {
                let r = h.join().map_err(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())
                });
                (remote, r)
            })
            .collect()
    });
    let mut failures = Vec::new();
    for (remote, r) in &results {
        match r {
            Ok(outcome) => println!("MATRIX | {name} | {remote:?} | {outcome}"),
            Err(e) => {
                println!("MATRIX | {name} | {remote:?} | TEST FAILED");
                failures.push(format!("--- {remote:?}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

/// Whether `text` holds `word`; a number (a status code) must stand alone, not be part
/// of a longer one such as a port or a timestamp's fraction.
fn mentions(text: &str, word: &str) -> bool {
    if !word.bytes().all(|b| b.is_ascii_digit()) {
        return text.contains(word);
    }
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].bytes().next_back();
        let after = text[i + word.len()..].bytes().next();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

fn both(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

/// The run's account of the failure, for the matrix: the directory's summary line on
/// stdout and, when it says something else, the error logged on stderr.
fn error_line(out: &Output, remote: Remote) -> String {
    let text = stdout(out);
    let summary = text
        .lines()
        .find(|l| l.starts_with(&format!("{}: ", remote.directory())))
        .unwrap_or_default()
        .trim()
        .to_string();
    let logged = stderr(out)
        .lines()
        .rfind(|l| l.contains(" ERROR "))
        .and_then(|l| l.split_once("error=").map(|(_, e)| e.trim().to_string()))
        .unwrap_or_default();
    let line = if logged.is_empty() || summary.contains(&logged) {
        summary
    } else {
        format!("{summary} / log: {logged}")
    };
    line.chars().take(500).collect()
}

/// (external_id, user_name, department, active), sorted.
type Store = Vec<(String, String, Option<String>, bool)>;

fn id(remote: Remote, i: u32) -> String {
    match remote {
        Remote::GraphApi | Remote::GraphDelta | Remote::EntraToken => format!("u{i:02}"),
        Remote::GoogleToken | Remote::GoogleDirectory => format!("{}", 1000 + i),
        Remote::Scim => format!("E{i:02}"),
    }
}

fn user_name(remote: Remote, i: u32) -> String {
    match remote {
        Remote::GraphApi | Remote::GraphDelta | Remote::EntraToken => {
            format!("user{i:02}@contoso.test")
        }
        Remote::GoogleToken | Remote::GoogleDirectory => format!("user{i:02}@fabrikam.example"),
        Remote::Scim => format!("user{i:02}@x.io"),
    }
}

/// The store as it must be before (`changed` false) or after the directory change.
fn expected(remote: Remote, changed: bool) -> Store {
    let n = if changed { USERS + 1 } else { USERS };
    let mut rows: Store = (1..=n)
        .map(|i| {
            let dept = if changed && i <= MOVED {
                "Legal"
            } else {
                "Sales"
            };
            (id(remote, i), user_name(remote, i), Some(dept.into()), true)
        })
        .collect();
    rows.sort();
    rows
}

fn assert_no_deactivation(remote: Remote, before: &Store, after: &Store) {
    for (ext, name, _, active) in before {
        if *active {
            let now = after.iter().find(|r| &r.0 == ext);
            assert!(
                now.is_some_and(|r| r.3),
                "{remote:?}: {ext} ({name}) was active and is now {now:?}"
            );
        }
    }
}

struct Rig {
    remote: Remote,
    timeout: &'static str,
    env: Env,
    /// In front of the faulted remote.
    proxy: FaultProxy,
    /// In front of the directory's other remote (the token endpoint or the API), if any.
    sibling: Option<FaultProxy>,
    graph: Option<GraphMock>,
    google: Option<GoogleMock>,
    scim: Option<ScimMock>,
}

impl Rig {
    /// The mocks, and one proxy per remote (a token endpoint and its API are served by
    /// one mock but reached through two proxies, so either can be down alone).
    fn start(remote: Remote, timeout: &'static str) -> Rig {
        let env = Env::new();
        let (graph, google, scim, upstream) = match remote {
            Remote::GraphApi | Remote::GraphDelta | Remote::EntraToken => {
                let mock = GraphMock::start(ENTRA_SECRET);
                for i in 1..=USERS {
                    mock.add_user(entra_user(i));
                }
                let base = mock.base();
                (Some(mock), None, None, base)
            }
            Remote::GoogleToken | Remote::GoogleDirectory => {
                let mock = GoogleMock::start();
                mock.with(|s| {
                    s.page_cap = 5;
                    s.users = (1..=USERS).map(google_user).collect();
                });
                let base = mock.url();
                (None, Some(mock), None, base)
            }
            Remote::Scim => {
                let mock = ScimMock::start(SCIM_TOKEN);
                env.write("hr.csv", &csv(USERS, false));
                let base = mock.base();
                (None, None, Some(mock), base)
            }
        };
        let proxy = FaultProxy::start(&upstream);
        let sibling = scim.is_none().then(|| FaultProxy::start(&upstream));
        let rig = Rig {
            remote,
            timeout,
            env,
            proxy,
            sibling,
            graph,
            google,
            scim,
        };
        // Links the mocks hand out (nextLink, deltaLink) and the JWT audience go
        // through the proxies too.
        if let Some(g) = &rig.graph {
            g.state().base = rig.api_proxy().base();
        }
        if let Some(g) = &rig.google {
            g.with(|s| s.token_url = format!("{}/token", rig.token_proxy().base()));
            rig.env.write("sa.json", &g.key_json());
        }
        rig.write_config();
        rig
    }

    fn faulted_is_token(&self) -> bool {
        matches!(self.remote, Remote::EntraToken | Remote::GoogleToken)
    }

    fn token_proxy(&self) -> &FaultProxy {
        match (&self.sibling, self.faulted_is_token()) {
            (Some(s), false) => s,
            _ => &self.proxy,
        }
    }

    fn api_proxy(&self) -> &FaultProxy {
        match (&self.sibling, self.faulted_is_token()) {
            (Some(s), true) => s,
            _ => &self.proxy,
        }
    }

    /// Both proxies' logs.
    fn summary(&self) -> String {
        let mut text = format!("faulted remote:\n{}", self.proxy.summary());
        if let Some(s) = &self.sibling {
            text.push_str(&format!("\nother remote:\n{}", s.summary()));
        }
        text
    }

    fn write_config(&self) {
        let token = self.token_proxy().base();
        let api = self.api_proxy().base();
        let config = ConfigBuilder::new()
            .guards(1000, 100)
            .sync("request_timeout", &q(self.timeout));
        let config = match self.remote {
            Remote::GraphApi | Remote::GraphDelta | Remote::EntraToken => config
                .entra(
                    "contoso",
                    &token,
                    &[("client_secret", r#"{ env = "CONTOSO_SECRET" }"#)],
                )
                .dir("graph_url", &q(&format!("{api}/v1.0"))),
            Remote::GoogleToken | Remote::GoogleDirectory => config
                .google("fabrikam", &api, "sa.json", google_mock::ADMIN)
                .dir("scope", r#""all""#)
                .dir("token_url", &q(&format!("{token}/token"))),
            Remote::Scim => config
                .scim(&api, r#"{ env = "SCIM_TOKEN" }"#)
                .store("concurrency", "1")
                .csv("hr", "hr.csv"),
        };
        config.write(&self.env);
    }

    /// One sync; the faulted run of `GraphApi` and `EntraToken` with `--full`.
    fn sync(&self, faulted: bool) -> Output {
        let full = matches!(self.remote, Remote::GraphApi | Remote::EntraToken);
        let args: &[&str] = if faulted && full {
            &["sync", "--full"]
        } else {
            &["sync"]
        };
        self.env.run_with(
            args,
            &[
                ("CONTOSO_SECRET", ENTRA_SECRET),
                ("SCIM_TOKEN", SCIM_TOKEN),
                // 10 ms: backoff stays short, yet the cap (32 x base) still
                // honours a Retry-After of 0.2 s.
                ("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "10"),
            ],
        )
    }

    /// No panic, no secret, a known exit code.
    fn assert_sound(&self, out: &Output) {
        let all = format!("{}{}", stdout(out), stderr(out));
        assert!(
            !all.contains("panicked") && code(out) != 101,
            "{:?}: panic\n{all}",
            self.remote
        );
        let pem_line = google_mock::TEST_KEY_PEM
            .lines()
            .nth(3)
            .expect("a line of the key body");
        for secret in [
            ENTRA_SECRET,
            SCIM_TOKEN,
            "mock-token-",
            "ya29.mock",
            "PRIVATE KEY",
            pem_line,
        ] {
            assert!(
                !all.contains(secret),
                "{:?}: secret {secret:?} in the output\n{all}",
                self.remote
            );
        }
        assert!(
            matches!(code(out), 0 | 3),
            "{:?}: exit {}\n{all}",
            self.remote,
            code(out)
        );
    }

    fn change_directory(&self) {
        if let Some(g) = &self.graph {
            for i in 1..=MOVED {
                g.update(&id(self.remote, i), json!({"department": "Legal"}));
            }
            g.add_user(entra_user(USERS + 1));
        }
        if let Some(g) = &self.google {
            g.with(|s| {
                for u in s.users.iter_mut().take(MOVED as usize) {
                    u["organizations"][0]["department"] = json!("Legal");
                }
                s.users.push(google_user(USERS + 1));
            });
        }
        if self.scim.is_some() {
            self.env.write("hr.csv", &csv(USERS + 1, true));
        }
    }

    fn store(&self) -> Store {
        let mut rows: Store = match &self.scim {
            Some(mock) => mock
                .state()
                .users
                .values()
                .map(|u| {
                    (
                        u["externalId"].as_str().unwrap_or_default().to_string(),
                        u["userName"].as_str().unwrap_or_default().to_string(),
                        u[ENTERPRISE]["department"].as_str().map(str::to_string),
                        u["active"].as_bool().unwrap_or(true),
                    )
                })
                .collect(),
            None => self
                .env
                .learners("learners.db", self.remote.directory())
                .into_iter()
                .map(|r| (r.external_id, r.user_name, r.department, r.active))
                .collect(),
        };
        rows.sort();
        rows
    }

    /// The state DB's snapshot and cursors.
    fn state(&self) -> Vec<Vec<Option<String>>> {
        let mut rows = sql(
            &self.env,
            "state.db",
            "SELECT directory, external_id, user FROM snapshot ORDER BY directory, external_id",
        );
        rows.extend(sql(
            &self.env,
            "state.db",
            "SELECT directory, cursor, full_read_at FROM cursors ORDER BY directory",
        ));
        rows
    }

    fn cursor(&self) -> Option<String> {
        sql(&self.env, "state.db", "SELECT cursor FROM cursors")
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// After a failed SCIM apply: no duplicate, and each user old or new.
    fn assert_scim_partial(&self, before: &Store, after: &Store) {
        let mut ids: Vec<&String> = after.iter().map(|r| &r.0).collect();
        ids.dedup();
        assert_eq!(ids.len(), after.len(), "duplicate SCIM users: {after:?}");
        let new = expected(self.remote, true);
        for row in after {
            assert!(
                before.contains(row) || new.contains(row),
                "SCIM user neither old nor new: {row:?}"
            );
        }
    }
}

fn entra_user(i: u32) -> serde_json::Value {
    graph_mock::user(
        &format!("u{i:02}"),
        &format!("user{i:02}@contoso.test"),
        &format!("Given{i}"),
        &format!("Family{i}"),
    )
}

fn google_user(i: u32) -> serde_json::Value {
    google_mock::user(
        &format!("{}", 1000 + i),
        &format!("user{i:02}@fabrikam.example"),
        "/Staff",
    )
}

fn csv(n: u32, changed: bool) -> String {
    let mut s =
        "external_id,user_name,email,given_name,family_name,department,active\n".to_string();
    for i in 1..=n {
        let dept = if changed && i <= MOVED {
            "Legal"
        } else {
            "Sales"
        };
        s.push_str(&format!(
            "E{i:02},user{i:02}@x.io,user{i:02}@x.io,Given{i},Family{i},{dept},true\n"
        ));
    }
    s
}

// ---- the table: one test per fault, each on every remote ----
//
// A storm or burst that ends within the retries must be ridden out on every remote,
// token endpoints included ("throttling is normal", product.md).

const REFUSED: &[&[&str]] = &[&["refused", "cannot reach", "unreachable", "connect"]];
const RESET: &[&[&str]] = &[&[
    "reset",
    "closed",
    "incomplete",
    "connection",
    "reading the answer",
]];
const BAD_JSON: &[&[&str]] = &[&["json", "malformed", "unreadable", "eof", "truncated"]];
const TIMED_OUT: &[&[&str]] = &[&["timed out", "timeout", "time out"]];
const THROTTLED: &[&[&str]] = &[&["429", "throttl", "too many"]];
const HTML: &[&[&str]] = &[&["not json"], &["text/html"]];
const TOO_BIG: &[&[&str]] = &[&["larger than"]];

fn status(status: u16, retry_after: Option<&'static str>) -> Option<Fault> {
    Some(Fault::Status {
        status,
        retry_after,
    })
}

#[test]
fn connection_refused() {
    on_every_remote("connection refused", |_| {
        Cell::new(Target::Refused, None, Expect::CleanFailure).words(REFUSED)
    });
}

#[test]
fn connection_reset_mid_body() {
    on_every_remote("reset mid-body (once)", |_| {
        Cell::new(Target::Once, Some(Fault::ResetMidBody), Expect::Either).words(RESET)
    });
}

#[test]
fn truncated_json_once() {
    on_every_remote("truncated JSON under a 200 (once)", |_| {
        Cell::new(Target::Once, Some(Fault::Truncate), Expect::Either).words(BAD_JSON)
    });
}

#[test]
fn truncated_json_every_time() {
    on_every_remote("truncated JSON under a 200 (always)", |_| {
        Cell::new(
            Target::Storm(When::Always),
            Some(Fault::Truncate),
            Expect::CleanFailure,
        )
        .words(BAD_JSON)
    });
}

#[test]
fn slow_server_beyond_the_request_timeout() {
    on_every_remote("answer after 5 s, request_timeout 2 s (once)", |_| Cell {
        timeout: SHORT_TIMEOUT,
        ..Cell::new(Target::Once, Some(Fault::Delay(SLOW)), Expect::Either).words(TIMED_OUT)
    });
}

#[test]
fn throttling_storm_that_ends() {
    on_every_remote("429 storm that ends (3 answers, Retry-After 0.05)", |_| {
        Cell::new(
            Target::Storm(When::Next(3)),
            status(429, Some("0.05")),
            Expect::Success,
        )
        .words(THROTTLED)
    });
}

#[test]
fn throttling_storm_for_a_while() {
    on_every_remote("429 storm for 300 ms (Retry-After 0.2)", |_| {
        Cell::new(
            Target::Storm(When::For(Duration::from_millis(300))),
            status(429, Some("0.2")),
            Expect::Success,
        )
        .words(THROTTLED)
    });
}

#[test]
fn throttling_storm_that_outlasts_the_retries() {
    on_every_remote(
        "429 storm that outlasts the retries (Retry-After 0.05)",
        |_| {
            Cell::new(
                Target::Storm(When::Always),
                status(429, Some("0.05")),
                Expect::CleanFailure,
            )
            .words(THROTTLED)
        },
    );
}

#[test]
fn bad_gateway_burst_without_retry_after() {
    on_every_remote("502 burst (2 answers, no Retry-After)", |_| {
        Cell::new(
            Target::Storm(When::Next(2)),
            status(502, None),
            Expect::Success,
        )
        .words(&[&["502"]])
    });
}

#[test]
fn unavailable_burst_with_retry_after() {
    on_every_remote("503 burst (3 answers, Retry-After 0.05)", |_| {
        Cell::new(
            Target::Storm(When::Next(3)),
            status(503, Some("0.05")),
            Expect::Success,
        )
        .words(&[&["503"]])
    });
}

#[test]
fn gateway_timeout_burst_with_retry_after() {
    on_every_remote("504 burst (2 answers, Retry-After 0.05)", |_| {
        Cell::new(
            Target::Storm(When::Next(2)),
            status(504, Some("0.05")),
            Expect::Success,
        )
        .words(&[&["504"]])
    });
}

#[test]
fn server_errors_that_outlast_the_retries() {
    on_every_remote("503 that outlasts the retries (Retry-After 0.05)", |_| {
        Cell::new(
            Target::Storm(When::Always),
            status(503, Some("0.05")),
            Expect::CleanFailure,
        )
        .words(&[&["503"]])
    });
}

#[test]
fn json_sent_as_text_plain_is_accepted() {
    on_every_remote("valid JSON as text/plain (always)", |_| {
        Cell::new(
            Target::Storm(When::Always),
            Some(Fault::ContentType("text/plain; charset=utf-8")),
            Expect::Success,
        )
    });
}

#[test]
fn html_page_under_a_200_fails_cleanly() {
    on_every_remote("HTML page under a 200 (always)", |_| {
        Cell::new(
            Target::Storm(When::Always),
            Some(Fault::Html { status: 200 }),
            Expect::CleanFailure,
        )
        .words(HTML)
    });
}

#[test]
fn html_bad_gateway_page_is_retried() {
    on_every_remote("HTML page under a 502 (2 answers)", |_| {
        Cell::new(
            Target::Storm(When::Next(2)),
            Some(Fault::Html { status: 502 }),
            Expect::Success,
        )
        .words(&[&["502"]])
    });
}

// The oversized bodies come once: a remote that refuses them (as it must) fails the
// run; one that reads them whole and retries would succeed, and fail the cell.

#[test]
fn oversized_chunked_body_fails_cleanly() {
    on_every_remote("80 MiB chunked body (once)", |_| {
        Cell::new(
            Target::Storm(When::Next(1)),
            Some(Fault::Oversized {
                bytes: OVERSIZED,
                declared: None,
            }),
            Expect::CleanFailure,
        )
        .words(TOO_BIG)
    });
}

#[test]
fn oversized_declared_length_fails_cleanly() {
    on_every_remote("Content-Length of 1 TiB (once)", |_| {
        Cell::new(
            Target::Storm(When::Next(1)),
            Some(Fault::Oversized {
                bytes: OVERSIZED,
                declared: Some(1 << 40),
            }),
            Expect::CleanFailure,
        )
        .words(TOO_BIG)
    });
}
