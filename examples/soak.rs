//! Soak harness (issue 7, item 6): the release `learner-sync daemon` on a short schedule
//! against three mock directories (Entra Graph, Google Directory, a CSV file) that change
//! before every tick, for as long as asked. Not run by CI: a documented command.
//!
//! ```text
//! cargo run --release --example soak -- --minutes 30                 # the soak
//! cargo run --release --example soak -- --minutes 3 --every 20s      # a quick smoke run
//! ```
//!
//! Options (`--help` lists them): `--minutes M` (30), `--every 1m|20s` (1m: `schedule =
//! "every ..."`), `--users N` per directory at the start (3000), `--changes N` per
//! directory per tick (150), `--store scim|sqlite` (scim: the SCIM mock on loopback;
//! sqlite: the embedded store), `--full-resync 10m` (how often Entra re-reads
//! everything), `--seed N`, `--rss-bound-mib B` (32), `--fd-slack N` (2), `--bin PATH`
//! (default: builds `cargo build --release --bin learner-sync` and runs
//! target/release/learner-sync; examples get no `CARGO_BIN_EXE_*`), `--keep` (keep the
//! work folder).
//!
//! Per directory, the harness waits until the daemon finished a run (the
//! `learner_sync_runs_total` counter on `/metrics`), checks that the store holds exactly
//! what the directory says (every learner, every managed column, `active`; no missing,
//! no stale, no duplicate), that the run's `learner_sync_actions_total` deltas equal the
//! creates / updates / deactivations / reactivations the changes imply, and then
//! changes the directory for the next tick: creates, updates (department, title set and
//! cleared, renames, names, employee id, manager), disables (Google: suspended or
//! archived), re-enables, removals (Entra: soft delete; Google: gone from the listing;
//! CSV: row dropped), restores, and for Entra permanent deletes. Each directory is
//! changed in one step (one lock of the mock, one rename of the CSV), so a run sees all
//! of a tick's changes or none; a change that races a run that already started is
//! marked ambiguous and checked one run later instead.
//!
//! After every tick (all three directories verified) it samples the daemon's VmRSS,
//! open fds (`/proc/PID/fd`) and threads. At the end it sends SIGTERM and expects exit
//! code 0. Exit code 1 if any mismatch, failed or held run, stalled directory, fd
//! growth beyond `--fd-slack`, RSS growth beyond `--rss-bound-mib`, or an unclean stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/common/config_builder.rs"]
mod config_builder;
#[path = "../tests/it/support/mod.rs"]
mod support;
use support::{google_mock, graph_mock, scim_mock};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_mock::GoogleMock;
use graph_mock::GraphMock;
use scim_mock::{ScimMock, ENTERPRISE};
use serde_json::{json, Value};

use config_builder::{q, ConfigBuilder};

const GRAPH_SECRET: &str = "soak-secret";
const SCIM_TOKEN: &str = "soak-scim-token";
/// Users 0..POOL of each directory are the managers of everyone else.
const POOL: usize = 40;
const COLUMNS: [&str; 9] = [
    "user_name",
    "email",
    "given_name",
    "family_name",
    "display_name",
    "department",
    "job_title",
    "employee_id",
    "manager_email",
];

// ---------------------------------------------------------------------------------
// Options

/// The learner store the daemon writes to.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum StoreKind {
    /// The SCIM mock on loopback.
    Scim,
    /// The embedded SQLite store.
    Sqlite,
}

/// The release `learner-sync daemon` against three changing mock directories.
#[derive(clap::Parser)]
#[command(name = "soak")]
struct Args {
    /// How long to soak, in minutes.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// The daemon's schedule, `every <this>`: 1m, 20s.
    #[arg(long, default_value = "1m", value_parser = duration_text)]
    every: String,
    #[arg(skip)]
    every_dur: Duration,
    /// Users per directory at the start.
    #[arg(long, default_value_t = 3000)]
    users: usize,
    /// Changes per directory per tick.
    #[arg(long, default_value_t = 150)]
    changes: usize,
    #[arg(long, value_enum, default_value_t = StoreKind::Scim)]
    store: StoreKind,
    /// How often Entra re-reads everything.
    #[arg(long, default_value = "10m", value_parser = duration_text)]
    full_resync: String,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The RSS growth allowed over the soak, in MiB.
    #[arg(long, default_value_t = 32.0)]
    rss_bound_mib: f64,
    /// The open-fd growth allowed over the soak.
    #[arg(long, default_value_t = 2)]
    fd_slack: usize,
    /// The daemon binary (default: `cargo build --release --bin learner-sync` and
    /// target/release/learner-sync; examples get no `CARGO_BIN_EXE_*`).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Keep the work folder.
    #[arg(long)]
    keep: bool,
}

fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

/// A duration as the config writes it (`20s`, `1m`, `2h`), checked.
fn duration_text(text: &str) -> Result<String, String> {
    parse_duration(text)
        .map(|_| text.to_string())
        .ok_or_else(|| format!("not a duration like 20s, 1m or 2h: {text}"))
}

impl Args {
    fn parse() -> Args {
        use clap::{CommandFactory, Parser};
        let mut a = <Args as Parser>::parse();
        let fail = |kind, msg: String| -> ! { Args::command().error(kind, msg).exit() };
        a.every_dur = parse_duration(&a.every).unwrap_or_else(|| unreachable!("checked by clap"));
        if a.users < POOL * 2 {
            fail(
                clap::error::ErrorKind::ValueValidation,
                format!("--users must be at least {}", POOL * 2),
            );
        }
        if let Some(bin) = &a.bin {
            match std::fs::canonicalize(bin) {
                Ok(path) => a.bin = Some(path),
                Err(e) => fail(
                    clap::error::ErrorKind::ValueValidation,
                    format!("--bin {}: {e}", bin.display()),
                ),
            }
        }
        a
    }
}

// ---------------------------------------------------------------------------------
// A small deterministic PRNG (splitmix64), so a seed replays the same changes.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

// ---------------------------------------------------------------------------------
// The directories' truth and what the store should hold

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Entra,
    Google,
    Csv,
}

