//! Crash safety for the remote kinds, like crash.rs does for CSV -> SQLite:
//! SIGKILL the real binary at many instants during large syncs (Entra source and
//! Google source into SQLite, against the mocks; CSV source into the real
//! `scim2-server`), run again, and check that the store is exactly what the directory
//! says, that the action log replays to it, and that the cursor and snapshot the next
//! runs rely on are right: a further run changes nothing, one more change shows up.
//!
//! Kill instants adapt to measured runs: each phase first times a clean run of a
//! never-killed twin setup (whose store must equal the model too), then kills at a
//! sweep of fractions up to 1.2 of the run length plus a few seeded random ones (the
//! seed is printed; `CRASH_SEED=<n>` replays the fractions). A run that ends before its
//! instant becomes the length later fractions apply to. Verdicts depend only on the
//! final state. Action-log problems are collected per phase and asserted at the end,
//! so that one of them does not hide what the later phases would find.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::support::google_mock;
use crate::support::graph_mock;
use crate::support::scim_server;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::world::{
    assert_store_equals, choose, log_replay_problems, present_ids, run_outcomes, snapshot_ids,
    sqlite_learners, Learner, Model, Person,
};
use common::{code, rows, stderr, stdout, ConfigBuilder, Env};
use graph_mock::GraphMock;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Sweep points per phase (three phases per test).
const SWEEP: u32 = 15;
/// Seeded random instants per phase.
const RANDOM: u32 = 3;
const ZERO: &str = "created 0, updated 0, deactivated 0, reactivated 0, held 0";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The tests run one at a time: each measures a run and times kills against it, so
/// two of them competing for the CPU would skew each other's measurements.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Running and killing the binary

