//! The scheduler under a paused tokio clock, with fake runners that record when
//! they ran.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;

/// Records (directory, start, end) in seconds since the test began; each run takes
/// `takes` and ends as `result` says.
struct FakeRunner {
    base: Instant,
    takes: Duration,
    results: Mutex<BTreeMap<String, RunResult>>,
    runs: Mutex<Vec<(String, f64, f64)>>,
    in_flight: Mutex<BTreeMap<String, usize>>,
    max_in_flight_per_directory: AtomicUsize,
    total_in_flight: AtomicUsize,
    max_total_in_flight: AtomicUsize,
    /// Runs hang outside any await point the stop signal could reach.
    ignores_stop: std::sync::atomic::AtomicBool,
    timeouts: Mutex<Vec<(String, f64)>>,
}

impl FakeRunner {
    fn new(takes: Duration) -> Arc<FakeRunner> {
        Arc::new(FakeRunner {
            base: Instant::now(),
            takes,
            results: Mutex::new(BTreeMap::new()),
            runs: Mutex::new(vec![]),
            in_flight: Mutex::new(BTreeMap::new()),
            max_in_flight_per_directory: AtomicUsize::new(0),
            total_in_flight: AtomicUsize::new(0),
            max_total_in_flight: AtomicUsize::new(0),
            ignores_stop: std::sync::atomic::AtomicBool::new(false),
            timeouts: Mutex::new(vec![]),
        })
    }

    fn starts(&self, directory: &str) -> Vec<f64> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == directory)
            .map(|r| r.1)
            .collect()
    }
}

impl Runner for Arc<FakeRunner> {
    fn run(
        &self,
        _config: Arc<Config>,
        directory: String,
        mut stop: watch::Receiver<Stop>,
    ) -> RunFuture {
        let me = self.clone();
        Box::pin(async move {
            let start = me.base.elapsed().as_secs_f64();
            {
                let mut f = me.in_flight.lock().unwrap();
                let n = f.entry(directory.clone()).or_default();
                *n += 1;
                me.max_in_flight_per_directory
                    .fetch_max(*n, Ordering::SeqCst);
            }
            if me.ignores_stop.load(Ordering::SeqCst) {
                me.runs
                    .lock()
                    .unwrap()
                    .push((directory.clone(), start, f64::NAN));
                std::future::pending::<()>().await;
            }
            let total = me.total_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            me.max_total_in_flight.fetch_max(total, Ordering::SeqCst);
            let stopped = tokio::select! {
                _ = tokio::time::sleep(me.takes) => None,
                why = stop_requested(&mut stop) => Some(why),
            };
            me.total_in_flight.fetch_sub(1, Ordering::SeqCst);
            *me.in_flight.lock().unwrap().get_mut(&directory).unwrap() -= 1;
            let end = me.base.elapsed().as_secs_f64();
            me.runs
                .lock()
                .unwrap()
                .push((directory.clone(), start, end));
            match stopped {
                Some(Stop::TimedOut) => RunResult::Failed("timed out".into()),
                Some(_) => RunResult::Cancelled,
                None => me
                    .results
                    .lock()
                    .unwrap()
                    .get(&directory)
                    .cloned()
                    .unwrap_or(RunResult::Ok),
            }
        })
    }

    fn timed_out(&self, _config: &Config, directory: &str, _error: &str, _after: Duration) {
        let at = self.base.elapsed().as_secs_f64();
        self.timeouts
            .lock()
            .unwrap()
            .push((directory.to_string(), at));
    }
}

fn config(text: &str) -> Arc<Config> {
    Arc::new(Config::parse(Path::new("/tmp/cfg/config.toml"), text).unwrap())
}

fn two_dirs(sync: &str) -> String {
    format!(
        "[sync]\n{sync}\n[[directory]]\nname = \"a\"\nkind = \"csv\"\npath = \"a.csv\"\n[[directory]]\nname = \"b\"\nkind = \"csv\"\npath = \"b.csv\"\n"
    )
}

fn options(jitter: bool) -> (Options, Arc<Health>) {
    let health = Arc::new(Health::new(2));
    let mut o = Options::new(health.clone(), Arc::new(Metrics::new()));
    o.jitter = jitter;
    o.wall_origin = DateTime::parse_from_rfc3339("2026-01-01T00:00:30Z")
        .unwrap()
        .with_timezone(&Utc);
    (o, health)
}

/// Run the scheduler for `secs` of (paused, auto-advanced) tokio time.
async fn run_for(cfg: Arc<Config>, runner: Arc<FakeRunner>, opts: Options, secs: u64) {
    let (_tx, rx) = watch::channel(cfg);
    let shutdown = tokio::time::sleep(Duration::from_secs(secs));
    run(rx, Arc::new(runner), opts, shutdown).await;
}

