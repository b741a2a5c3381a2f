//! A client-side limit on ECS calls per second, per region.
//!
//! A burst of commands, or a replay of thousands of dead letters, must not
//! trip the account's API throttling (which would fail the calls of every
//! other system using the account). Each region has a token bucket; a call
//! takes a token at once and, if the bucket is in debt, waits until its token
//! would have been earned. Waiting callers are bounded by the worker's
//! concurrency, so the debt is bounded too. Time is `tokio::time`, so tests
//! run on a paused clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Called with every non-zero wait (for metrics).
pub type WaitObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// Per-region token buckets.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    on_wait: Option<WaitObserver>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// `per_second` calls per region on average, up to `burst` at once.
    /// `per_second` of 0 means no limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            on_wait: None,
        }
    }

    /// Reports each wait (e.g. to a metric).
    pub fn observe(mut self, on_wait: WaitObserver) -> Self {
        self.on_wait = Some(on_wait);
        self
    }

    /// Takes a token for `region`, waiting if needed; returns the time waited.
    pub async fn acquire(&self, region: &str) -> Duration {
        let wait = self.admit(region);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Takes a token for `region` now and says how long the caller must wait
    /// before calling (zero: at once), so the caller can wait its own way
    /// (lending its concurrency slot, giving up on shutdown).
    pub fn admit(&self, region: &str) -> Duration {
        let wait = self.reserve(region, Instant::now());
        if !wait.is_zero()
            && let Some(observe) = &self.on_wait
        {
            observe(wait);
        }
        wait
    }

    fn reserve(&self, region: &str, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(region.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let earned = now.saturating_duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + earned).min(self.burst) - 1.0;
        bucket.last = now;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_paces_per_region() {
        let l = RateLimiter::new(10, 5);
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.acquire("cn-hangzhou").await, Duration::ZERO);
        }
        // The 6th call waits for one token (100 ms at 10/s), the 7th for two.
        assert_eq!(l.reserve("cn-hangzhou", start), Duration::from_millis(100));
        assert_eq!(l.reserve("cn-hangzhou", start), Duration::from_millis(200));
        // Another region has its own bucket.
        assert_eq!(l.acquire("cn-beijing").await, Duration::ZERO);
        // After a second the bucket refilled (capped at the burst).
        let later = start + Duration::from_secs(2);
        assert_eq!(l.reserve("cn-hangzhou", later), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_rate_is_respected() {
        let l = RateLimiter::new(20, 1);
        let start = Instant::now();
        for _ in 0..41 {
            l.acquire("r").await;
        }
        // 41 calls at 20/s with a burst of 1: the last starts at 2 s.
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[test]
    fn zero_means_unlimited() {
        let l = RateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(l.reserve("r", Instant::now()), Duration::ZERO);
        }
    }
}
