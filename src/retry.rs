//! Carrying out one API step: admission under the client-side rate limit,
//! attempts, and immediate retries with jittered exponential backoff (the
//! `backoff` crate's policy), each next move decided by [`decide`].
//!
//! This module *executes*; what to do after a failure is decided in one place,
//! [`crate::decision`]. A shared token bucket (the retry budget, as in
//! smithy-rs' standard strategy) stops a sick API from being hammered by every
//! in-flight command at once. Every wait (rate limit, backoff) lends the
//! command's concurrency slot and gives way to shutdown, which puts the
//! command back on its queue as it was.
//!
//! Time comes from `tokio::time`, so tests run it on a paused clock.

use crate::decision::{Counters, Next, Situation, Stop, decide, interrupted};
use crate::domain::error::ErrorClass;
use crate::domain::error::{ApiAction, ApiError, classify};
use crate::ecs::rate_limit::{Admission, Lane, PaceKey, RateLimiter};
use crate::settings::RetrySettings;
use crate::slot::Slot;
use backoff::backoff::Backoff;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The immediate-retry policy of one step.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First backoff interval.
    pub initial_interval: Duration,
    /// Longest backoff interval.
    pub max_interval: Duration,
    /// Time budget for immediate retries of one step.
    pub max_elapsed: Duration,
    /// Jitter: each interval is drawn from `[i*(1-r), i*(1+r)]`.
    pub randomization_factor: f64,
}

impl RetryPolicy {
    /// The policy from settings, with ±50 % jitter.
    pub fn from_settings(s: &RetrySettings) -> Self {
        Self {
            initial_interval: Duration::from_millis(s.initial_interval_ms),
            max_interval: Duration::from_millis(s.max_interval_ms),
            max_elapsed: Duration::from_millis(s.max_elapsed_ms),
            randomization_factor: 0.5,
        }
    }

    fn backoff(&self) -> backoff::ExponentialBackoff {
        backoff::ExponentialBackoff {
            current_interval: self.initial_interval,
            initial_interval: self.initial_interval,
            randomization_factor: self.randomization_factor,
            multiplier: 2.0,
            max_interval: self.max_interval,
            // We measure elapsed time ourselves on tokio's clock.
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        }
    }
}

/// A token bucket shared by all commands: retries spend tokens, successes
/// earn one back. Empty means "the API is sick: stop retrying immediately".
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU32,
    capacity: u32,
}

impl RetryBudget {
    /// A full bucket of `capacity` tokens.
    pub fn new(capacity: u32) -> Arc<Self> {
        Arc::new(Self {
            tokens: AtomicU32::new(capacity),
            capacity,
        })
    }

    /// Takes `cost` tokens if there are that many.
    pub fn try_spend(&self, cost: u32) -> bool {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(cost))
            .is_ok()
    }

    /// Returns one token after a first-try success, up to the capacity.
    pub fn earn(&self) {
        self.refund(1);
    }

    /// Returns `amount` tokens, up to the capacity: a retry that succeeded
    /// gives back what it cost (smithy's standard strategy), so a steady rate
    /// of transient errors that retries cure does not drain the budget; only
    /// retries that keep failing do.
    pub fn refund(&self, amount: u32) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.capacity).then_some(t.saturating_add(amount).min(self.capacity))
            });
    }

    /// Tokens left (for metrics and the decision).
    pub fn available(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }
}

/// How a step ended, when the processing goes on.
#[derive(Debug)]
pub enum StepResult<T> {
    /// The call succeeded with this value.
    Done(T),
    /// The goal state already held (e.g. 404 on a delete).
    AlreadyDone(ApiError),
    /// Failed for good.
    Failed(ApiError),
}

/// Why the processing stops at this step (the command comes back later).
#[derive(Debug)]
pub struct Stopped {
    /// Where the command goes.
    pub stop: Stop,
    /// What it was doing: the API action, or `AssumeRole`,
    /// `ResolveCredentials` or `TargetLock`.
    pub action: &'static str,
    /// The error that stopped it (none when shutdown cut a wait short).
    pub error: Option<ApiError>,
}

/// A step's result plus how many API attempts it took in this processing.
#[derive(Debug)]
pub struct Tried<T> {
    /// How it ended, or why the processing stops.
    pub result: Result<StepResult<T>, Stopped>,
    /// API attempts made now (the caller adds earlier processings' attempts).
    pub attempts: u32,
}