/// A user as its directory holds it.
#[derive(Clone, Debug, PartialEq)]
struct Person {
    index: usize,
    id: String,
    /// Sign-in name; the email is the same value in every directory here.
    user_name: String,
    given: String,
    family: String,
    display: String,
    department: Option<String>,
    job_title: Option<String>,
    employee_id: Option<String>,
    /// Entra: the manager's object id; Google and CSV: the manager's email (a literal).
    manager: Option<String>,
    enabled: bool,
    /// Google: a disabled user is archived rather than suspended.
    archived: bool,
    /// In the directory's listing (false: deleted, soft or for good).
    present: bool,
    /// Entra: permanently deleted, never restored.
    gone_for_good: bool,
}

/// One learner row as the store should (or does) hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    cols: [Option<String>; 9],
    active: bool,
}

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Actions {
    created: u64,
    updated: u64,
    deactivated: u64,
    reactivated: u64,
}

impl Actions {
    fn total(&self) -> u64 {
        self.created + self.updated + self.deactivated + self.reactivated
    }
    fn minus(&self, o: &Actions) -> Actions {
        Actions {
            created: self.created.saturating_sub(o.created),
            updated: self.updated.saturating_sub(o.updated),
            deactivated: self.deactivated.saturating_sub(o.deactivated),
            reactivated: self.reactivated.saturating_sub(o.reactivated),
        }
    }
    fn add(&mut self, o: &Actions) {
        self.created += o.created;
        self.updated += o.updated;
        self.deactivated += o.deactivated;
        self.reactivated += o.reactivated;
    }
    fn show(&self) -> String {
        format!(
            "c{} u{} d{} r{}",
            self.created, self.updated, self.deactivated, self.reactivated
        )
    }
}

/// What the harness changed in a directory, by kind.
#[derive(Clone, Copy, Default, Debug)]
struct Changes {
    creates: u64,
    updates: u64,
    disables: u64,
    enables: u64,
    removals: u64,
    restores: u64,
    hard_deletes: u64,
}

impl Changes {
    fn total(&self) -> u64 {
        self.creates
            + self.updates
            + self.disables
            + self.enables
            + self.removals
            + self.restores
            + self.hard_deletes
    }
    fn add(&mut self, o: &Changes) {
        self.creates += o.creates;
        self.updates += o.updates;
        self.disables += o.disables;
        self.enables += o.enables;
        self.removals += o.removals;
        self.restores += o.restores;
        self.hard_deletes += o.hard_deletes;
    }
}

/// A change to one user in one tick: who it was before and after (None: not listed).
struct Event {
    before: Option<Person>,
    after: Option<Person>,
    id: String,
    /// Entra: deleted for good (`@removed` reason `deleted`), not soft-deleted.
    gone_for_good: bool,
}

struct World {
    kind: Kind,
    people: BTreeMap<String, Person>,
    next: usize,
}

impl World {
    fn new(kind: Kind) -> World {
        World {
            kind,
            people: BTreeMap::new(),
            next: 0,
        }
    }

    fn id(&self, i: usize) -> String {
        match self.kind {
            Kind::Entra => format!("{i:08x}-5eed-4000-8000-00000000e17a"),
            Kind::Google => format!("1{i:020}"),
            Kind::Csv => format!("hr-{i:07}"),
        }
    }

    fn user_name(&self, i: usize, rev: Option<u64>) -> String {
        let (prefix, domain) = match self.kind {
            Kind::Entra => ("e", "contoso.test"),
            Kind::Google => ("g", "fabrikam.test"),
            Kind::Csv => ("h", "hr.test"),
        };
        match rev {
            None => format!("{prefix}{i}@{domain}"),
            Some(r) => format!("{prefix}{i}.r{r}@{domain}"),
        }
    }

    /// How a person refers to manager `m`.
    fn manager_ref(&self, m: &Person) -> String {
        match self.kind {
            Kind::Entra => m.id.clone(),
            Kind::Google | Kind::Csv => m.user_name.clone(),
        }
    }

    fn new_person(&mut self) -> Person {
        let i = self.next;
        self.next += 1;
        let manager = if i >= POOL {
            let m = self.people.get(&self.id(i % POOL)).cloned();
            m.map(|m| self.manager_ref(&m))
        } else {
            None
        };
        Person {
            index: i,
            id: self.id(i),
            user_name: self.user_name(i, None),
            given: format!("Given{i}"),
            family: format!("Family{i}"),
            display: format!("Given{i} Family{i}"),
            department: Some(format!("Dept{}", i % 37)),
            job_title: Some("Rep".into()),
            employee_id: Some(format!("E{i:07}")),
            manager,
            enabled: true,
            archived: false,
            present: true,
            gone_for_good: false,
        }
    }

    fn populate(&mut self, n: usize) -> Vec<Event> {
        (0..n)
            .map(|_| {
                let p = self.new_person();
                self.people.insert(p.id.clone(), p.clone());
                Event {
                    id: p.id.clone(),
                    before: None,
                    after: Some(p),
                    gone_for_good: false,
                }
            })
            .collect()
    }

