//! The client-side pace of ECS calls: a ceiling the operator sets, an adaptive
//! rate under it, and two lanes so security work never queues behind bulk work.
//!
//! - **Ceiling.** `ecs.max_calls_per_second` (with `ecs.rate_burst`) leaves room in
//!   the account's API quota for the other tools that use it: a burst of
//!   commands, or a replay of thousands of dead letters, must not trip the
//!   account's throttling for everyone.
//! - **Adaptive rate.** Under the ceiling, the allowed rate follows what the API
//!   says, per region and account (one bucket each): a `Throttling*` answer
//!   lowers it multiplicatively, and it recovers along a cubic curve back to
//!   (and past) the rate at which the throttling happened, as the AWS SDKs'
//!   adaptive retry mode does (CUBIC, RFC 8312): quickly while far below it,
//!   carefully near it.
//! - **Lanes.** A call in the [`Lane::Security`] lane (leak-alerts) takes the
//!   next token before any queued [`Lane::Bulk`] call (offboarding), so an
//!   incident's calls start as soon as on an idle worker whatever the backlog.
//!
//! A call that finds a token and nobody ahead of it goes at once. Otherwise it
//! queues in its lane and a pacer task of its bucket hands out tokens as they
//! are earned, security first, in order within a lane. A caller that stops
//! waiting (shutdown) simply drops its ticket. Time is `tokio::time`, so
//! tests run on a paused clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Which queue a call waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Leak-alerts: an incident in progress.
    Security,
    /// Offboarding: can wait seconds.
    Bulk,
}

impl Lane {
    /// The lane's name, a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Security => "security",
            Self::Bulk => "bulk",
        }
    }
}

/// Multiplicative decrease on throttling (CUBIC's β).
const BETA: f64 = 0.7;
/// CUBIC's scaling constant (calls/s per s³).
const SCALE: f64 = 0.4;
/// The allowed rate never falls below this (calls per second).
const MIN_RATE: f64 = 0.5;
/// Throttling answers closer together than this lower the rate once: the
/// calls already in flight when the API started throttling answer together.
const THROTTLE_WINDOW: Duration = Duration::from_millis(500);

/// Where the pace is reported (metrics), without coupling this module to them.
pub trait PaceObserver: Send + Sync {
    /// A call waited this long in `lane`.
    fn waited(&self, lane: Lane, wait: Duration);
    /// The API throttled a call of `lane`.
    fn throttled(&self, lane: Lane);
    /// The lowest allowed rate among `region`'s buckets is now `rate`.
    fn allowed_rate(&self, region: &str, rate: f64);
}

/// Which bucket a call draws from: one per region and account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaceKey {
    /// The API region.
    pub region: String,
    /// The account acted in (`None`: the worker's own).
    pub account: Option<String>,
}

/// The pace of ECS calls (see the module docs).
pub struct RateLimiter {
    ceiling: f64,
    burst: f64,
    buckets: Mutex<HashMap<PaceKey, Bucket>>,
    observer: Option<Arc<dyn PaceObserver>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// The allowed rate now (≤ the ceiling).
    rate: f64,
    /// The rate when the API last throttled, and when (CUBIC's W_max and epoch).
    last_max: f64,
    throttled_at: Option<Instant>,
    /// Waiting calls, security first.
    security: VecDeque<Ticket>,
    bulk: VecDeque<Ticket>,
    pacer: bool,
}

#[derive(Debug)]
struct Ticket {
    go: oneshot::Sender<()>,
    since: Instant,
    lane: Lane,
}

/// The answer to [`RateLimiter::admit`]: go now, or wait for a token.
#[derive(Debug)]
pub enum Admission {
    /// A token was free and nobody was ahead: call at once.
    Now,
    /// Wait for this ticket (drop it to give up).
    Wait(oneshot::Receiver<()>),
}

