//! When a directory runs next: pure functions of the schedule, the daemon's start,
//! "now" and the consecutive failures; the clock and the random jitter are parameters.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Schedule;

/// Retries of a failing directory back off at most this far beyond its schedule.
pub const BACKOFF_CAP: Duration = Duration::from_secs(3600);

/// Jitter never exceeds this, whatever the schedule.
pub const JITTER_CAP: Duration = Duration::from_secs(30);

/// The first tick strictly after `after`.
///
/// `every <d>` ticks on a fixed grid from `origin` (the daemon's start): origin + k*d.
/// A run that overruns one or more ticks therefore resumes at the next grid point
/// after it finished, which is what `tokio::time::MissedTickBehavior::Skip` does:
/// missed ticks are skipped, never queued. Cron ticks are the expression's times.
pub fn next_tick(
    schedule: &Schedule,
    origin: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Every(period) => {
            let period = chrono::Duration::from_std(*period).ok()?;
            let period_ns = period.num_nanoseconds().filter(|n| *n > 0)?;
            if after < origin {
                return Some(origin);
            }
            let elapsed_ns = (after - origin).num_nanoseconds()?;
            let k = elapsed_ns / period_ns + 1;
            origin.checked_add_signed(chrono::Duration::nanoseconds(k.checked_mul(period_ns)?))
        }
        Schedule::Cron(_) => schedule.next_after(after),
    }
}

/// The schedule's period near `at`: the gap between its next two ticks.
pub fn period(schedule: &Schedule, at: DateTime<Utc>) -> Duration {
    match schedule {
        Schedule::Every(d) => *d,
        Schedule::Cron(_) => {
            let first = schedule.next_after(at);
            let second = first.and_then(|t| schedule.next_after(t));
            match (first, second) {
                (Some(a), Some(b)) => (b - a).to_std().unwrap_or(BACKOFF_CAP),
                _ => BACKOFF_CAP,
            }
        }
    }
}

/// The largest jitter added to a tick: a tenth of the period, at most [`JITTER_CAP`].
/// Small enough that a run never slides onto the following tick.
pub fn max_jitter(schedule: &Schedule, at: DateTime<Utc>) -> Duration {
    (period(schedule, at) / 10).min(JITTER_CAP)
}

/// A jitter in `[0, max]` drawn from `rng`.
pub fn jitter(max: Duration, rng: &mut impl rand::Rng) -> Duration {
    let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.random_range(0..=max_ms))
}

/// How long after a failed run the directory waits at least before its next try.
/// The first failure retries at the next tick; each further one doubles the wait
/// (one period, three, seven, ...), never beyond [`BACKOFF_CAP`].
pub fn backoff(consecutive_failures: u32, period: Duration) -> Duration {
    if consecutive_failures <= 1 {
        return Duration::ZERO;
    }
    let factor = 2u32
        .checked_pow(consecutive_failures - 1)
        .map(|f| f - 1)
        .unwrap_or(u32::MAX);
    period
        .checked_mul(factor)
        .unwrap_or(BACKOFF_CAP)
        .min(BACKOFF_CAP)
}

/// When the next run of a directory starts, given the run that just finished at `now`.
pub fn next_run(
    schedule: &Schedule,
    origin: DateTime<Utc>,
    now: DateTime<Utc>,
    consecutive_failures: u32,
    jitter: Duration,
) -> Option<DateTime<Utc>> {
    let wait = backoff(consecutive_failures, period(schedule, now));
    let earliest = now + chrono::Duration::from_std(wait).ok()?;
    let tick = next_tick(schedule, origin, earliest)?;
    Some(tick + chrono::Duration::from_std(jitter).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schedule::parse_schedule;
    use rand::SeedableRng;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_ticks_on_a_grid_from_the_start_and_skips_missed_ticks() {
        let s = parse_schedule("every 10m").unwrap();
        let origin = t("2026-01-01T00:00:00Z");
        assert_eq!(
            next_tick(&s, origin, origin),
            Some(t("2026-01-01T00:10:00Z"))
        );
        // A run that finished at 00:34 missed the ticks at 00:10..00:30: next is 00:40.
        assert_eq!(
            next_tick(&s, origin, t("2026-01-01T00:34:00Z")),
            Some(t("2026-01-01T00:40:00Z"))
        );
        assert_eq!(
            next_tick(&s, origin, t("2026-01-01T00:40:00Z")),
            Some(t("2026-01-01T00:50:00Z"))
        );
    }

    #[test]
    fn five_field_cron_ticks_at_its_times() {
        let s = parse_schedule("*/15 * * * *").unwrap();
        let origin = t("2026-01-01T00:07:00Z");
        assert_eq!(
            next_tick(&s, origin, origin),
            Some(t("2026-01-01T00:15:00Z"))
        );
        assert_eq!(
            next_tick(&s, origin, t("2026-01-01T00:52:10Z")),
            Some(t("2026-01-01T01:00:00Z"))
        );
        assert_eq!(period(&s, origin), Duration::from_secs(900));
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_period_and_the_cap() {
        let at = t("2026-01-01T00:00:00Z");
        let every_1s = parse_schedule("every 1s").unwrap();
        let every_40m = parse_schedule("every 40m").unwrap();
        assert_eq!(max_jitter(&every_1s, at), Duration::from_millis(100));
        assert_eq!(max_jitter(&every_40m, at), JITTER_CAP);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws: Vec<Duration> = (0..2000)
            .map(|_| jitter(Duration::from_millis(100), &mut rng))
            .collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_millis(100)));
        // It actually spreads: not all the same value.
        assert!(draws.iter().any(|d| *d != draws[0]));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let p = Duration::from_secs(60);
        assert_eq!(backoff(0, p), Duration::ZERO);
        assert_eq!(backoff(1, p), Duration::ZERO);
        assert_eq!(backoff(2, p), Duration::from_secs(60));
        assert_eq!(backoff(3, p), Duration::from_secs(180));
        assert_eq!(backoff(4, p), Duration::from_secs(420));
        assert_eq!(backoff(30, p), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX, p), BACKOFF_CAP);
    }

    #[test]
    fn next_run_after_failures_skips_ticks_within_the_backoff() {
        let s = parse_schedule("every 1m").unwrap();
        let origin = t("2026-01-01T00:00:00Z");
        let now = t("2026-01-01T00:00:05Z");
        assert_eq!(
            next_run(&s, origin, now, 0, Duration::ZERO),
            Some(t("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            next_run(&s, origin, now, 1, Duration::ZERO),
            Some(t("2026-01-01T00:01:00Z"))
        );
        assert_eq!(
            next_run(&s, origin, now, 3, Duration::from_secs(2)),
            Some(t("2026-01-01T00:04:02Z"))
        );
    }
}
