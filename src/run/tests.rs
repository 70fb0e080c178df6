//! In-process runs against an in-memory store: the steps joined, without a binary.

use std::time::Instant;

use super::*;
use crate::store::memory::MemoryStore;

const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

fn csv(ids: impl IntoIterator<Item = u32>) -> String {
    let mut s = HEADER.to_string();
    for id in ids {
        s.push_str(&format!(
            "E{id},user{id}@x.io,user{id}@x.io,Given{id},Family{id},Sales,true\n"
        ));
    }
    s
}

struct Env {
    dir: tempfile::TempDir,
    config: Config,
    store: Option<MemoryStore>,
}

impl Env {
    fn new(max_deactivations: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let text = format!(
            "[sync]\nstate_db = \"state.db\"\nmax_deactivations = {max_deactivations}\nmax_deactivation_percent = 100\n\n[store]\nkind = \"sqlite\"\npath = \"unused.db\"\n\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n"
        );
        let config = Config::parse(&path, &text).unwrap();
        Env {
            dir,
            config,
            store: Some(MemoryStore::default()),
        }
    }

    fn write(&self, csv: &str) {
        std::fs::write(self.dir.path().join("hr.csv"), csv).unwrap();
    }

    /// One run with the memory store; the store survives to the next run.
    async fn run(&mut self) -> RunReport {
        let dir = self.config.directory("hr").unwrap().clone();
        let mut source = Source::for_directory(&dir, Duration::from_secs(5)).unwrap();
        let opened = Opened {
            _lock: Some(lock_directory(&self.config, "hr").unwrap()),
            state: Some(State::open(&self.config.sync.state_db).unwrap()),
            store: Store::Memory(self.store.take().unwrap()),
            dry_run: false,
        };
        let mut opened = opened;
        let report = match steps(
            &self.config,
            &dir,
            &mut source,
            RunOptions::default(),
            &mut opened,
            Instant::now(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => RunReport::failed("hr", Instant::now(), 0, e),
        };
        let Store::Memory(m) = opened.store else {
            unreachable!()
        };
        self.store = Some(m);
        report
    }

    fn active(&self) -> usize {
        let s = self.store.as_ref().unwrap();
        s.learners.values().filter(|l| l.active).count()
    }
}

#[tokio::test]
async fn a_run_creates_then_deactivates_who_left_the_file() {
    let mut env = Env::new(50);
    env.write(&csv(1..=3));
    let r = env.run().await;
    assert_eq!((r.outcome, r.counts.created), (Outcome::Ok, 3), "{r:?}");
    env.write(&csv(1..=2));
    let r = env.run().await;
    assert_eq!((r.outcome, r.counts.deactivated), (Outcome::Ok, 1), "{r:?}");
    assert_eq!(env.active(), 2);
    // The store forgot the keys of the runs the state DB committed.
    assert!(env.store.as_ref().unwrap().run_keys.is_empty());
}

#[tokio::test]
async fn a_guard_holds_deactivations_over_the_limit() {
    let mut env = Env::new(1);
    env.write(&csv(1..=4));
    env.run().await;
    env.write(&csv(1..=1));
    let r = env.run().await;
    assert_eq!((r.outcome, r.counts.held), (Outcome::Held, 3), "{r:?}");
    assert_eq!(env.active(), 4);
}

#[tokio::test]
async fn a_store_that_fails_fails_the_run_and_the_next_run_completes_it() {
    let mut env = Env::new(50);
    env.write(&csv(1..=2));
    env.store.as_mut().unwrap().fail_next_apply = Some("down".into());
    let r = env.run().await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(!r.error.as_ref().unwrap().is_permanent(), "{r:?}");
    assert_eq!(env.active(), 0);
    let r = env.run().await;
    assert_eq!((r.outcome, r.counts.created), (Outcome::Ok, 2), "{r:?}");
    let st = State::open(&env.config.sync.state_db).unwrap();
    assert!(st.unfinished_runs("hr").unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_file_fails_the_run_permanently_and_changes_nothing() {
    let mut env = Env::new(50);
    env.write(&csv(1..=2));
    env.run().await;
    env.write(&format!("{HEADER}E1,,x,,,,true\n"));
    let r = env.run().await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.error.as_ref().unwrap().is_permanent(), "{r:?}");
    assert_eq!(env.active(), 2);
}

#[test]
fn a_full_read_is_due_once_full_resync_has_passed_since_the_last() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
        .unwrap()
        .to_utc();
    let day = Duration::from_secs(86_400);
    assert!(resync_due(None, now, day));
    assert!(resync_due(Some("not a time"), now, day));
    assert!(!resync_due(Some("2026-12-02T00:00:01Z"), now, day));
    assert!(resync_due(Some("2026-12-01T12:00:00Z"), now, day));
}

#[test]
fn only_a_write_of_directory_fields_without_a_user_name_is_refused() {
    use crate::model::DeactivationReason;
    use crate::plan::Plan;
    let fields = |name: &str| LearnerFields {
        user_name: name.into(),
        ..Default::default()
    };
    let guarded = |operations| Guarded {
        apply: Plan {
            operations,
            unchanged: 0,
        },
        ..Default::default()
    };
    let update = Operation::Update {
        external_id: "u1".into(),
        fields: fields(""),
        changes: vec![],
    };
    assert_eq!(blank_user_name(&guarded(vec![update])), Some("u1".into()));
    // A learner the store already holds without one is deactivated as it is.
    let deactivate = Operation::Deactivate {
        external_id: "u2".into(),
        fields: fields(""),
        changes: vec![],
        reason: DeactivationReason::DeletedInDirectory,
    };
    assert_eq!(blank_user_name(&guarded(vec![deactivate])), None);
    let fine = Operation::Create {
        external_id: "u3".into(),
        fields: fields("c@x.io"),
    };
    assert_eq!(blank_user_name(&guarded(vec![fine])), None);
}