/// Observes each attempt (for metrics and logs) without coupling this module to them.
pub trait AttemptObserver: Send + Sync {
    /// Called after every attempt with its result class (`None` for success).
    fn attempt(&self, action: ApiAction, error: Option<&ApiError>, elapsed: Duration);
    /// Called before sleeping for an immediate retry.
    fn retry(&self, action: ApiAction, wait: Duration);
    /// Called when the shared retry budget, not the step's time, ended the
    /// immediate retries of a transient failure: the API is sick enough that
    /// the worker stopped retrying at once, which an operator must see.
    fn budget_exhausted(&self, _action: ApiAction) {}
}

/// An observer that records nothing.
pub struct NoObserver;

impl AttemptObserver for NoObserver {
    fn attempt(&self, _: ApiAction, _: Option<&ApiError>, _: Duration) {}
    fn retry(&self, _: ApiAction, _: Duration) {}
}

/// Who a step is for: the bucket its calls are paced in, its lane, and the
/// command's retry counters.
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    /// The region and account the calls go to (one pace bucket each).
    pub pace: &'a PaceKey,
    /// Security (leak-alerts) or bulk (offboarding).
    pub lane: Lane,
    /// The command's retry counters (which stage it is on).
    pub counters: Counters,
}

/// Everything a step needs to be carried out well.
#[derive(Clone)]
pub struct Retrier {
    /// Backoff and time budget.
    pub policy: RetryPolicy,
    /// Shared retry budget.
    pub budget: Arc<RetryBudget>,
    /// Fires on shutdown: waits give up and the command goes back to its queue.
    pub shutdown: CancellationToken,
    /// Metrics hook.
    pub observer: Arc<dyn AttemptObserver>,
    /// How many retry stages there are (for the decision).
    pub stages: NonZeroUsize,
    /// The client-side rate limit per region, when there is one.
    pub limiter: Option<Arc<RateLimiter>>,
}