    /// A random user matching `pred` that this tick has not touched yet.
    fn pick(
        &self,
        rng: &mut Rng,
        touched: &BTreeSet<String>,
        pred: impl Fn(&Person) -> bool,
    ) -> Option<String> {
        let candidates: Vec<&String> = self
            .people
            .values()
            .filter(|p| pred(p) && !touched.contains(&p.id))
            .map(|p| &p.id)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[rng.below(candidates.len())].clone())
    }

    /// One tick of changes; each user changes at most once per tick.
    fn mutate(&mut self, rng: &mut Rng, tick: u64, budget: usize) -> (Vec<Event>, Changes) {
        let mut events = Vec::new();
        let mut touched = BTreeSet::new();
        let mut changes = Changes::default();
        let share = |pct: usize| (budget * pct).div_ceil(100);
        let hard = if self.kind == Kind::Entra {
            share(4)
        } else {
            0
        };

        let mut record =
            |w: &mut World, id: &str, before: Option<Person>, touched: &mut BTreeSet<String>| {
                let now = w.people.get(id);
                let after = now.filter(|p| p.present).cloned();
                let gone_for_good = now.is_some_and(|p| p.gone_for_good);
                touched.insert(id.to_string());
                events.push(Event {
                    id: id.to_string(),
                    before,
                    after,
                    gone_for_good,
                });
            };

        for _ in 0..share(20) {
            let p = self.new_person();
            let id = p.id.clone();
            self.people.insert(id.clone(), p);
            record(self, &id, None, &mut touched);
            changes.creates += 1;
        }
        for _ in 0..share(35) {
            let Some(id) = self.pick(rng, &touched, |p| p.present) else {
                break;
            };
            let before = self.people[&id].clone();
            let pool: Vec<Person> = (0..POOL)
                .filter_map(|m| self.people.get(&self.id(m)).cloned())
                .filter(|m| m.id != id)
                .collect();
            let variant = rng.below(7);
            let r = rng.below(1000);
            let new_manager = if r.is_multiple_of(4) || pool.is_empty() {
                None
            } else {
                Some(self.manager_ref(&pool[r % pool.len()]))
            };
            let renamed = self.user_name(before.index, Some(tick));
            let p = self.people.get_mut(&id).unwrap();
            let i = p.index;
            match variant {
                0 => p.department = Some(format!("Dept{}-t{tick}", r % 37)),
                1 => {
                    p.job_title = if p.job_title.is_some() && r.is_multiple_of(2) {
                        None
                    } else {
                        Some(format!("Title{}", r % 11))
                    }
                }
                2 => p.user_name = renamed,
                3 => {
                    p.given = format!("Given{i}v{tick}");
                    p.display = format!("{} {}", p.given, p.family);
                }
                4 => p.employee_id = Some(format!("E{i:07}-{tick}")),
                5 => {
                    p.manager = if p.manager == new_manager {
                        None
                    } else {
                        new_manager
                    }
                }
                _ => {
                    p.family = format!("Family{i}v{tick}");
                    p.display = format!("{} {}", p.given, p.family);
                }
            }
            if *p == before {
                p.department = Some(format!("Dept-fallback-t{tick}"));
            }
            record(self, &id, Some(before), &mut touched);
            changes.updates += 1;
        }
        for _ in 0..share(10) {
            let Some(id) = self.pick(rng, &touched, |p| p.present && p.enabled) else {
                break;
            };
            let before = self.people[&id].clone();
            let archived = rng.below(3) == 0;
            let p = self.people.get_mut(&id).unwrap();
            p.enabled = false;
            p.archived = archived;
            record(self, &id, Some(before), &mut touched);
            changes.disables += 1;
        }
        for _ in 0..share(10) {
            let Some(id) = self.pick(rng, &touched, |p| p.present && !p.enabled) else {
                break;
            };
            let before = self.people[&id].clone();
            let p = self.people.get_mut(&id).unwrap();
            p.enabled = true;
            p.archived = false;
            record(self, &id, Some(before), &mut touched);
            changes.enables += 1;
        }
        for _ in 0..share(10) {
            let Some(id) = self.pick(rng, &touched, |p| p.present) else {
                break;
            };
            let before = self.people[&id].clone();
            self.people.get_mut(&id).unwrap().present = false;
            record(self, &id, Some(before), &mut touched);
            changes.removals += 1;
        }
        for _ in 0..hard {
            let Some(id) = self.pick(rng, &touched, |p| p.present) else {
                break;
            };
            let before = self.people[&id].clone();
            let p = self.people.get_mut(&id).unwrap();
            p.present = false;
            p.gone_for_good = true;
            record(self, &id, Some(before), &mut touched);
            changes.hard_deletes += 1;
        }
        for _ in 0..share(10) {
            let Some(id) = self.pick(rng, &touched, |p| !p.present && !p.gone_for_good) else {
                break;
            };
            self.people.get_mut(&id).unwrap().present = true;
            record(self, &id, None, &mut touched);
            changes.restores += 1;
        }
        (events, changes)
    }

    /// The learner the store should hold for a listed person.
    fn row(&self, p: &Person) -> Row {
        let manager_email = match self.kind {
            Kind::Entra => p
                .manager
                .as_ref()
                .and_then(|m| self.people.get(m))
                .filter(|m| m.present)
                .map(|m| m.user_name.clone()),
            Kind::Google | Kind::Csv => p.manager.clone(),
        };
        Row {
            cols: [
                Some(p.user_name.clone()),
                Some(p.user_name.clone()),
                Some(p.given.clone()),
                Some(p.family.clone()),
                Some(p.display.clone()),
                p.department.clone(),
                p.job_title.clone(),
                p.employee_id.clone(),
                manager_email,
            ],
            active: p.enabled,
        }
    }

    /// The store after a run that saw the directory as it is now, and the actions
    /// that run should report. Unlisted users keep their last values, inactive.
    fn expected(&self, before: &BTreeMap<String, Row>) -> (BTreeMap<String, Row>, Actions) {
        let mut out = BTreeMap::new();
        let mut actions = Actions::default();
        for p in self.people.values() {
            let row = if p.present {
                let row = self.row(p);
                if !before.contains_key(&p.id) && !row.active {
                    continue; // never a learner, and inactive: stays absent
                }
                row
            } else {
                match before.get(&p.id) {
                    Some(r) => Row {
                        active: false,
                        ..r.clone()
                    },
                    None => continue,
                }
            };
            match before.get(&p.id) {
                None => actions.created += 1,
                Some(old) if old.active && !row.active => actions.deactivated += 1,
                Some(old) if !old.active && row.active => actions.reactivated += 1,
                Some(old) if old.cols != row.cols => actions.updated += 1,
                Some(_) => {}
            }
            out.insert(p.id.clone(), row);
        }
        (out, actions)
    }
}

// ---------------------------------------------------------------------------------
// Publishing a directory's state to its mock

const GRAPH_USER_TYPE: &str = "#microsoft.graph.user";

