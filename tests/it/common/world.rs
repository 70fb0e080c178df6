//! The world model of the crash suites: the directory as the test knows it, the
//! learners the store must then hold, and the action log replayed per learner; with
//! the readers of what the SQLite store and state DB hold.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{rows, Env};

/// One directory user as the test's model knows it.
#[derive(Debug, Clone)]
pub struct Person {
    pub user_name: String,
    pub given: String,
    pub family: String,
    pub dept: String,
    pub title: String,
    /// Why the directory has this user off (`disabled`, `suspended`, `archived`), if it does.
    pub off: Option<&'static str>,
    /// Still in the directory (not deleted).
    pub present: bool,
}

impl Person {
    pub fn new(user_name: String, given: &str, family: &str, dept: &str, title: &str) -> Person {
        Person {
            user_name,
            given: given.into(),
            family: family.into(),
            dept: dept.into(),
            title: title.into(),
            off: None,
            present: true,
        }
    }

    pub fn active(&self) -> bool {
        self.present && self.off.is_none()
    }

    /// The reason the action log must give for the learner's last deactivation.
    pub fn reason(&self) -> Option<String> {
        if !self.present {
            Some("deleted in directory".into())
        } else {
            self.off.map(|o| format!("{o} in directory"))
        }
    }
}

/// Every user ever created, by external id (nobody is ever created already off).
pub type Model = BTreeMap<String, Person>;

/// The learner fields the test checks, as the store holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learner {
    pub user_name: String,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub active: bool,
}

pub fn expected(model: &Model) -> BTreeMap<String, Learner> {
    model
        .iter()
        .map(|(id, p)| {
            (
                id.clone(),
                Learner {
                    user_name: p.user_name.clone(),
                    email: Some(p.user_name.clone()),
                    given_name: Some(p.given.clone()),
                    family_name: Some(p.family.clone()),
                    department: Some(p.dept.clone()),
                    job_title: Some(p.title.clone()),
                    active: p.active(),
                },
            )
        })
        .collect()
}

