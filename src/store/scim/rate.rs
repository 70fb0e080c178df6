//! The request rate limit of one SCIM store (`max_requests_per_second`): every request
//! of the store, whichever task sends it and retries included, takes the next free slot.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Evenly spaced slots, `interval` apart, with no burst: a provider that allows N
/// requests a second (Entra's gallery figure is 25) never sees more in any second.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    /// The earliest time the next request may go.
    next: Mutex<Option<Instant>>,
}

/// The limits in use, by provider and rate: every run of the process that talks to
/// one provider (several directories of a store running at once in the daemon, or two
/// stores on one SCIM tenant) shares one schedule, as the provider counts them.
type Shared = std::collections::HashMap<(String, u64), std::sync::Weak<RateLimit>>;
static SHARED: std::sync::LazyLock<Mutex<Shared>> = std::sync::LazyLock::new(Default::default);

impl RateLimit {
    /// The limit of `provider` at `requests` a second, shared with every other user of
    /// it in this process for as long as one holds it.
    pub fn shared(provider: &str, requests: f64) -> std::sync::Arc<RateLimit> {
        let key = (provider.to_string(), requests.to_bits());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.retain(|_, w| w.strong_count() > 0);
        if let Some(limit) = shared.get(&key).and_then(std::sync::Weak::upgrade) {
            return limit;
        }
        let limit = std::sync::Arc::new(RateLimit::per_second(requests));
        shared.insert(key, std::sync::Arc::downgrade(&limit));
        limit
    }

    pub fn per_second(requests: f64) -> RateLimit {
        let interval = if requests.is_finite() && requests > 0.0 {
            Duration::from_secs_f64(1.0 / requests)
        } else {
            Duration::ZERO
        };
        RateLimit {
            interval,
            next: Mutex::new(None),
        }
    }

    /// Wait for this request's slot. Slots are handed out under the lock and waited
    /// for outside it, so concurrent requests queue in order without holding it.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let now = Instant::now();
        let at = {
            // The slot bookkeeping stays consistent whatever a panicking holder did.
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + self.interval);
            at
        };
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn runs_on_one_provider_share_its_limit_and_other_providers_have_their_own() {
        let a = RateLimit::shared("https://a.example/scim", 25.0);
        let again = RateLimit::shared("https://a.example/scim", 25.0);
        let b = RateLimit::shared("https://b.example/scim", 25.0);
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        drop((a, again));
        // Nobody holds it: the next run starts a new schedule.
        let fresh = RateLimit::shared("https://a.example/scim", 25.0);
        assert_eq!(Arc::strong_count(&fresh), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_rate() {
        let limit = Arc::new(RateLimit::per_second(5.0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let limit = limit.clone();
            tasks.spawn(async move {
                let mut at = vec![];
                for _ in 0..5 {
                    limit.acquire().await;
                    at.push(Instant::now() - start);
                }
                at
            });
        }
        let mut times: Vec<Duration> = vec![];
        while let Some(t) = tasks.join_next().await {
            times.extend(t.unwrap());
        }
        times.sort();
        assert_eq!(times.len(), 20);
        // 20 requests at 5 a second: the first at once, one every 200 ms after it.
        for (i, t) in times.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(200) * i as u32, "request {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_limiter_lets_the_next_request_go_at_once() {
        let limit = RateLimit::per_second(2.0);
        limit.acquire().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = Instant::now();
        limit.acquire().await;
        assert_eq!(Instant::now(), before);
        // ... but the one after it waits its interval.
        limit.acquire().await;
        assert_eq!(Instant::now() - before, Duration::from_millis(500));
    }
}