fn graph_object(p: &Person) -> Value {
    json!({
        "id": p.id,
        "userPrincipalName": p.user_name,
        "mail": p.user_name,
        "givenName": p.given,
        "surname": p.family,
        "displayName": p.display,
        "department": p.department,
        "jobTitle": p.job_title,
        "employeeId": p.employee_id,
        "accountEnabled": p.enabled,
        "userType": "Member",
    })
}

/// All of one tick's Entra changes under one lock of the mock, as Graph would
/// report them: full items for new and restored users, partial items for updates,
/// `manager@delta` for manager changes, `@removed` for deletions.
fn publish_entra(mock: &GraphMock, events: &[Event]) {
    let mut s = mock.state();
    for ev in events {
        match (&ev.before, &ev.after) {
            (None, Some(p)) => {
                let obj = graph_object(p);
                s.deleted.remove(&ev.id);
                s.users.insert(ev.id.clone(), obj.clone());
                let mut item = obj;
                match &p.manager {
                    Some(m) => {
                        s.managers.insert(ev.id.clone(), m.clone());
                        item["manager@delta"] = json!([{"@odata.type": GRAPH_USER_TYPE, "id": m}]);
                    }
                    None => {
                        s.managers.remove(&ev.id);
                    }
                }
                s.changes.push(item);
            }
            (Some(b), Some(a)) => {
                let (old, new) = (graph_object(b), graph_object(a));
                let mut item = serde_json::Map::new();
                item.insert("id".into(), json!(ev.id));
                for (k, v) in new.as_object().unwrap() {
                    if old[k] != *v {
                        item.insert(k.clone(), v.clone());
                    }
                }
                if b.manager != a.manager {
                    match (&a.manager, &b.manager) {
                        (Some(m), _) => {
                            s.managers.insert(ev.id.clone(), m.clone());
                            item.insert(
                                "manager@delta".into(),
                                json!([{"@odata.type": GRAPH_USER_TYPE, "id": m}]),
                            );
                        }
                        (None, Some(old)) => {
                            s.managers.remove(&ev.id);
                            item.insert(
                                "manager@delta".into(),
                                json!([{"@odata.type": GRAPH_USER_TYPE, "id": old, "@removed": {"reason": "deleted"}}]),
                            );
                        }
                        (None, None) => {}
                    }
                }
                s.users.insert(ev.id.clone(), new);
                s.changes.push(Value::Object(item));
            }
            (Some(_), None) => {
                let reason = if ev.gone_for_good {
                    "deleted"
                } else {
                    "changed"
                };
                if let Some(u) = s.users.remove(&ev.id) {
                    if reason == "changed" {
                        s.deleted.insert(ev.id.clone(), u);
                    }
                }
                s.changes
                    .push(json!({"id": ev.id, "@removed": {"reason": reason}}));
            }
            (None, None) => {}
        }
    }
    // Keep the mock's request log from growing for the whole soak.
    s.log.clear();
    s.arrived.clear();
}

fn google_object(p: &Person) -> Value {
    let mut u = google_mock::user(&p.id, &p.user_name, "/Staff");
    u["name"] = json!({"givenName": p.given, "familyName": p.family, "fullName": p.display});
    let mut org = serde_json::Map::new();
    if let Some(d) = &p.department {
        org.insert("department".into(), json!(d));
    }
    if let Some(t) = &p.job_title {
        org.insert("title".into(), json!(t));
    }
    org.insert("primary".into(), json!(true));
    org.insert("customType".into(), json!(""));
    u["organizations"] = json!([Value::Object(org)]);
    u["externalIds"] = match &p.employee_id {
        Some(e) => json!([{"value": e, "type": "organization"}]),
        None => json!([]),
    };
    u["relations"] = match &p.manager {
        Some(m) => json!([{"value": m, "type": "manager"}]),
        None => json!([]),
    };
    u["suspended"] = json!(!p.enabled && !p.archived);
    u["archived"] = json!(!p.enabled && p.archived);
    u
}

/// The whole Google domain, replaced in one lock of the mock.
fn publish_google(mock: &GoogleMock, world: &World) {
    let users: Vec<Value> = world
        .people
        .values()
        .filter(|p| p.present)
        .map(google_object)
        .collect();
    mock.with(|s| {
        s.users = users;
        s.log.clear();
        s.user_queries.clear();
    });
}

/// The whole CSV export, written next to the file and renamed over it.
fn publish_csv(path: &Path, world: &World) {
    let tmp = path.with_extension("csv.tmp");
    {
        let mut w = csv::Writer::from_path(&tmp).expect("csv");
        w.write_record([
            "external_id",
            "user_name",
            "email",
            "given_name",
            "family_name",
            "display_name",
            "department",
            "job_title",
            "employee_id",
            "manager_email",
            "active",
        ])
        .expect("csv header");
        for p in world.people.values().filter(|p| p.present) {
            let o = |v: &Option<String>| v.clone().unwrap_or_default();
            w.write_record([
                p.id.clone(),
                p.user_name.clone(),
                p.user_name.clone(),
                p.given.clone(),
                p.family.clone(),
                p.display.clone(),
                o(&p.department),
                o(&p.job_title),
                o(&p.employee_id),
                o(&p.manager),
                if p.enabled { "true" } else { "false" }.to_string(),
            ])
            .expect("csv row");
        }
        w.flush().expect("csv flush");
    }
    std::fs::rename(&tmp, path).expect("rename csv");
}

struct Mocks {
    graph: GraphMock,
    google: GoogleMock,
    scim: Option<ScimMock>,
    csv_path: PathBuf,
    learners_db: PathBuf,
}

impl Mocks {
    fn publish(&self, world: &World, events: &[Event]) {
        match world.kind {
            Kind::Entra => publish_entra(&self.graph, events),
            Kind::Google => publish_google(&self.google, world),
            Kind::Csv => publish_csv(&self.csv_path, world),
        }
    }
}

// ---------------------------------------------------------------------------------
// Reading the store

