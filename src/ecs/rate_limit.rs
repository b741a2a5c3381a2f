//! The client-side pace of ECS calls: a ceiling the operator sets, an adaptive
//! rate under it, and two lanes so security work never queues behind bulk work.
//!
//! - **Ceiling.** `ecs.max_calls_per_second` (with `ecs.rate_burst`) leaves room in
//!   the account's API quota for the other tools that use it: a burst of
//!   commands, or a replay of thousands of dead letters, must not trip the
//!   account's throttling for everyone.
//! - **Adaptive rate.** Under the ceiling, the allowed rate follows what the API
//!   says, per region and account (one bucket each), by AIMD over one-second
//!   windows: each window the rate gains a twentieth of the ceiling, and loses
//!   half the fraction of its calls the API throttled (`r ← r·(1 − f/2) + c/20`).
//!   A quota below the ceiling is found within seconds (the rate climbs until
//!   throttling appears and stops where it balances); a throttling fraction
//!   that does not depend on the rate (an API having a bad day) makes it settle
//!   at `c/(10 f)` instead of collapsing: 33 calls/s at 30 % with a ceiling of
//!   100. Multiplicative-decrease-per-answer schemes (CUBIC, the AWS SDKs'
//!   adaptive mode) fall to their floor there, which would starve a
//!   leak-alert's calls.
//! - **Lanes.** A call in the [`Lane::Security`] lane (leak-alerts) never waits
//!   behind a [`Lane::Bulk`] call (offboarding): with no security call queued
//!   it goes at once, borrowing up to [`SECURITY_BORROW`] tokens from the
//!   bucket's future (the bulk lane pays them back by waiting a little
//!   longer; the average rate stays under the ceiling), and otherwise it takes
//!   the next token before any queued bulk call. So an incident's calls start
//!   as soon as on an idle worker whatever the backlog.
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

/// The adaptive rate is adjusted once per window, from the window's answers.
const WINDOW: Duration = Duration::from_secs(1);
/// Additive increase per window, as a fraction of the ceiling.
const INCREASE: f64 = 0.05;
/// The allowed rate never falls below this (calls per second).
const MIN_RATE: f64 = 0.5;
/// How many tokens a security call may borrow ahead of the bucket.
pub const SECURITY_BORROW: f64 = 5.0;

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
    /// The current window: when it began, its answers and its throttling answers.
    window_start: Instant,
    answers: u32,
    throttles: u32,
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
        let (nobody_ahead, needed) = match lane {
            Lane::Security => (bucket.security.is_empty(), 1.0 - SECURITY_BORROW),
            Lane::Bulk => (bucket.security.is_empty() && bucket.bulk.is_empty(), 1.0),
        };
        if nobody_ahead && bucket.tokens >= needed {
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

    /// The API throttled a call of `key` in `lane`.
    pub fn throttled(&self, key: &PaceKey, lane: Lane) {
        if let Some(o) = &self.observer {
            o.throttled(lane);
        }
        self.answered(key, true);
    }

    /// A call of `key` was answered without throttling.
    pub fn succeeded(&self, key: &PaceKey) {
        self.answered(key, false);
    }

    /// Counts an answer in its bucket's window, closing the windows that ended.
    fn answered(&self, key: &PaceKey, throttled: bool) {
        if self.ceiling <= 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.lock();
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(self.ceiling, self.burst, now));
        let changed = bucket.close_windows(self.ceiling, self.burst, now);
        bucket.answers = bucket.answers.saturating_add(1);
        if throttled {
            bucket.throttles = bucket.throttles.saturating_add(1);
        }
        if changed {
            self.report(&buckets, &key.region);
        }
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
            window_start: now,
            answers: 0,
            throttles: 0,
            security: VecDeque::new(),
            bulk: VecDeque::new(),
            pacer: false,
        }
    }

    /// Applies the AIMD step of every window that ended by `now` (the ones
    /// without answers add their increase only); true when the rate changed.
    fn close_windows(&mut self, ceiling: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        let windows = elapsed.as_secs_f64() / WINDOW.as_secs_f64();
        if windows < 1.0 {
            return false;
        }
        self.refill(burst, now);
        let before = self.rate;
        let fraction = if self.answers == 0 {
            0.0
        } else {
            f64::from(self.throttles) / f64::from(self.answers)
        };
        self.rate = aimd(self.rate, fraction, ceiling, windows.floor());
        self.window_start = now;
        self.answers = 0;
        self.throttles = 0;
        (self.rate - before).abs() > f64::EPSILON
    }

    fn refill(&mut self, burst: f64, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(burst);
        self.last = now;
    }
}

/// One window's AIMD step from `rate`, with `fraction` of its answers
/// throttled, plus the increase of `idle` more windows without answers.
fn aimd(rate: f64, fraction: f64, ceiling: f64, windows: f64) -> f64 {
    let step = ceiling * INCREASE;
    (rate * (1.0 - fraction / 2.0) + step * windows).clamp(MIN_RATE.min(ceiling), ceiling)
}

#[cfg(test)]
#[path = "rate_limit/tests.rs"]
mod tests;