impl Retrier {
    /// Carries out one step: `call` until it succeeds, fails for good, or the
    /// decision stops the processing. Every attempt is a fresh call (a fresh
    /// signature, nonce and timestamp), admitted by the pace of its bucket and
    /// lane, and tells the pace how the API answered.
    pub async fn run<T, F, Fut>(
        &self,
        action: ApiAction,
        step: For<'_>,
        slot: &mut Slot,
        mut call: F,
    ) -> Tried<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = self.policy.backoff();
        let mut attempts = 0u32;
        // What the last immediate retry cost, refunded if it succeeds.
        let mut last_cost: Option<u32> = None;
        let stopped = |error: Option<ApiError>, stop: Stop| Tried {
            result: Err(Stopped {
                stop,
                action: action.as_str(),
                error,
            }),
            attempts: 0,
        };
        loop {
            if !self.admitted(step, slot).await {
                return Tried {
                    attempts,
                    ..stopped(None, interrupted())
                };
            }
            attempts += 1;
            let error = match self.attempt(action, attempts, &mut call).await {
                Ok(value) => {
                    if let Some(limiter) = &self.limiter {
                        limiter.succeeded(step.pace);
                    }
                    match last_cost {
                        Some(cost) => self.budget.refund(cost),
                        None => self.budget.earn(),
                    }
                    return Tried {
                        result: Ok(StepResult::Done(value)),
                        attempts,
                    };
                }
                Err(e) => e,
            };
            let class = classify(action, &error);
            if let (
                Some(limiter),
                ErrorClass::Transient {
                    throttled: true, ..
                },
            ) = (&self.limiter, class)
            {
                limiter.throttled(step.pace, step.lane);
            }
            let mut situation = Situation {
                class,
                elapsed: started.elapsed(),
                backoff: backoff.next_backoff().unwrap_or(self.policy.max_interval),
                max_elapsed: self.policy.max_elapsed,
                budget: self.budget.available(),
                counters: step.counters,
                stages: self.stages,
                shutting_down: self.shutdown.is_cancelled(),
            };
            let next = loop {
                match decide(&situation) {
                    // Another command took the tokens since: decide again without them.
                    Next::RetryAfter { cost, .. } if !self.budget.try_spend(cost) => {
                        situation.budget = 0;
                    }
                    next => break next,
                }
            };
            // Would an unlimited budget have retried? Then the budget stopped it.
            if !matches!(next, Next::RetryAfter { .. })
                && matches!(
                    decide(&Situation {
                        budget: u32::MAX,
                        ..situation
                    }),
                    Next::RetryAfter { .. }
                )
            {
                self.observer.budget_exhausted(action);
            }
            let result = match next {
                Next::AlreadyDone => Ok(StepResult::AlreadyDone(error)),
                Next::Fail => Ok(StepResult::Failed(error)),
                Next::Stop(stop) => {
                    return Tried {
                        attempts,
                        ..stopped(Some(error), stop)
                    };
                }
                Next::RetryAfter { wait, cost } => {
                    last_cost = Some(cost);
                    self.observer.retry(action, wait);
                    if self.wait(slot, wait).await {
                        continue;
                    }
                    return Tried {
                        attempts,
                        ..stopped(Some(error), interrupted())
                    };
                }
            };
            return Tried { result, attempts };
        }
    }

    /// One attempt, traced and observed.
    async fn attempt<T, F, Fut>(
        &self,
        action: ApiAction,
        attempt: u32,
        call: &mut F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let t0 = tokio::time::Instant::now();
        let span = crate::telemetry::ecs_attempt_span(action.as_str(), attempt);
        let result = call().instrument(span.clone()).await;
        if let Err(e) = &result {
            span.record("ecs.error_code", e.code());
            span.record("error.type", e.code());
            span.record("otel.status_code", "ERROR");
            if let Some(id) = e.request_id() {
                span.record("ecs.request_id", id);
            }
        }
        self.observer
            .attempt(action, result.as_ref().err(), t0.elapsed());
        result
    }

    /// Waits for the pace to admit the call (lending the slot if it must
    /// wait); false when shutdown cut the wait short.
    async fn admitted(&self, step: For<'_>, slot: &mut Slot) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let Admission::Wait(ticket) = limiter.admit(step.pace, step.lane) else {
            return true;
        };
        slot.wait_out(async {
            tokio::select! {
                // The pacer only drops a ticket when the limiter is gone: go.
                _ = ticket => true,
                () = self.shutdown.cancelled() => false,
            }
        })
        .await
    }

    /// Waits `wait` without the command's slot; false when shutdown cut it short.
    async fn wait(&self, slot: &mut Slot, wait: Duration) -> bool {
        slot.wait_out(async {
            tokio::select! {
                () = tokio::time::sleep(wait) => true,
                () = self.shutdown.cancelled() => false,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn api(code: &str, status: u16, retry_after: Option<u64>) -> ApiError {
        ApiError::Api {
            http_status: status,
            code: code.into(),
            message: String::new(),
            request_id: None,
            retry_after: retry_after.map(Duration::from_millis),
        }
    }

    fn pace() -> PaceKey {
        PaceKey {
            region: "cn-hangzhou".into(),
            account: None,
        }
    }

    fn retrier(max_elapsed_ms: u64) -> Retrier {
        Retrier {
            policy: RetryPolicy {
                initial_interval: Duration::from_millis(100),
                max_interval: Duration::from_millis(1000),
                max_elapsed: Duration::from_millis(max_elapsed_ms),
                randomization_factor: 0.0,
            },
            budget: RetryBudget::new(500),
            shutdown: CancellationToken::new(),
            observer: Arc::new(NoObserver),
            stages: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
            limiter: None,
        }
    }

    /// Replays scripted results and records when each attempt happened.
    async fn scripted_at(
        r: &Retrier,
        counters: Counters,
        script: Vec<Result<u32, ApiError>>,
    ) -> (Tried<u32>, Vec<Duration>) {
        let start = tokio::time::Instant::now();
        let script = Mutex::new(script.into_iter());
        let times = Mutex::new(Vec::new());
        let out = r
            .run(
                ApiAction::DisableActivation,
                For {
                    pace: &pace(),
                    lane: Lane::Bulk,
                    counters,
                },
                &mut Slot::unbounded(),
                || {
                    times.lock().expect("lock").push(start.elapsed());
                    let next = script.lock().expect("lock").next();
                    async move { next.unwrap_or(Ok(0)) }
                },
            )
            .await;
        (out, times.into_inner().expect("lock"))
    }

    async fn scripted(
        r: &Retrier,
        script: Vec<Result<u32, ApiError>>,
    ) -> (Tried<u32>, Vec<Duration>) {
        scripted_at(r, Counters::default(), script).await
    }

    fn stop_of<T>(t: &Tried<T>) -> Option<Stop> {
        t.result.as_ref().err().map(|s| s.stop)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_then_success_backs_off_exponentially() {
        let r = retrier(30_000);
        let e = || Err(api("InternalError.Dispatch", 500, None));
        let (out, times) = scripted(&r, vec![e(), e(), e(), Ok(7)]).await;
        assert!(matches!(out.result, Ok(StepResult::Done(7))));
        assert_eq!(out.attempts, 4);
        let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 100, 300, 700]);
    }

    /// A command sleeping out a backoff lends its concurrency slot; each attempt holds it.
    #[tokio::test(start_paused = true)]
    async fn a_backoff_sleep_lends_the_slot() {
        let r = retrier(30_000);
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = Arc::clone(&semaphore).acquire_owned().await.expect("p");
        let mut slot = Slot::held(permit);
        let free_at_attempts = Mutex::new(Vec::new());
        let key = pace();
        let run = r.run(
            ApiAction::DisableActivation,
            For {
                pace: &key,
                lane: Lane::Bulk,
                counters: Counters::default(),
            },
            &mut slot,
            || {
                let mut seen = free_at_attempts.lock().expect("lock");
                seen.push(semaphore.available_permits());
                let first = seen.len() == 1;
                async move {
                    if first {
                        Err(api("InternalError.Dispatch", 500, None))
                    } else {
                        Ok(1)
                    }
                }
            },
        );
        let probe = async {
            // Halfway through the 100 ms backoff.
            tokio::time::sleep(Duration::from_millis(50)).await;
            semaphore.available_permits()
        };
        let (out, free_while_sleeping) = tokio::join!(run, probe);
        assert!(matches!(out.result, Ok(StepResult::Done(1))));
        assert_eq!(free_while_sleeping, 1, "the slot is lent while sleeping");
        assert_eq!(*free_at_attempts.lock().expect("lock"), [0, 0]);
        assert!(slot.is_held());
    }

    #[tokio::test(start_paused = true)]
    async fn time_budget_spent_means_the_next_retry_stage() {
        let r = retrier(1000);
        let script: Vec<_> = (0..100)
            .map(|_| Err(api("ServiceUnavailable", 503, None)))
            .collect();
        let (out, times) = scripted(&r, script.clone()).await;
        assert_eq!(stop_of(&out), Some(Stop::Redeliver { stage: 0 }));
        // 0, 100, 300, 700; the next wait (800) would pass 1000 ms.
        assert_eq!(out.attempts, 4);
        assert!(times.last().expect("attempted") <= &Duration::from_millis(1000));
        let second = Counters {
            redeliveries: 1,
            parks: 0,
        };
        let (out, _) = scripted_at(&r, second, script.clone()).await;
        assert_eq!(stop_of(&out), Some(Stop::Redeliver { stage: 1 }));
        // Past the last stage, the step fails for good.
        let past = Counters {
            redeliveries: 3,
            parks: 0,
        };
        let (out, _) = scripted_at(&r, past, script).await;
        assert!(matches!(out.result, Ok(StepResult::Failed(_))));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_not_shortened() {
        let r = retrier(10_000);
        let (out, times) = scripted(
            &r,
            vec![Err(api("Throttling.User", 400, Some(2500))), Ok(1)],
        )
        .await;
        assert!(matches!(out.result, Ok(StepResult::Done(1))));
        assert_eq!(times[1], Duration::from_millis(2500));

        // Longer than what is left: delayed redelivery instead.
        let (out, _) = scripted(&r, vec![Err(api("Throttling.User", 400, Some(60_000)))]).await;
        assert_eq!(stop_of(&out), Some(Stop::Redeliver { stage: 0 }));
        assert_eq!(out.attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn non_transient_classes_end_at_once() {
        let r = retrier(10_000);
        let (out, _) = scripted(&r, vec![Err(api("ActivationId.InUse", 403, None))]).await;
        assert!(matches!(out.result, Ok(StepResult::Failed(_))));
        let parked = Counters {
            redeliveries: 0,
            parks: 9,
        };
        let (out, _) = scripted_at(&r, parked, vec![Err(api("Forbidden.RAM", 403, None))]).await;
        assert_eq!(stop_of(&out), Some(Stop::Park { stage: 2 }));
        assert_eq!(out.attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_retry_budget_stops_immediate_retries() {
        let r = retrier(10_000);
        assert!(r.budget.try_spend(500));
        let (out, _) = scripted(&r, vec![Err(api("InternalError", 500, None)), Ok(1)]).await;
        assert_eq!(stop_of(&out), Some(Stop::Redeliver { stage: 0 }));
        assert_eq!(out.attempts, 1);
        r.budget.earn();
        assert_eq!(r.budget.available(), 1);
    }

    /// Records what the observer hears about the retry budget.
    #[derive(Default)]
    struct Exhaustions(Mutex<Vec<ApiAction>>);

    impl AttemptObserver for Exhaustions {
        fn attempt(&self, _: ApiAction, _: Option<&ApiError>, _: Duration) {}
        fn retry(&self, _: ApiAction, _: Duration) {}
        fn budget_exhausted(&self, action: ApiAction) {
            self.0.lock().expect("lock").push(action);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_empty_budget_is_reported_as_exhausted() {
        let seen = Arc::new(Exhaustions::default());
        let mut r = retrier(1000);
        r.observer = seen.clone();
        // Running out of time for immediate retries is the normal path: not reported.
        let script = (0..10)
            .map(|_| Err(api("InternalError", 500, None)))
            .collect();
        let (out, _) = scripted(&r, script).await;
        assert_eq!(stop_of(&out), Some(Stop::Redeliver { stage: 0 }));
        assert!(seen.0.lock().expect("lock").is_empty());
        // Nor is a permanent failure.
        let (_, _) = scripted(&r, vec![Err(api("ActivationId.InUse", 403, None))]).await;
        assert!(seen.0.lock().expect("lock").is_empty());
        // An empty bucket is.
        let left = r.budget.available();
        assert!(r.budget.try_spend(left));
        let (out, _) = scripted(&r, vec![Err(api("InternalError", 500, None))]).await;
        assert_eq!(stop_of(&out), Some(Stop::Redeliver { stage: 0 }));
        assert_eq!(
            *seen.0.lock().expect("lock"),
            [ApiAction::DisableActivation]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_that_succeed_refund_their_cost() {
        let r = retrier(30_000);
        // 30 % of attempts fail once and then succeed: the budget must not drain.
        for i in 0..1000 {
            let script = if i % 10 < 3 {
                vec![Err(api("InternalError.Dispatch", 500, None)), Ok(1)]
            } else {
                vec![Ok(1)]
            };
            let (out, _) = scripted(&r, script).await;
            assert!(matches!(out.result, Ok(StepResult::Done(1))), "command {i}");
        }
        assert_eq!(r.budget.available(), 500);
        // Retries that keep failing do drain it.
        let failing = (0..200)
            .map(|_| Err(api("InternalError", 500, None)))
            .collect();
        let (out, _) = scripted(&r, failing).await;
        assert!(matches!(stop_of(&out), Some(Stop::Redeliver { .. })));
        assert!(r.budget.available() < 500);
    }

    /// SIGTERM during a backoff on the *last* stage: the command goes back to
    /// its queue unchanged; it neither fails nor uses up a stage.
    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_last_stage_backoff_requeues() {
        let r = retrier(60_000);
        let last = Counters {
            redeliveries: 3,
            parks: 0,
        };
        let stop = r.shutdown.clone();
        let ((out, _), ()) = tokio::join!(
            scripted_at(&r, last, vec![Err(api("InternalError", 500, None)), Ok(1)]),
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stop.cancel();
            }
        );
        assert_eq!(stop_of(&out), Some(Stop::Requeue));
        assert_eq!(out.attempts, 1, "no further attempt after shutdown");
    }

    /// A transient error once shutdown began: no retry, no stage used.
    #[tokio::test(start_paused = true)]
    async fn a_transient_error_after_shutdown_requeues() {
        let r = retrier(60_000);
        r.shutdown.cancel();
        let (out, _) = scripted(&r, vec![Err(api("InternalError", 500, None)), Ok(1)]).await;
        assert_eq!(stop_of(&out), Some(Stop::Requeue));
    }

    /// Waiting for the client-side rate limit lends the slot and gives way to shutdown.
    #[tokio::test(start_paused = true)]
    async fn a_rate_limit_wait_lends_the_slot_and_gives_way_to_shutdown() {
        let mut r = retrier(60_000);
        let limiter = Arc::new(RateLimiter::new(1, 1));
        r.limiter = Some(Arc::clone(&limiter));
        let key = pace();
        assert!(
            matches!(limiter.admit(&key, Lane::Bulk), Admission::Now),
            "the burst of one"
        );
        let semaphore = Arc::new(tokio::sync::Semaphore::new(1));
        let mut slot = Slot::held(Arc::clone(&semaphore).acquire_owned().await.expect("p"));
        let stop = r.shutdown.clone();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let run = r.run(
            ApiAction::DisableActivation,
            For {
                pace: &key,
                lane: Lane::Bulk,
                counters: Counters::default(),
            },
            &mut slot,
            || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok::<u32, ApiError>(1) }
            },
        );
        let probe = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let free = semaphore.available_permits();
            stop.cancel();
            free
        };
        let (out, free_while_waiting) = tokio::join!(run, probe);
        assert_eq!(free_while_waiting, 1, "the slot is lent while rate-limited");
        assert_eq!(stop_of(&out), Some(Stop::Requeue));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no call after shutdown");
    }
}