/// Every learner of the store by directory name, and external ids seen more than once.
struct StoreView {
    rows: BTreeMap<String, BTreeMap<String, Row>>,
    duplicates: BTreeMap<String, Vec<String>>,
    /// SCIM users whose externalId no directory of the harness ever had.
    strays: Vec<String>,
}

fn read_sqlite(db: &Path, directory: &str) -> Result<BTreeMap<String, Row>, String> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare(
            "SELECT external_id, user_name, email, given_name, family_name, display_name,
                    department, job_title, employee_id, manager_email, active
             FROM learners WHERE directory = ?1",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([directory], |r| {
            let mut cols: [Option<String>; 9] = Default::default();
            for (i, c) in cols.iter_mut().enumerate() {
                *c = r.get(i + 1)?;
            }
            Ok((
                r.get::<_, String>(0)?,
                Row {
                    cols,
                    active: r.get::<_, i64>(10)? == 1,
                },
            ))
        })
        .map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (id, row) = row.map_err(|e| e.to_string())?;
        out.insert(id, row);
    }
    Ok(out)
}

fn scim_row(u: &Value, user_names: &BTreeMap<String, String>) -> Row {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let ext = &u[ENTERPRISE];
    let manager = ext["manager"]["value"].as_str().map(|id| {
        user_names
            .get(id)
            .cloned()
            .unwrap_or(format!("<scim id {id}>"))
    });
    Row {
        cols: [
            s(&u["userName"]),
            s(&u["emails"][0]["value"]),
            s(&u["name"]["givenName"]),
            s(&u["name"]["familyName"]),
            s(&u["displayName"]),
            s(&ext["department"]),
            s(&u["title"]),
            s(&ext["employeeNumber"]),
            manager,
        ],
        active: u["active"].as_bool().unwrap_or(true),
    }
}

/// The SCIM provider's users, assigned to directories by the ids the harness made.
fn read_scim(mock: &ScimMock, owner: &BTreeMap<String, String>) -> StoreView {
    let s = mock.state();
    let user_names: BTreeMap<String, String> = s
        .users
        .iter()
        .map(|(id, u)| (id.clone(), u["userName"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut view = StoreView {
        rows: BTreeMap::new(),
        duplicates: BTreeMap::new(),
        strays: Vec::new(),
    };
    for (scim_id, u) in &s.users {
        let ext = u["externalId"].as_str().unwrap_or("").to_string();
        let Some(dir) = owner.get(&ext) else {
            view.strays
                .push(format!("SCIM user {scim_id} with externalId {ext:?}"));
            continue;
        };
        let rows = view.rows.entry(dir.clone()).or_default();
        if rows.insert(ext.clone(), scim_row(u, &user_names)).is_some() {
            view.duplicates.entry(dir.clone()).or_default().push(ext);
        }
    }
    view
}

/// Compare a directory's rows with the expectation; one line per difference.
fn compare(
    directory: &str,
    expected: &BTreeMap<String, Row>,
    actual: &BTreeMap<String, Row>,
    scim: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    // In SCIM, the manager is a reference to a learner of the same directory; an email
    // no learner has cannot be linked, so only resolvable managers are compared.
    let known: BTreeSet<String> = actual
        .values()
        .flat_map(|r| [r.cols[0].clone(), r.cols[1].clone()])
        .flatten()
        .map(|e| e.to_lowercase())
        .collect();
    for (id, want) in expected {
        let Some(got) = actual.get(id) else {
            out.push(format!("{directory}/{id}: missing from the store"));
            continue;
        };
        if want.active != got.active {
            out.push(format!(
                "{directory}/{id}: active {} in the store, expected {}",
                got.active, want.active
            ));
        }
        for (i, col) in COLUMNS.iter().enumerate() {
            let (w, g) = (&want.cols[i], &got.cols[i]);
            let same = if i == 1 || i == 8 {
                w.as_deref().map(str::to_lowercase) == g.as_deref().map(str::to_lowercase)
            } else {
                w == g
            };
            let skip = scim
                && i == 8
                && w.as_ref()
                    .is_some_and(|m| !known.contains(&m.to_lowercase()));
            if !same && !skip {
                out.push(format!(
                    "{directory}/{id}: {col} = {g:?} in the store, expected {w:?}"
                ));
            }
        }
    }
    for id in actual.keys().filter(|id| !expected.contains_key(*id)) {
        out.push(format!(
            "{directory}/{id}: in the store, not expected (stale)"
        ));
    }
    out
}

// ---------------------------------------------------------------------------------
// The daemon: metrics, logs, /proc

#[derive(Default, Clone)]
struct Scrape {
    /// (directory, outcome) -> runs
    runs: BTreeMap<(String, String), u64>,
    /// (directory, kind) -> actions
    actions: BTreeMap<(String, String), u64>,
}

impl Scrape {
    fn finished(&self, dir: &str) -> u64 {
        self.runs
            .iter()
            .filter(|((d, _), _)| d == dir)
            .map(|(_, n)| n)
            .sum()
    }
    fn not_ok(&self, dir: &str) -> u64 {
        self.runs
            .iter()
            .filter(|((d, o), _)| d == dir && o != "ok")
            .map(|(_, n)| n)
            .sum()
    }
    fn actions(&self, dir: &str) -> Actions {
        let get = |k: &str| {
            self.actions
                .get(&(dir.to_string(), k.to_string()))
                .copied()
                .unwrap_or(0)
        };
        Actions {
            created: get("created"),
            updated: get("updated"),
            deactivated: get("deactivated"),
            reactivated: get("reactivated"),
        }
    }
}

fn parse_metrics(text: &str) -> Scrape {
    let mut s = Scrape::default();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let Ok(scrape) = prometheus_parse::Scrape::parse(lines) else {
        return s;
    };
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        let label = |k: &str| sample.labels.get(k).unwrap_or_default().to_string();
        let dir = label("directory");
        match sample.metric.as_str() {
            "learner_sync_runs_total" => {
                s.runs.insert((dir, label("outcome")), value as u64);
            }
            "learner_sync_actions_total" => {
                s.actions.insert((dir, label("kind")), value as u64);
            }
            _ => {}
        }
    }
    s
}

fn http_get(
    client: &reqwest::blocking::Client,
    port: u16,
    path: &str,
) -> Result<(u16, String), String> {
    let resp = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("connection", "close")
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().map_err(|e| e.to_string())?))
}