/// The store equals the model: the same learners (none missing, none extra), each
/// with the right fields and `active`.
pub fn assert_store_equals(what: &str, model: &Model, store: &BTreeMap<String, Learner>) {
    let want = expected(model);
    let mut problems = Vec::new();
    for (id, w) in &want {
        match store.get(id) {
            None => problems.push(format!("{id} missing (want {w:?})")),
            Some(got) if got != w => problems.push(format!("{id}: got {got:?}, want {w:?}")),
            Some(_) => {}
        }
    }
    for id in store.keys().filter(|id| !want.contains_key(*id)) {
        problems.push(format!(
            "{id} is in the store but was never in the directory"
        ));
    }
    assert!(
        problems.is_empty(),
        "{what}: {} learners wrong, e.g.:\n{}",
        problems.len(),
        problems
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The learners of a SQLite store, panicking on a duplicate (directory, external_id).
pub fn sqlite_learners(env: &Env, directory: &str) -> BTreeMap<String, Learner> {
    let conn = rusqlite::Connection::open_with_flags(
        env.path("learners.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT external_id, user_name, email, given_name, family_name, department, job_title, active, deactivated_at
             FROM learners WHERE directory = ?1",
        )
        .unwrap();
    let rows = stmt
        .query_map([directory], |r| {
            let active = r.get::<_, i64>(7)? == 1;
            let deactivated_at: Option<String> = r.get(8)?;
            Ok((
                r.get::<_, String>(0)?,
                Learner {
                    user_name: r.get(1)?,
                    email: r.get(2)?,
                    given_name: r.get(3)?,
                    family_name: r.get(4)?,
                    department: r.get(5)?,
                    job_title: r.get(6)?,
                    active,
                },
                deactivated_at,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for (id, learner, deactivated_at) in rows {
        assert_eq!(
            deactivated_at.is_some(),
            !learner.active,
            "{id}: deactivated_at {deactivated_at:?} with active {}",
            learner.active
        );
        assert!(
            out.insert(id.clone(), learner).is_none(),
            "duplicate learner {id}"
        );
    }
    out
}

/// External ids in the state DB's snapshot of `directory`.
pub fn snapshot_ids(env: &Env, state_db: &str, directory: &str) -> BTreeSet<String> {
    rows(
        &env.path(state_db),
        "SELECT external_id FROM snapshot WHERE directory = ?1",
        &[directory],
    )
    .into_iter()
    .map(|r| r[0].clone().expect("external_id"))
    .collect()
}

pub fn present_ids(model: &Model) -> BTreeSet<String> {
    model
        .iter()
        .filter(|(_, p)| p.present)
        .map(|(id, _)| id.clone())
        .collect()
}

/// Outcome of each run, by id, from a state DB.
pub fn run_outcomes(env: &Env, state_db: &str) -> BTreeMap<i64, String> {
    rows(&env.path(state_db), "SELECT id, outcome FROM runs", &[])
        .into_iter()
        .map(|r| {
            let id = r[0]
                .as_deref()
                .and_then(|i| i.parse().ok())
                .expect("run id");
            (id, r[1].clone().unwrap_or_default())
        })
        .collect()
}

/// The action log (`history --json`, newest first) replayed per learner, oldest first.
pub struct Replay {
    /// Whether each learner the log created is active at its end.
    pub state: BTreeMap<String, bool>,
    /// The reason of each learner's last deactivation.
    pub last_reason: BTreeMap<String, String>,
    /// (external id, what is wrong): a transition recorded twice or out of order.
    pub problems: Vec<(String, String)>,
}

pub fn replay(what: &str, records: &[Value]) -> Replay {
    let mut state: BTreeMap<String, bool> = BTreeMap::new();
    let mut last_reason: BTreeMap<String, String> = BTreeMap::new();
    let mut problems: Vec<(String, String)> = Vec::new();
    for r in records.iter().rev() {
        let id = r["external_id"].as_str().unwrap().to_string();
        let problem = match r["action"].as_str().unwrap() {
            "created" => state.insert(id.clone(), true).map(|_| "created twice"),
            "deactivated" => {
                last_reason.insert(
                    id.clone(),
                    r["reason"].as_str().unwrap_or_default().to_string(),
                );
                (state.insert(id.clone(), false) != Some(true))
                    .then_some("deactivated while not active")
            }
            "reactivated" => (state.insert(id.clone(), true) != Some(false))
                .then_some("reactivated while active"),
            "updated" | "held" => (!state.contains_key(&id)).then_some("updated before created"),
            other => panic!("{what}: unexpected action {other}"),
        };
        if let Some(p) = problem {
            problems.push((id, p.to_string()));
        }
    }
    Replay {
        state,
        last_reason,
        problems,
    }
}

/// Replay the action log per learner (oldest first): each transition recorded exactly
/// once, the replayed states equal the store, and each inactive learner's last
/// deactivation gives the reason the directory has. What is wrong, if anything, shows
/// a few offending learners with their records and the outcome of those records' runs
/// (the tests assert it is nothing at their end, so that every phase still runs).
pub fn log_replay_problems(
    what: &str,
    records: &[Value],
    runs: &BTreeMap<i64, String>,
    store: &BTreeMap<String, Learner>,
    model: &Model,
) -> Option<String> {
    let Replay {
        state,
        last_reason,
        mut problems,
    } = replay(what, records);
    for id in state.keys().filter(|id| !store.contains_key(*id)) {
        problems.push((id.clone(), "in the log, not in the store".into()));
    }
    for (id, learner) in store {
        match state.get(id) {
            None => problems.push((id.clone(), "in the store, not in the log".into())),
            Some(a) if *a != learner.active => problems.push((
                id.clone(),
                format!("log says active={a}, store says {}", learner.active),
            )),
            Some(_) => {}
        }
        let want = model.get(id).and_then(Person::reason);
        if !learner.active && last_reason.get(id) != want.as_ref() {
            problems.push((
                id.clone(),
                format!("logged reason {:?}, want {want:?}", last_reason.get(id)),
            ));
        }
    }
    if problems.is_empty() {
        return None;
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, p) in &problems {
        *kinds.entry(p.as_str()).or_default() += 1;
    }
    let mut detail = String::new();
    for (id, p) in problems.iter().take(4) {
        detail.push_str(&format!("{id}: {p}; its records, oldest first:\n"));
        for r in records
            .iter()
            .rev()
            .filter(|r| r["external_id"] == id.as_str())
        {
            let run = r["run"].as_i64().unwrap_or_default();
            detail.push_str(&format!(
                "    run {run} ({}) {} {:?} {}\n",
                runs.get(&run).map(String::as_str).unwrap_or("?"),
                r["action"],
                r["reason"].as_str().unwrap_or_default(),
                r["time"]
            ));
        }
    }
    Some(format!(
        "{what}: the action log does not replay to the store: {} problems {kinds:?}\n{detail}",
        problems.len()
    ))
}

/// Ids of `model` for which `pick` holds, skipping (and then marking) those already
/// changed in this phase, so that each user changes at most once per phase.
pub fn choose(
    model: &Model,
    touched: &mut BTreeSet<String>,
    pick: impl Fn(usize, &Person) -> bool,
) -> Vec<String> {
    let ids: Vec<String> = model
        .iter()
        .enumerate()
        .filter(|(i, (id, p))| !touched.contains(*id) && pick(*i, p))
        .map(|(_, (id, _))| id.clone())
        .collect();
    touched.extend(ids.iter().cloned());
    ids
}