#[tokio::test(start_paused = true)]
async fn every_schedule_runs_at_start_then_on_each_tick() {
    let runner = FakeRunner::new(Duration::from_millis(100));
    let (opts, _) = options(false);
    run_for(
        config(&two_dirs("schedule = \"every 10s\"")),
        runner.clone(),
        opts,
        35,
    )
    .await;
    assert_eq!(runner.starts("a"), vec![0.0, 10.0, 20.0, 30.0]);
    assert_eq!(runner.starts("b"), vec![0.0, 10.0, 20.0, 30.0]);
}

#[tokio::test(start_paused = true)]
async fn cron_schedule_runs_at_start_then_at_cron_times() {
    let runner = FakeRunner::new(Duration::from_millis(100));
    // Wall clock starts at 00:00:30; "every minute at second 0" ticks at +30s, +90s, ...
    let (opts, _) = options(false);
    run_for(
        config(&two_dirs("schedule = \"* * * * *\"")),
        runner.clone(),
        opts,
        160,
    )
    .await;
    assert_eq!(runner.starts("a"), vec![0.0, 30.0, 90.0, 150.0]);
}

#[tokio::test(start_paused = true)]
async fn missed_ticks_are_skipped_not_queued_and_runs_never_overlap() {
    // Each run takes 25s on a 10s schedule: ticks at 10 and 20 are missed.
    let runner = FakeRunner::new(Duration::from_secs(25));
    let (opts, _) = options(false);
    run_for(
        config(&two_dirs("schedule = \"every 10s\"")),
        runner.clone(),
        opts,
        95,
    )
    .await;
    assert_eq!(runner.starts("a"), vec![0.0, 30.0, 60.0, 90.0]);
    assert_eq!(runner.max_in_flight_per_directory.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limits_directories_running_at_once() {
    let runner = FakeRunner::new(Duration::from_secs(3));
    let (opts, _) = options(false);
    run_for(
        config(&two_dirs("schedule = \"every 10s\"\nconcurrency = 1")),
        runner.clone(),
        opts,
        25,
    )
    .await;
    assert_eq!(runner.max_total_in_flight.load(Ordering::SeqCst), 1);
    let mut all: Vec<f64> = runner.starts("a");
    all.extend(runner.starts("b"));
    all.sort_by(f64::total_cmp);
    // One waits for the other's permit: starts at 0 and 3, then 10 and 13, ...
    assert_eq!(all, vec![0.0, 3.0, 10.0, 13.0, 20.0, 23.0]);
}

#[tokio::test(start_paused = true)]
async fn jitter_delays_ticks_by_at_most_a_tenth_of_the_period() {
    let runner = FakeRunner::new(Duration::ZERO);
    let (opts, _) = options(true);
    run_for(
        config(&two_dirs("schedule = \"every 10s\"")),
        runner.clone(),
        opts,
        100,
    )
    .await;
    let starts = runner.starts("a");
    assert_eq!(starts[0], 0.0, "the first run is at start");
    assert!(starts.len() >= 9, "{starts:?}");
    for (k, s) in starts.iter().enumerate() {
        let tick = 10.0 * k as f64;
        assert!(*s >= tick && *s <= tick + 1.0, "run {k} at {s}: {starts:?}");
    }
    // And it does spread: 9 draws of 0..=1000ms all landing on the tick would be
    // a one-in-10^27 event.
    assert!(
        starts.iter().skip(1).any(|s| s.fract() != 0.0),
        "{starts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_directory_backs_off_and_does_not_stop_the_other() {
    let runner = FakeRunner::new(Duration::ZERO);
    runner
        .results
        .lock()
        .unwrap()
        .insert("a".into(), RunResult::Failed("no file".into()));
    let (opts, health) = options(false);
    let h = health.clone();
    let cfg = config(&two_dirs("schedule = \"every 10s\""));
    let (_tx, rx) = watch::channel(cfg);
    let probe = async move {
        tokio::time::sleep(Duration::from_secs(75)).await;
        h.report()
    };
    let (report, ()) = tokio::join!(
        probe,
        run(
            rx,
            Arc::new(runner.clone()),
            opts,
            // Stop between ticks: a stop at exactly 80 s would race the tick at 80 s.
            tokio::time::sleep(Duration::from_secs(78))
        )
    );
    // Failures at 0 (retry next tick), 10 (wait 1 period), 30 (3 periods), 70.
    assert_eq!(runner.starts("a"), vec![0.0, 10.0, 30.0, 70.0]);
    assert_eq!(runner.starts("b").len(), 8);
    assert_eq!(report.status, "unhealthy");
    assert_eq!(report.failing.len(), 1);
    assert_eq!(report.failing[0].directory, "a");
    assert_eq!(report.failing[0].consecutive_failures, 4);
}

#[tokio::test(start_paused = true)]
async fn a_hung_run_times_out_and_the_directory_retries() {
    let runner = FakeRunner::new(Duration::from_secs(1000));
    let (opts, _) = options(false);
    let cfg = config(&two_dirs("schedule = \"every 10s\"\nrun_timeout = \"15s\""));
    run_for(cfg, runner.clone(), opts, 40).await;
    // 0..15 timed out, next tick 20 (first failure: no backoff), 20..35 timed out.
    assert_eq!(runner.starts("a"), vec![0.0, 20.0]);
    let runs = runner.runs.lock().unwrap();
    assert!(runs.iter().any(|r| r.0 == "a" && r.2 == 15.0));
}

#[tokio::test(start_paused = true)]
async fn stop_lets_a_run_finish_within_the_grace_period() {
    let runner = FakeRunner::new(Duration::from_secs(5));
    let (opts, _) = options(false);
    // Stop at 2s: the runs started at 0 finish at 5 (grace is 10s).
    run_for(
        config(&two_dirs("schedule = \"every 10s\"")),
        runner.clone(),
        opts,
        2,
    )
    .await;
    let runs = runner.runs.lock().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r.2 == 5.0), "{runs:?}");
}

#[tokio::test(start_paused = true)]
async fn stop_abandons_a_run_after_the_grace_period() {
    let runner = FakeRunner::new(Duration::from_secs(1000));
    let (opts, _) = options(false);
    let begun = Instant::now();
    run_for(
        config(&two_dirs("schedule = \"every 10s\"")),
        runner.clone(),
        opts,
        2,
    )
    .await;
    // Stop requested at 2s, grace 10s: abandoned at 12s.
    assert_eq!(begun.elapsed(), Duration::from_secs(12));
    let runs = runner.runs.lock().unwrap();
    assert!(runs.iter().all(|r| r.2 == 12.0), "{runs:?}");
}

#[tokio::test(start_paused = true)]
async fn a_reloaded_config_adds_a_directory_and_its_schedule_applies_from_the_next_tick() {
    let runner = FakeRunner::new(Duration::ZERO);
    let (opts, _) = options(false);
    let one = "[sync]\nschedule = \"every 10s\"\n[[directory]]\nname = \"a\"\nkind = \"csv\"\npath = \"a.csv\"\n";
    let (tx, rx) = watch::channel(config(one));
    let reload = async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        tx.send(config(&two_dirs("schedule = \"every 7s\"")))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(100)).await;
    };
    tokio::join!(
        reload,
        run(
            rx,
            Arc::new(runner.clone()),
            opts,
            tokio::time::sleep(Duration::from_secs(30))
        )
    );
    // a: 0 and 10 under the old config, whose tick at 20 was already scheduled when
    // the reload came at 15; from then on 7s ticks from a's start: 21, 28.
    assert_eq!(runner.starts("a"), vec![0.0, 10.0, 20.0, 21.0, 28.0]);
    // b starts at once when the reload adds it, then every 7s from then.
    assert_eq!(runner.starts("b"), vec![15.0, 22.0, 29.0]);
}

#[tokio::test(start_paused = true)]
async fn a_run_stuck_outside_await_points_is_left_behind_and_the_schedule_goes_on() {
    let runner = FakeRunner::new(Duration::ZERO);
    runner.ignores_stop.store(true, Ordering::SeqCst);
    let (opts, health) = options(false);
    let cfg = config(&two_dirs("schedule = \"every 10s\"\nrun_timeout = \"15s\""));
    let begun = Instant::now();
    run_for(cfg, runner.clone(), opts, 75).await;
    // Timed out at 15, left behind 5s later (20), next tick 30; again at 45/50, then
    // the backoff of the second failure skips to 70.
    assert_eq!(runner.starts("a"), vec![0.0, 30.0, 70.0]);
    let a_timeouts: Vec<f64> = runner
        .timeouts
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.0 == "a")
        .map(|t| t.1)
        .collect();
    assert_eq!(a_timeouts, vec![20.0, 50.0]);
    // Stopping still takes bounded time: grace (10s) + abandon wait (5s) after 75.
    assert_eq!(begun.elapsed(), Duration::from_secs(90));
    assert_eq!(
        health.report().failing.len(),
        0,
        "2 failures are not more than 2"
    );
}