#[derive(Default)]
struct LogStats {
    starts: BTreeMap<String, u64>,
    warnings: u64,
    errors: u64,
    recent_problems: Vec<String>,
}

/// Copies the daemon's JSON log to a file and counts run starts, warnings and errors.
fn follow_log(stderr: std::process::ChildStderr, file: PathBuf, stats: Arc<Mutex<LogStats>>) {
    std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(std::fs::File::create(file).expect("log file"));
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let mut st = stats.lock().unwrap();
            if v["message"] == "run started" {
                if let Some(d) = v["directory"].as_str() {
                    *st.starts.entry(d.to_string()).or_default() += 1;
                }
            }
            match v["level"].as_str() {
                Some("WARN") => st.warnings += 1,
                Some("ERROR") => st.errors += 1,
                _ => continue,
            }
            if st.recent_problems.len() < 20 {
                st.recent_problems.push(line.clone());
            }
        }
    });
}

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    threads: u64,
    load1: f64,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    Sample {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
        load1,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Least-squares slope of `ys` over `xs`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}

/// The release binary: built with cargo (examples get no `CARGO_BIN_EXE_*`), found in
/// `<target>/release` next to `<target>/<profile>/examples/soak`.
fn daemon_binary(args: &Args) -> PathBuf {
    if let Some(b) = &args.bin {
        return b.clone();
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "learner-sync",
            "--manifest-path",
        ])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release --bin learner-sync failed"
    );
    let exe = std::env::current_exe().expect("current exe");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target dir");
    let bin = target.join("release").join("learner-sync");
    assert!(bin.exists(), "no binary at {}", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn write_config(dir: &Path, args: &Args, mocks: &Mocks, port: u16) -> PathBuf {
    let config = ConfigBuilder::new()
        .sync("schedule", &q(&format!("every {}", args.every)))
        .guards(1_000_000, 100)
        .sync("full_resync", &q(&args.full_resync))
        .sync("concurrency", "3")
        .table("daemon", &[("listen", &q(&format!("127.0.0.1:{port}")))]);
    let config = match &mocks.scim {
        Some(scim) => config.scim(&scim.base(), r#"{ env = "SOAK_SCIM_TOKEN" }"#),
        None => config,
    };
    let text = config
        .entra(
            "entra",
            &mocks.graph.base(),
            &[("client_secret", r#"{ env = "SOAK_GRAPH_SECRET" }"#)],
        )
        .google("google", &mocks.google.url(), "sa.json", google_mock::ADMIN)
        .csv("hr", "hr.csv")
        .build();
    let path = dir.join("config.toml");
    let private = |p: &Path, text: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, text).expect("write");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    private(&path, &text);
    private(&dir.join("sa.json"), &mocks.google.key_json());
    path
}

// ---------------------------------------------------------------------------------
// The soak

struct Track {
    name: &'static str,
    world: World,
    expected: BTreeMap<String, Row>,
    /// The actions the runs up to `verify_at` should add to the counters.
    expected_actions: Actions,
    /// Action counters at the last verification.
    base_actions: Actions,
    /// Verify once this many runs finished.
    verify_at: u64,
    /// The change raced a run: the action counts are not compared this time.
    ambiguous: bool,
    waiting_since: Instant,
    verified: u64,
    /// Runs of the directory finished at the last verification.
    runs: u64,
    done: bool,
    changes: Changes,
    actions_seen: Actions,
    mismatches: u64,
    ambiguous_ticks: u64,
    not_ok_seen: u64,
    last_applied: Actions,
}

impl Track {
    fn new(name: &'static str, kind: Kind) -> Track {
        Track {
            name,
            world: World::new(kind),
            expected: BTreeMap::new(),
            expected_actions: Actions::default(),
            base_actions: Actions::default(),
            verify_at: 1,
            ambiguous: false,
            waiting_since: Instant::now(),
            verified: 0,
            runs: 0,
            done: false,
            changes: Changes::default(),
            actions_seen: Actions::default(),
            mismatches: 0,
            ambiguous_ticks: 0,
            not_ok_seen: 0,
            last_applied: Actions::default(),
        }
    }
}

fn stop_daemon(child: &mut Child) -> Result<String, String> {
    // SAFETY: signalling our own child by its pid.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if rc != 0 {
        return Err("kill(SIGTERM) failed".into());
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(45) {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            let took = t.elapsed().as_secs_f64();
            return if status.success() {
                Ok(format!("exit 0 after SIGTERM in {took:.2} s"))
            } else {
                Err(format!("{status} after SIGTERM in {took:.2} s"))
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err("did not exit within 45 s of SIGTERM; killed".into())
}

fn main() {
    let args = Args::parse();
    let bin = daemon_binary(&args);
    let work = tempfile::Builder::new()
        .prefix("learner-sync-soak-")
        .tempdir()
        .expect("temp dir");
    let dir = work.path().to_path_buf();

    let graph = GraphMock::start(GRAPH_SECRET);
    graph.state().page_size = 999;
    let google = GoogleMock::start();
    let scim = (args.store == StoreKind::Scim).then(|| ScimMock::start(SCIM_TOKEN));
    let mocks = Mocks {
        graph,
        google,
        scim,
        csv_path: dir.join("hr.csv"),
        learners_db: dir.join("learners.db"),
    };
    let mut rng = Rng(args.seed);
    let mut tracks = vec![
        Track::new("entra", Kind::Entra),
        Track::new("google", Kind::Google),
        Track::new("hr", Kind::Csv),
    ];
    for t in &mut tracks {
        let events = t.world.populate(args.users);
        mocks.publish(&t.world, &events);
        let (expected, actions) = t.world.expected(&BTreeMap::new());
        t.expected = expected;
        t.expected_actions = actions;
        t.changes.creates += args.users as u64;
    }
    let port = free_port();
    let config = write_config(&dir, &args, &mocks, port);
    let commit = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "soak: {} for {} min, schedule every {}, {} users x 3 directories, {} changes per directory per tick, store {:?}, Entra full re-read every {}, seed {}",
        bin.display(),
        args.minutes,
        args.every,
        args.users,
        args.changes,
        args.store,
        args.full_resync,
        args.seed
    );
    println!(
        "soak: source {commit}, work folder {}, {} cores",
        dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let stats = Arc::new(Mutex::new(LogStats::default()));
    let mut child = Command::new(&bin)
        .arg("daemon")
        .arg("--config")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("LEARNER_SYNC_LOG", "info,rusqlite_migration=warn")
        .env("SOAK_GRAPH_SECRET", GRAPH_SECRET)
        .env("SOAK_SCIM_TOKEN", SCIM_TOKEN)
        .env_remove("LEARNER_SYNC_CONFIG")
        .env_remove("LEARNER_SYNC_FAULT")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    follow_log(
        child.stderr.take().expect("stderr"),
        dir.join("daemon.log"),
        stats.clone(),
    );
    let started = Instant::now();
    for t in &mut tracks {
        t.waiting_since = started;
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");

    let soak_end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let stall = args.every_dur * 3 + Duration::from_secs(300);
    let hard_end = soak_end + stall;
    let mut problems: Vec<String> = Vec::new();
    let mut samples: Vec<(u64, f64, Sample)> = Vec::new();
    let mut printed_tick = 0u64;
    let mut stop_note = String::new();

    println!(
        "{:>4} {:>7} | {:>22} {:>22} {:>22} | {:>4} {:>3} | {:>8} {:>4} {:>4} {:>5}",
        "tick",
        "min",
        "entra (actions)",
        "google (actions)",
        "hr (actions)",
        "mism",
        "amb",
        "RSS MiB",
        "fds",
        "thr",
        "load1"
    );
    loop {
        if Instant::now() > hard_end {
            problems.push("the soak did not finish in time (hard deadline)".into());
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            problems.push(format!("the daemon exited by itself: {status}"));
            break;
        }
        let scrape = match http_get(&client, port, "/metrics") {
            Ok((200, text)) => parse_metrics(&text),
            _ => {
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        let scim_view = mocks.scim.as_ref().map(|m| {
            let owner: BTreeMap<String, String> = tracks
                .iter()
                .flat_map(|t| {
                    t.world
                        .people
                        .keys()
                        .map(|id| (id.clone(), t.name.to_string()))
                })
                .collect();
            read_scim(m, &owner)
        });
        if let Some(v) = &scim_view {
            for s in &v.strays {
                problems.push(format!("stray: {s}"));
            }
        }
        for t in tracks.iter_mut() {
            let finished = scrape.finished(t.name);
            if t.done || finished < t.verify_at {
                if !t.done && t.waiting_since.elapsed() > stall {
                    problems.push(format!(
                        "{}: no run finished within {} s (runs {finished}, waiting for {})",
                        t.name,
                        stall.as_secs(),
                        t.verify_at
                    ));
                    t.done = true;
                }
                continue;
            }
            // A run finished: check the store and the counters.
            let not_ok = scrape.not_ok(t.name);
            if not_ok > t.not_ok_seen {
                problems.push(format!(
                    "{}: {} run(s) not ok (failed or held) by run {finished}",
                    t.name,
                    not_ok - t.not_ok_seen
                ));
                t.not_ok_seen = not_ok;
            }
            let actual = match &scim_view {
                Some(v) => {
                    if let Some(d) = v.duplicates.get(t.name) {
                        for id in d {
                            problems.push(format!("{}/{id}: duplicate in the store", t.name));
                            t.mismatches += 1;
                        }
                    }
                    v.rows.get(t.name).cloned().unwrap_or_default()
                }
                None => match read_sqlite(&mocks.learners_db, t.name) {
                    Ok(rows) => rows,
                    Err(e) => {
                        problems.push(format!("{}: cannot read the store: {e}", t.name));
                        BTreeMap::new()
                    }
                },
            };
            let diffs = compare(t.name, &t.expected, &actual, scim_view.is_some());
            let actions = scrape.actions(t.name);
            let applied = actions.minus(&t.base_actions);
            t.actions_seen.add(&applied);
            t.last_applied = applied;
            if !diffs.is_empty() {
                t.mismatches += diffs.len() as u64;
                problems.push(format!(
                    "{}: {} mismatch(es) after run {finished}; first: {}",
                    t.name,
                    diffs.len(),
                    diffs
                        .iter()
                        .take(8)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
            if !t.ambiguous && applied != t.expected_actions {
                t.mismatches += 1;
                problems.push(format!(
                    "{}: run {finished} applied {} but the changes imply {}",
                    t.name,
                    applied.show(),
                    t.expected_actions.show()
                ));
            }
            t.base_actions = actions;
            t.verified += 1;
            t.runs = finished;
            if Instant::now() >= soak_end {
                t.done = true;
                continue;
            }
            // Change the directory for the next tick.
            let in_progress = |name: &str| {
                stats.lock().unwrap().starts.get(name).copied().unwrap_or(0) > finished
            };
            let raced_before = in_progress(t.name);
            let (events, changes) = t.world.mutate(&mut rng, t.verified, args.changes);
            mocks.publish(&t.world, &events);
            let (expected, implied) = t.world.expected(&t.expected);
            t.expected = expected;
            t.expected_actions = implied;
            t.changes.add(&changes);
            std::thread::sleep(Duration::from_millis(50));
            t.ambiguous = raced_before || in_progress(t.name);
            if t.ambiguous {
                t.ambiguous_ticks += 1;
                t.verify_at = finished + 2;
            } else {
                t.verify_at = finished + 1;
            }
            t.waiting_since = Instant::now();
        }

        let tick = tracks.iter().map(|t| t.verified).min().unwrap_or(0);
        if tick > printed_tick {
            printed_tick = tick;
            // Let the metrics connection close before counting fds.
            std::thread::sleep(Duration::from_millis(300));
            let s = sample(pid);
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            samples.push((tick, minutes, s));
            let col = |t: &Track| {
                format!(
                    "{:>5} {:<16}",
                    t.world.people.values().filter(|p| p.present).count(),
                    t.last_applied.show()
                )
            };
            println!(
                "{:>4} {:>7.2} | {:>22} {:>22} {:>22} | {:>4} {:>3} | {:>8.1} {:>4} {:>4} {:>5.2}",
                tick,
                minutes,
                col(&tracks[0]),
                col(&tracks[1]),
                col(&tracks[2]),
                tracks.iter().map(|t| t.mismatches).sum::<u64>(),
                tracks.iter().map(|t| t.ambiguous_ticks).sum::<u64>(),
                mib(s.rss_kib),
                s.fds,
                s.threads,
                s.load1
            );
        }
        if tracks.iter().all(|t| t.done) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Problems so far, as they happened.
    for p in &problems {
        println!("PROBLEM: {p}");
    }

    std::thread::sleep(Duration::from_millis(300));
    let end_sample = sample(pid);
    let health = http_get(&client, port, "/healthz")
        .map(|(s, _)| s)
        .unwrap_or(0);
    match stop_daemon(&mut child) {
        Ok(note) => stop_note = note,
        Err(e) => problems.push(format!("stop: {e}")),
    }
    if health != 200 {
        problems.push(format!("/healthz answered {health} before the stop"));
    }

    // Summary.
    let first = samples.first().map(|s| s.2).unwrap_or_default();
    let end = end_sample;
    let max_rss = samples.iter().map(|s| s.2.rss_kib).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.2.fds).max().unwrap_or(0);
    let max_thr = samples.iter().map(|s| s.2.threads).max().unwrap_or(0);
    let min_load = samples.iter().map(|s| s.2.load1).fold(f64::MAX, f64::min);
    let max_load = samples.iter().map(|s| s.2.load1).fold(0.0, f64::max);
    let later: Vec<(f64, f64)> = samples
        .iter()
        .skip(1)
        .map(|s| (s.1, mib(s.2.rss_kib)))
        .collect();
    let rss_slope_per_hour = slope(&later) * 60.0;
    let ticks = tracks.iter().map(|t| t.verified).min().unwrap_or(0);
    let mismatches: u64 = tracks.iter().map(|t| t.mismatches).sum();
    let ambiguous: u64 = tracks.iter().map(|t| t.ambiguous_ticks).sum();
    let mut changes = Changes::default();
    let mut actions = Actions::default();
    for t in &tracks {
        changes.add(&t.changes);
        actions.add(&t.actions_seen);
    }
    let (warnings, errors, recent) = {
        let st = stats.lock().unwrap();
        (st.warnings, st.errors, st.recent_problems.clone())
    };
    let rss_growth_mib = mib(end.rss_kib) - mib(first.rss_kib);
    if rss_growth_mib > args.rss_bound_mib {
        problems.push(format!(
            "RSS grew by {rss_growth_mib:.1} MiB (bound {} MiB)",
            args.rss_bound_mib
        ));
    }
    if end.fds > first.fds + args.fd_slack {
        problems.push(format!(
            "open fds grew from {} to {} (slack {})",
            first.fds, end.fds, args.fd_slack
        ));
    }
    if errors > 0 {
        problems.push(format!("{errors} ERROR line(s) in the daemon log"));
    }
    println!();
    println!("== soak summary ==");
    println!(
        "duration            {:.1} min (schedule every {}, {} cores, load1 {:.2}..{:.2})",
        started.elapsed().as_secs_f64() / 60.0,
        args.every,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if min_load == f64::MAX { 0.0 } else { min_load },
        max_load
    );
    println!(
        "ticks verified      {ticks} (runs per directory: {})",
        tracks
            .iter()
            .map(|t| format!("{} {}", t.name, t.runs))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for t in &tracks {
        let c = &t.changes;
        println!(
            "{:<6} changes       {} (creates {}, updates {}, disables {}, enables {}, removals {}, restores {}, hard deletes {}); daemon actions {} ({}); listed now {}, learners {}",
            t.name,
            c.total(),
            c.creates,
            c.updates,
            c.disables,
            c.enables,
            c.removals,
            c.restores,
            c.hard_deletes,
            t.actions_seen.total(),
            t.actions_seen.show(),
            t.world.people.values().filter(|p| p.present).count(),
            t.expected.len()
        );
    }
    println!(
        "changes total       {} made by the harness; {} actions applied by the daemon ({})",
        changes.total(),
        actions.total(),
        actions.show()
    );
    println!("mismatches          {mismatches}");
    println!("ambiguous ticks     {ambiguous} (a change raced a run; checked one run later)");
    println!(
        "RSS                 start {:.1} MiB (after tick 1), end {:.1} MiB, max {:.1} MiB, growth {:+.1} MiB (bound {} MiB), trend {:+.2} MiB/h after tick 1",
        mib(first.rss_kib),
        mib(end.rss_kib),
        mib(max_rss.max(end.rss_kib)),
        rss_growth_mib,
        args.rss_bound_mib,
        rss_slope_per_hour
    );
    println!(
        "open fds            start {}, end {}, max {} (slack {})",
        first.fds,
        end.fds,
        max_fds.max(end.fds),
        args.fd_slack
    );
    println!(
        "threads             start {}, end {}, max {}",
        first.threads,
        end.threads,
        max_thr.max(end.threads)
    );
    println!("daemon log          {warnings} warning(s), {errors} error(s)");
    for line in recent.iter().take(5) {
        println!("  {line}");
    }
    println!(
        "stop                {}",
        if stop_note.is_empty() {
            "FAILED"
        } else {
            &stop_note
        }
    );
    if args.keep || !problems.is_empty() {
        let kept = work.keep();
        println!("work folder kept    {}", kept.display());
    }
    if problems.is_empty() {
        println!("RESULT              PASS");
    } else {
        println!("RESULT              FAIL");
        for p in &problems {
            println!("  - {p}");
        }
        std::process::exit(1);
    }
}