impl RateLimiter {
    /// At most `per_second` calls per region and account on average, up to
    /// `burst` at once; `per_second` of 0 means no limit (nor adaptation).
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            ceiling: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            observer: None,
        }
    }

    /// Reports waits, throttling and the allowed rate (e.g. to metrics).
    pub fn observe(mut self, observer: Arc<dyn PaceObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Asks for a token of `key`'s bucket in `lane`.
    pub fn admit(self: &Arc<Self>, key: &PaceKey, lane: Lane) -> Admission {
        if self.ceiling <= 0.0 {
            return Admission::Now;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(self.ceiling, self.burst, now));
        bucket.refill(self.burst, now);
        let nobody_ahead = match lane {
            Lane::Security => bucket.security.is_empty(),
            Lane::Bulk => bucket.security.is_empty() && bucket.bulk.is_empty(),
        };
        if nobody_ahead && bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Admission::Now;
        }
        let (go, wait) = oneshot::channel();
        let ticket = Ticket {
            go,
            since: now,
            lane,
        };
        match lane {
            Lane::Security => bucket.security.push_back(ticket),
            Lane::Bulk => bucket.bulk.push_back(ticket),
        }
        if !bucket.pacer {
            bucket.pacer = true;
            let limiter = Arc::clone(self);
            let key = key.clone();
            tokio::spawn(async move { limiter.pace(key).await });
        }
        Admission::Wait(wait)
    }

    /// Hands out `key`'s tokens to waiting calls as they are earned.
    async fn pace(self: Arc<Self>, key: PaceKey) {
        loop {
            let wait = {
                let now = Instant::now();
                let mut buckets = self.lock();
                let Some(bucket) = buckets.get_mut(&key) else {
                    return;
                };
                bucket.refill(self.burst, now);
                while bucket.tokens >= 1.0 {
                    let Some(ticket) = bucket
                        .security
                        .pop_front()
                        .or_else(|| bucket.bulk.pop_front())
                    else {
                        break;
                    };
                    // A caller that gave up (shutdown) dropped its ticket: no token spent.
                    if ticket.go.send(()).is_ok() {
                        bucket.tokens -= 1.0;
                        if let Some(o) = &self.observer {
                            o.waited(ticket.lane, now.saturating_duration_since(ticket.since));
                        }
                    }
                }
                if bucket.security.is_empty() && bucket.bulk.is_empty() {
                    bucket.pacer = false;
                    return;
                }
                Duration::from_secs_f64(((1.0 - bucket.tokens) / bucket.rate).max(0.0))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The API throttled a call of `key` in `lane`: lower its allowed rate.
    pub fn throttled(&self, key: &PaceKey, lane: Lane) {
        if let Some(o) = &self.observer {
            o.throttled(lane);
        }
        if self.ceiling <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(self.ceiling, self.burst, now));
        let recent = bucket
            .throttled_at
            .is_some_and(|t| now.saturating_duration_since(t) < THROTTLE_WINDOW);
        if !recent {
            bucket.refill(self.burst, now);
            bucket.last_max = bucket.rate;
            bucket.rate = (bucket.rate * BETA).max(MIN_RATE);
            bucket.throttled_at = Some(now);
            self.report(&buckets, &key.region);
        }
    }

    /// A call of `key` succeeded: let its allowed rate recover.
    pub fn succeeded(&self, key: &PaceKey) {
        if self.ceiling <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        let Some(bucket) = buckets.get_mut(key) else {
            return;
        };
        let Some(since) = bucket.throttled_at else {
            return;
        };
        bucket.refill(self.burst, now);
        let t = now.saturating_duration_since(since).as_secs_f64();
        let rate = cubic(bucket.last_max, t).clamp(MIN_RATE, self.ceiling);
        bucket.rate = rate.max(bucket.rate);
        if bucket.rate >= self.ceiling {
            bucket.throttled_at = None;
        }
        self.report(&buckets, &key.region);
    }

    /// The allowed rate of `key` now (for tests and the benchmark's trace).
    pub fn allowed_rate(&self, key: &PaceKey) -> f64 {
        self.lock().get(key).map_or(self.ceiling, |b| b.rate)
    }

    fn report(&self, buckets: &HashMap<PaceKey, Bucket>, region: &str) {
        if let Some(o) = &self.observer {
            let lowest = buckets
                .iter()
                .filter(|(k, _)| k.region == region)
                .map(|(_, b)| b.rate)
                .fold(self.ceiling, f64::min);
            o.allowed_rate(region, lowest);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PaceKey, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
            rate,
            last_max: rate,
            throttled_at: None,
            security: VecDeque::new(),
            bulk: VecDeque::new(),
            pacer: false,
        }
    }

    fn refill(&mut self, burst: f64, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.last = now;
    }
}

/// CUBIC's window growth `t` seconds after a throttle at rate `w_max`: it
/// starts at `β·w_max`, is back at `w_max` after K seconds, and grows past it.
fn cubic(w_max: f64, t: f64) -> f64 {
    let k = (w_max * (1.0 - BETA) / SCALE).cbrt();
    SCALE * (t - k).powi(3) + w_max
}

#[cfg(test)]
#[path = "rate_limit/tests.rs"]
mod tests;