/// One configured setup: a folder with a config, and the env the binary needs.
struct Subject {
    env: Env,
    vars: Vec<(&'static str, String)>,
}

impl Subject {
    fn new(env: Env, vars: &[(&'static str, &str)]) -> Subject {
        Subject {
            env,
            vars: vars.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let vars: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.env.run_with(args, &vars)
    }

    /// A clean `sync` that must succeed; its stdout.
    fn sync_ok(&self, what: &str) -> String {
        let out = self.run(&["sync"]);
        assert_eq!(
            code(&out),
            0,
            "{what}: stdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn spawn_sync(&self) -> Child {
        let vars: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.env.spawn_quiet(&["sync"], &vars)
    }

    fn history(&self) -> Vec<Value> {
        let out = self.run(&["history", "--json"]);
        assert_eq!(code(&out), 0, "history: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }
}

struct Kills {
    seed: u64,
    rng: rand::rngs::StdRng,
    attempts: u32,
    landed: u32,
    mid_work: u32,
}

impl Kills {
    fn new(test: &str) -> Kills {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(7)
            });
        eprintln!("{test}: kill seed {seed} (replay with CRASH_SEED={seed})");
        Kills {
            seed,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            attempts: 0,
            landed: 0,
            mid_work: 0,
        }
    }

    /// Time one clean run of the (never killed) twin, then SIGKILL syncs of `subject`
    /// at a sweep of fractions of a run's length (up to 1.2) plus a few random ones.
    /// The length starts as the twin's and follows `subject`'s runs: one that ends
    /// before its instant sets the length the later fractions apply to (a store that
    /// keeps partial progress, like SCIM, makes every later run shorter).
    fn phase(&mut self, phase: &str, twin: &Subject, subject: &Subject) {
        let t = Instant::now();
        twin.sync_ok(&format!("{phase}: twin run"));
        let measured = t.elapsed();
        let mut fractions: Vec<f64> = (0..SWEEP)
            .map(|i| 1.2 * f64::from(i) / f64::from(SWEEP))
            .collect();
        for _ in 0..RANDOM {
            fractions.push(self.rng.random_range(0.0..1.2));
        }
        fractions.sort_by(f64::total_cmp);
        let mut run_length = measured;
        let mut landed = 0;
        // Kills before any run of this phase got to the end: they cut real work.
        let mut mid_work = 0;
        let mut done = false;
        for f in &fractions {
            let at = run_length.mul_f64(*f);
            let mut child = subject.spawn_sync();
            let spawned = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    run_length = spawned.elapsed();
                    assert!(
                        status.success(),
                        "{phase}: a run after a kill ended on its own but failed ({status}); \
                         kill seed {}",
                        self.seed
                    );
                    done = true;
                    break;
                }
                let elapsed = spawned.elapsed();
                if elapsed >= at {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    landed += 1;
                    if !done {
                        mid_work += 1;
                    }
                    break;
                }
                std::thread::sleep((at - elapsed).min(Duration::from_millis(2)));
            }
        }
        self.attempts += fractions.len() as u32;
        self.landed += landed;
        self.mid_work += mid_work;
        eprintln!(
            "{phase}: twin run {measured:?}, last run {run_length:?}; {landed} of {} kills landed inside a run, {mid_work} before the phase's work was first done",
            fractions.len()
        );
    }

    fn finish(&self, test: &str, started: Instant) {
        eprintln!(
            "{test}: {} kill attempts, {} landed inside a run ({} before a phase's work was first done), {:?} in all",
            self.attempts,
            self.landed,
            self.mid_work,
            started.elapsed()
        );
        assert!(self.attempts >= 45, "{test}: too few kill attempts");
        // Instants below one run length land unless the machine sped up a lot since
        // the measurement: a third is a floor that only a broken harness misses.
        assert!(
            self.landed >= self.attempts / 3,
            "{test}: too few kills landed inside a run: {} of {}",
            self.landed,
            self.attempts
        );
    }
}

fn assert_zero_changes(what: &str, out: &str) {
    assert!(
        out.contains(ZERO),
        "{what}: a settled run changed something: {out}"
    );
}

// ---------------------------------------------------------------------------
// 1. Entra source -> SQLite store, against the mock Graph

const ENTRA_SECRET: &str = "crash-entra-secret-never-printed";
const TENANT_SIZE: usize = 3000;

fn entra_subject(mock: &GraphMock) -> Subject {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(1_000_000, 100)
        .entra(
            "contoso",
            &mock.base(),
            &[("client_secret", r#"{ env = "CONTOSO_SECRET" }"#)],
        )
        .write(&env);
    Subject::new(env, &[("CONTOSO_SECRET", ENTRA_SECRET)])
}

fn graph_user(id: &str, p: &Person) -> Value {
    let mut u = graph_mock::user(id, &p.user_name, &p.given, &p.family);
    u["department"] = json!(p.dept);
    u["jobTitle"] = json!(p.title);
    u
}

fn cursor(env: &Env) -> String {
    rows(
        &env.path("state.db"),
        "SELECT cursor FROM cursors WHERE directory = 'contoso'",
        &[],
    )
    .into_iter()
    .next()
    .and_then(|r| r[0].clone())
    .expect("a stored deltaLink")
}

/// The stored deltaLink as the mock logs a call of it, and the change index its
/// `$deltatoken` stands for (the mock's token is `<index>.<select>`).
fn stored_link(env: &Env) -> (String, usize) {
    let link = url::Url::parse(&cursor(env)).expect("the cursor is a URL");
    let pairs: Vec<(String, String)> = link.query_pairs().into_owned().collect();
    let token = pairs
        .iter()
        .find(|(k, _)| k == "$deltatoken")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("the cursor is a deltaLink: {link}"));
    let index = token
        .split('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a mock delta token: {token}"));
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    (format!("GET {}?{}", link.path(), query.join("&")), index)
}

fn delta_calls(mock: &GraphMock) -> Vec<String> {
    mock.log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .collect()
}

/// After a phase converged: the store is the tenant, the log replays to it, the
/// snapshot holds the tenant's users, and the deltaLink is current: the next run calls
/// it (no fresh round) and changes nothing, and one more change arrives through it.
fn entra_settled(
    phase: &str,
    mock: &GraphMock,
    main: &Subject,
    twin: &Subject,
    model: &mut Model,
) -> Option<String> {
    let store = sqlite_learners(&main.env, "contoso");
    assert_store_equals(&format!("{phase}: store"), model, &store);
    assert_store_equals(
        &format!("{phase}: never-killed twin"),
        model,
        &sqlite_learners(&twin.env, "contoso"),
    );
    let log_check = log_replay_problems(
        phase,
        &main.history(),
        &run_outcomes(&main.env, "state.db"),
        &store,
        model,
    );
    let tenant: BTreeSet<String> = mock.state().users.keys().cloned().collect();
    assert_eq!(
        tenant,
        present_ids(model),
        "{phase}: the mock holds the model"
    );
    assert_eq!(
        snapshot_ids(&main.env, "state.db", "contoso"),
        tenant,
        "{phase}: the snapshot holds exactly the tenant's users"
    );

    let (link_call, index) = stored_link(&main.env);
    assert_eq!(
        index,
        mock.state().changes.len(),
        "{phase}: the stored deltaLink covers every change made so far"
    );
    mock.clear_log();
    let out = main.sync_ok(&format!("{phase}: settled run"));
    assert_zero_changes(phase, &out);
    let calls = delta_calls(mock);
    assert_eq!(
        calls.first(),
        Some(&link_call),
        "{phase}: the settled run called the stored deltaLink: {calls:?}"
    );
    assert!(
        calls.iter().all(|c| !c.contains("$select=")),
        "{phase}: no fresh round: {calls:?}"
    );

    // One more change, as a partial update: it must merge into the stored snapshot.
    let id = model
        .iter()
        .find(|(_, p)| p.active())
        .map(|(id, _)| id.clone())
        .unwrap();
    let dept = format!("Extra {phase}");
    mock.update(&id, json!({ "department": dept }));
    model.get_mut(&id).unwrap().dept = dept;
    let (link_call, index) = stored_link(&main.env);
    assert_eq!(
        index + 1,
        mock.state().changes.len(),
        "{phase}: settled cursor"
    );
    mock.clear_log();
    let out = main.sync_ok(&format!("{phase}: one more change"));
    assert!(
        out.contains("created 0, updated 1, deactivated 0, reactivated 0, held 0"),
        "{phase}: the change arrived: {out}"
    );
    assert!(
        delta_calls(mock).first().is_some_and(|c| c == &link_call),
        "{phase}: through the stored deltaLink: {:?}",
        delta_calls(mock)
    );
    assert_store_equals(
        &format!("{phase}: after one more change"),
        model,
        &sqlite_learners(&main.env, "contoso"),
    );
    twin.sync_ok(&format!("{phase}: twin catches up"));
    log_check
}

#[test]
fn entra_to_sqlite_sigkill_at_many_instants_then_rerun_converges_exactly() {
    let _serial = serial();
    let started = Instant::now();
    let test = "entra -> sqlite";
    let mut kills = Kills::new(test);
    let mut log_problems = Vec::new();
    let mock = GraphMock::start(ENTRA_SECRET);
    {
        let mut s = mock.state();
        s.page_size = 100;
        s.latency = Duration::from_millis(15);
    }
    let id_of = |i: usize| format!("{i:08x}-0000-4000-8000-000000000000");
    let mut model: Model = Model::new();
    for i in 0..TENANT_SIZE {
        let p = Person::new(
            format!("user{i}@contoso.test"),
            &format!("Given{i}"),
            &format!("Family{i}"),
            &format!("Dept{}", i % 7),
            "Rep",
        );
        mock.add_user(graph_user(&id_of(i), &p));
        model.insert(id_of(i), p);
    }
    let main = entra_subject(&mock);
    let twin = entra_subject(&mock);

    // Phase 1: the initial import (a fresh delta round over 30 pages).
    kills.phase("entra import", &twin, &main);
    main.sync_ok("entra import: clean rerun");
    log_problems.extend(entra_settled(
        "entra import",
        &mock,
        &main,
        &twin,
        &mut model,
    ));

    // Phase 2: updates and renames (partial items), soft and hard deletes, disables,
    // newcomers, all through the delta.
    let mut touched = BTreeSet::new();
    for id in choose(&model, &mut touched, |i, _| i % 10 == 0) {
        let p = model.get_mut(&id).unwrap();
        p.dept = "Moved".into();
        mock.update(&id, json!({"department": "Moved"}));
    }
    for id in choose(&model, &mut touched, |i, _| i % 37 == 5) {
        let p = model.get_mut(&id).unwrap();
        p.user_name = format!("renamed.{}", p.user_name);
        mock.update(
            &id,
            json!({"userPrincipalName": p.user_name, "mail": p.user_name}),
        );
    }
    let soft_deleted = choose(&model, &mut touched, |i, _| i % 50 == 1);
    for id in &soft_deleted {
        model.get_mut(id).unwrap().present = false;
        mock.remove(id, "changed");
    }
    for id in choose(&model, &mut touched, |i, _| i % 199 == 7) {
        model.get_mut(&id).unwrap().present = false;
        mock.remove(&id, "deleted");
    }
    let disabled = choose(&model, &mut touched, |i, _| i % 97 == 3);
    for id in &disabled {
        model.get_mut(id).unwrap().off = Some("disabled");
        mock.update(id, json!({"accountEnabled": false}));
    }
    for i in TENANT_SIZE..TENANT_SIZE + 150 {
        let p = Person::new(
            format!("new{i}@contoso.test"),
            &format!("New{i}"),
            "Newcomer",
            "New",
            "Starter",
        );
        mock.add_user(graph_user(&id_of(i), &p));
        model.insert(id_of(i), p);
    }
    mock.state().page_size = 20;
    kills.phase("entra changes", &twin, &main);
    main.sync_ok("entra changes: clean rerun");
    log_problems.extend(entra_settled(
        "entra changes",
        &mock,
        &main,
        &twin,
        &mut model,
    ));

    // Phase 3: the soft-deleted are restored, the disabled re-enabled, more updates.
    let mut touched = BTreeSet::new();
    for id in &soft_deleted {
        model.get_mut(id).unwrap().present = true;
        touched.insert(id.clone());
        mock.restore(id);
    }
    for id in &disabled {
        model.get_mut(id).unwrap().off = None;
        touched.insert(id.clone());
        mock.update(id, json!({"accountEnabled": true}));
    }
    for id in choose(&model, &mut touched, |i, p| i % 13 == 5 && p.present) {
        let p = model.get_mut(&id).unwrap();
        p.dept = "Again".into();
        p.title = "Lead".into();
        mock.update(&id, json!({"department": "Again", "jobTitle": "Lead"}));
    }
    kills.phase("entra returns", &twin, &main);
    main.sync_ok("entra returns: clean rerun");
    log_problems.extend(entra_settled(
        "entra returns",
        &mock,
        &main,
        &twin,
        &mut model,
    ));

    kills.finish(test, started);
    assert!(log_problems.is_empty(), "{}", log_problems.join("\n"));
}

// ---------------------------------------------------------------------------
// 2. Google source -> SQLite store, against the mock Directory API

const GOOGLE_SIZE: usize = 3000;
const GOOGLE_PAGE: usize = 100;

fn google_subject(mock: &google_mock::GoogleMock) -> Subject {
    let env = Env::new();
    env.write("sa.json", &mock.key_json());
    ConfigBuilder::new()
        .guards(1_000_000, 100)
        .google("fabrikam", &mock.url(), "sa.json", google_mock::ADMIN)
        .dir("scope", r#""all""#)
        .write(&env);
    Subject::new(env, &[("LEARNER_SYNC_GOOGLE_RETRY_BASE_MS", "1")])
}

/// Publish the model as the mock's listing: present users, in id order.
fn google_publish(mock: &google_mock::GoogleMock, model: &Model) {
    let users: Vec<Value> = model
        .iter()
        .filter(|(_, p)| p.present)
        .map(|(id, p)| {
            let mut u = google_mock::user(id, &p.user_name, "/Staff");
            u["name"] = json!({"givenName": p.given, "familyName": p.family,
                "fullName": format!("{} {}", p.given, p.family)});
            u["organizations"] =
                json!([{"department": p.dept, "title": p.title, "primary": true, "customType": ""}]);
            u["suspended"] = json!(p.off == Some("suspended"));
            u["archived"] = json!(p.off == Some("archived"));
            u
        })
        .collect();
    mock.with(|s| s.users = users);
}

fn google_settled(
    phase: &str,
    mock: &google_mock::GoogleMock,
    main: &Subject,
    twin: &Subject,
    model: &mut Model,
) -> Option<String> {
    let store = sqlite_learners(&main.env, "fabrikam");
    assert_store_equals(&format!("{phase}: store"), model, &store);
    assert_store_equals(
        &format!("{phase}: never-killed twin"),
        model,
        &sqlite_learners(&twin.env, "fabrikam"),
    );
    let log_check = log_replay_problems(
        phase,
        &main.history(),
        &run_outcomes(&main.env, "state.db"),
        &store,
        model,
    );
    assert_eq!(
        snapshot_ids(&main.env, "state.db", "fabrikam"),
        present_ids(model),
        "{phase}: the snapshot holds exactly the listed users"
    );

    // Google has no delta: a settled run reads the whole listing once and changes nothing.
    mock.with(|s| {
        s.log.clear();
        s.user_queries.clear();
    });
    let out = main.sync_ok(&format!("{phase}: settled run"));
    assert_zero_changes(phase, &out);
    let listed = present_ids(model).len();
    let log = mock.log();
    assert_eq!(
        log.iter().filter(|l| *l == "users 200").count(),
        listed.div_ceil(GOOGLE_PAGE),
        "{phase}: one complete paged listing: {log:?}"
    );
    let rounds = mock.with(|s| {
        s.user_queries
            .iter()
            .filter(|q| !q.contains_key("pageToken"))
            .count()
    });
    assert_eq!(rounds, 1, "{phase}: one listing round");

    // One more change shows up in the next run.
    let id = model
        .iter()
        .find(|(_, p)| p.active())
        .map(|(id, _)| id.clone())
        .unwrap();
    model.get_mut(&id).unwrap().dept = format!("Extra {phase}");
    google_publish(mock, model);
    let out = main.sync_ok(&format!("{phase}: one more change"));
    assert!(
        out.contains("created 0, updated 1, deactivated 0, reactivated 0, held 0"),
        "{phase}: the change arrived: {out}"
    );
    assert_store_equals(
        &format!("{phase}: after one more change"),
        model,
        &sqlite_learners(&main.env, "fabrikam"),
    );
    twin.sync_ok(&format!("{phase}: twin catches up"));
    log_check
}

#[test]
fn google_to_sqlite_sigkill_at_many_instants_then_rerun_converges_exactly() {
    let _serial = serial();
    let started = Instant::now();
    let test = "google -> sqlite";
    let mut kills = Kills::new(test);
    let mut log_problems = Vec::new();
    let mock = google_mock::GoogleMock::start();
    mock.with(|s| {
        s.page_cap = GOOGLE_PAGE;
        s.page_latency = Duration::from_millis(15);
    });
    let id_of = |i: usize| format!("1{i:011}");
    let mut model: Model = (0..GOOGLE_SIZE)
        .map(|i| {
            (
                id_of(i),
                Person::new(
                    format!("user{i}@fabrikam.example"),
                    &format!("Given{i}"),
                    &format!("Family{i}"),
                    &format!("Dept{}", i % 7),
                    "Rep",
                ),
            )
        })
        .collect();
    google_publish(&mock, &model);
    let main = google_subject(&mock);
    let twin = google_subject(&mock);

    // Phase 1: the initial import.
    kills.phase("google import", &twin, &main);
    main.sync_ok("google import: clean rerun");
    log_problems.extend(google_settled(
        "google import",
        &mock,
        &main,
        &twin,
        &mut model,
    ));

    // Phase 2: updates, renames, suspended, archived, deleted, newcomers.
    let mut touched = BTreeSet::new();
    for id in choose(&model, &mut touched, |i, _| i % 10 == 0) {
        model.get_mut(&id).unwrap().dept = "Moved".into();
    }
    for id in choose(&model, &mut touched, |i, _| i % 37 == 5) {
        let p = model.get_mut(&id).unwrap();
        p.user_name = format!("renamed.{}", p.user_name);
    }
    let suspended = choose(&model, &mut touched, |i, _| i % 97 == 3);
    for id in &suspended {
        model.get_mut(id).unwrap().off = Some("suspended");
    }
    let archived = choose(&model, &mut touched, |i, _| i % 89 == 4);
    for id in &archived {
        model.get_mut(id).unwrap().off = Some("archived");
    }
    let deleted = choose(&model, &mut touched, |i, _| i % 50 == 1);
    for id in &deleted {
        model.get_mut(id).unwrap().present = false;
    }
    for i in GOOGLE_SIZE..GOOGLE_SIZE + 150 {
        model.insert(
            id_of(i),
            Person::new(
                format!("new{i}@fabrikam.example"),
                &format!("New{i}"),
                "Newcomer",
                "New",
                "Starter",
            ),
        );
    }
    google_publish(&mock, &model);
    kills.phase("google changes", &twin, &main);
    main.sync_ok("google changes: clean rerun");
    log_problems.extend(google_settled(
        "google changes",
        &mock,
        &main,
        &twin,
        &mut model,
    ));

    // Phase 3: unsuspended, unarchived, restored (deleted users back), more updates.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for id in suspended.iter().chain(&archived) {
        model.get_mut(id).unwrap().off = None;
        touched.insert(id.clone());
    }
    for id in &deleted {
        model.get_mut(id).unwrap().present = true;
        touched.insert(id.clone());
    }
    for id in choose(&model, &mut touched, |i, _| i % 13 == 5) {
        let p = model.get_mut(&id).unwrap();
        p.dept = "Again".into();
        p.title = "Lead".into();
    }
    google_publish(&mock, &model);
    kills.phase("google returns", &twin, &main);
    main.sync_ok("google returns: clean rerun");
    log_problems.extend(google_settled(
        "google returns",
        &mock,
        &main,
        &twin,
        &mut model,
    ));

    kills.finish(test, started);
    assert!(log_problems.is_empty(), "{}", log_problems.join("\n"));
}

// ---------------------------------------------------------------------------
// 3. CSV source -> SCIM store, against the real scim2-server

const SCIM_SIZE: usize = 600;

fn scim_subject(server: &scim_server::ScimServer) -> Subject {
    let env = Env::new();
    ConfigBuilder::new()
        .state_db("state/state.db")
        .guards(1_000_000, 100)
        .scim(&server.base, r#"{ env = "SCIM_TOKEN" }"#)
        .store("concurrency", "4")
        .csv("hr", "hr.csv")
        .write(&env);
    Subject::new(env, &[("SCIM_TOKEN", scim_server::TOKEN)])
}

fn write_csv(subject: &Subject, model: &Model) {
    let mut s = String::from(
        "external_id,user_name,email,given_name,family_name,department,job_title,active\n",
    );
    for (id, p) in model.iter().filter(|(_, p)| p.present) {
        s.push_str(&format!(
            "{id},{u},{u},{},{},{},{},{}\n",
            p.given,
            p.family,
            p.dept,
            p.title,
            p.off.is_none(),
            u = p.user_name
        ));
    }
    subject.env.write("hr.csv", &s);
}

/// The server's users as learners, by externalId: exactly one per externalId, none
/// without one, each email `work` and primary.
fn scim_learners(server: &scim_server::ScimServer) -> BTreeMap<String, Learner> {
    let mut out = BTreeMap::new();
    for u in server.users() {
        let ext = u["externalId"]
            .as_str()
            .unwrap_or_else(|| panic!("a SCIM user without externalId: {u}"))
            .to_string();
        let emails = u["emails"].as_array().cloned().unwrap_or_default();
        assert_eq!(emails.len(), 1, "{ext}: one email: {u}");
        assert_eq!(emails[0]["type"], "work", "{ext}: {u}");
        assert_eq!(emails[0]["primary"], true, "{ext}: {u}");
        let text = |v: &Value| v.as_str().map(str::to_string);
        let learner = Learner {
            user_name: text(&u["userName"]).unwrap_or_default(),
            email: text(&emails[0]["value"]),
            given_name: text(&u["name"]["givenName"]),
            family_name: text(&u["name"]["familyName"]),
            department: text(&u[ENTERPRISE]["department"]),
            job_title: text(&u["title"]),
            active: u["active"]
                .as_bool()
                .unwrap_or_else(|| panic!("{ext}: active is a boolean: {u}")),
        };
        assert!(
            out.insert(ext.clone(), learner).is_none(),
            "more than one SCIM user with externalId {ext}"
        );
    }
    out
}

/// externalId -> (id, meta.version) of every user.
fn scim_versions(server: &scim_server::ScimServer) -> BTreeMap<String, (Value, Value)> {
    server
        .users()
        .into_iter()
        .map(|u| {
            (
                u["externalId"].as_str().unwrap_or_default().to_string(),
                (u["id"].clone(), u["meta"]["version"].clone()),
            )
        })
        .collect()
}

struct ScimSide {
    server: scim_server::ScimServer,
    subject: Subject,
}

fn scim_settled(
    phase: &str,
    main: &ScimSide,
    twin: &ScimSide,
    model: &mut Model,
) -> Option<String> {
    let store = scim_learners(&main.server);
    assert_store_equals(&format!("{phase}: SCIM users"), model, &store);
    assert_store_equals(
        &format!("{phase}: never-killed twin"),
        model,
        &scim_learners(&twin.server),
    );
    let log_check = log_replay_problems(
        phase,
        &main.subject.history(),
        &run_outcomes(&main.subject.env, "state/state.db"),
        &store,
        model,
    );
    assert_eq!(
        snapshot_ids(&main.subject.env, "state/state.db", "hr"),
        present_ids(model),
        "{phase}: the snapshot holds exactly the file's users"
    );

    // A settled run writes nothing to the provider.
    let before = scim_versions(&main.server);
    let out = main.subject.sync_ok(&format!("{phase}: settled run"));
    assert_zero_changes(phase, &out);
    assert_eq!(
        scim_versions(&main.server),
        before,
        "{phase}: a settled run wrote no SCIM resource"
    );

    // One more change reaches the resource it belongs to, and only that one.
    let id = model
        .iter()
        .find(|(_, p)| p.active())
        .map(|(id, _)| id.clone())
        .unwrap();
    model.get_mut(&id).unwrap().dept = format!("Extra {phase}");
    write_csv(&main.subject, model);
    write_csv(&twin.subject, model);
    let out = main.subject.sync_ok(&format!("{phase}: one more change"));
    assert!(
        out.contains("created 0, updated 1, deactivated 0, reactivated 0, held 0"),
        "{phase}: the change arrived: {out}"
    );
    let after = scim_versions(&main.server);
    let written: Vec<&String> = after
        .iter()
        .filter(|(ext, v)| before.get(*ext) != Some(v))
        .map(|(ext, _)| ext)
        .collect();
    assert_eq!(
        written,
        vec![&id],
        "{phase}: only the changed user was written"
    );
    assert_eq!(after[&id].0, before[&id].0, "{phase}: the same resource");
    assert_store_equals(
        &format!("{phase}: after one more change"),
        model,
        &scim_learners(&main.server),
    );
    twin.subject.sync_ok(&format!("{phase}: twin catches up"));
    log_check
}

#[test]
fn csv_to_scim_sigkill_at_many_instants_then_rerun_converges_exactly() {
    let _serial = serial();
    let started = Instant::now();
    let test = "csv -> scim";
    let mut kills = Kills::new(test);
    let mut log_problems = Vec::new();
    let side = || {
        let server = scim_server::ScimServer::start();
        let subject = scim_subject(&server);
        ScimSide { server, subject }
    };
    let main = side();
    let twin = side();
    let id_of = |i: usize| format!("E{i:05}");
    let mut model: Model = (0..SCIM_SIZE)
        .map(|i| {
            (
                id_of(i),
                Person::new(
                    format!("user{i}@x.io"),
                    &format!("Given{i}"),
                    &format!("Family{i}"),
                    &format!("Dept{}", i % 7),
                    "Engineer",
                ),
            )
        })
        .collect();
    let publish = |model: &Model| {
        write_csv(&main.subject, model);
        write_csv(&twin.subject, model);
    };

    // Phase 1: the initial import (creates, looked up against the provider's index).
    publish(&model);
    kills.phase("scim import", &twin.subject, &main.subject);
    main.subject.sync_ok("scim import: clean rerun");
    log_problems.extend(scim_settled("scim import", &main, &twin, &mut model));

    // Phase 2: updates, renames, removed rows, `active=false`, newcomers.
    let mut touched = BTreeSet::new();
    for id in choose(&model, &mut touched, |i, _| i % 5 == 0) {
        model.get_mut(&id).unwrap().dept = "Moved".into();
    }
    for id in choose(&model, &mut touched, |i, _| i % 17 == 2) {
        let p = model.get_mut(&id).unwrap();
        p.user_name = format!("renamed.{}", p.user_name);
        p.given = format!("Re{}", p.given);
    }
    let removed = choose(&model, &mut touched, |i, _| i % 11 == 1);
    for id in &removed {
        model.get_mut(id).unwrap().present = false;
    }
    let disabled = choose(&model, &mut touched, |i, _| i % 13 == 3);
    for id in &disabled {
        model.get_mut(id).unwrap().off = Some("disabled");
    }
    for i in SCIM_SIZE..SCIM_SIZE + 60 {
        model.insert(
            id_of(i),
            Person::new(
                format!("new{i}@x.io"),
                &format!("New{i}"),
                "Newcomer",
                "New",
                "Starter",
            ),
        );
    }
    publish(&model);
    kills.phase("scim changes", &twin.subject, &main.subject);
    main.subject.sync_ok("scim changes: clean rerun");
    log_problems.extend(scim_settled("scim changes", &main, &twin, &mut model));

    // Phase 3: the removed come back, the disabled are enabled, more updates.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for id in &removed {
        model.get_mut(id).unwrap().present = true;
        touched.insert(id.clone());
    }
    for id in &disabled {
        model.get_mut(id).unwrap().off = None;
        touched.insert(id.clone());
    }
    for id in choose(&model, &mut touched, |i, _| i % 7 == 5) {
        let p = model.get_mut(&id).unwrap();
        p.dept = "Again".into();
        p.title = "Lead".into();
    }
    publish(&model);
    kills.phase("scim returns", &twin.subject, &main.subject);
    main.subject.sync_ok("scim returns: clean rerun");
    log_problems.extend(scim_settled("scim returns", &main, &twin, &mut model));

    kills.finish(test, started);
    assert!(log_problems.is_empty(), "{}", log_problems.join("\n"));
}
