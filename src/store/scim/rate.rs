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

impl RateLimit {
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
