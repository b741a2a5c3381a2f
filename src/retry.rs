//! Immediate retries of one API step, and the decision when they run out.
//!
//! One step (say, DisableActivation) is attempted, and on a transient error
//! retried with jittered exponential backoff (the `backoff` crate's policy)
//! until the per-step budget of time is spent. Then the command goes to delayed
//! redelivery rather than holding a worker slot. A shared token bucket (the
//! retry budget, as in smithy-rs' standard strategy) stops a sick API from
//! being hammered by every in-flight command at once: when it is empty,
//! transient failures go straight to delayed redelivery.
//!
//! Time comes from `tokio::time`, so tests run it on a paused clock.

use crate::ecs::error::{ApiAction, ApiError, ErrorClass, classify};
use crate::settings::RetrySettings;
use crate::slot::Slot;
use backoff::backoff::Backoff;
use std::future::Future;
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

/// Cost of one retry after a transient error.
pub const RETRY_COST: u32 = 5;
/// Cost of one retry after throttling (the API told us to slow down).
pub const THROTTLE_RETRY_COST: u32 = 10;

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

    /// Tokens left (for metrics).
    pub fn available(&self) -> u32 {
        self.tokens.load(Ordering::Acquire)
    }
}

/// How one step ended after its immediate retries.
#[derive(Debug)]
pub enum StepEnd<T> {
    /// The call succeeded.
    Done(T),
    /// The goal state already held (e.g. 404 on a delete).
    AlreadyDone(ApiError),
    /// Failed for good.
    Failed(ApiError),
    /// Transient failures outlasted the budget (or shutdown began): try again later.
    Redeliver(ApiError),
    /// Credentials or permissions: the operator must act; park the command.
    Credential(ApiError),
}

/// The outcome of a step plus how many API attempts it took in this processing.
#[derive(Debug)]
pub struct StepOutcome<T> {
    /// How it ended.
    pub end: StepEnd<T>,
    /// API attempts made now (the caller adds earlier processings' attempts).
    pub attempts: u32,
}

/// Observes each attempt (for metrics and logs) without coupling this module to them.
pub trait AttemptObserver: Send + Sync {
    /// Called after every attempt with its result class (`None` for success).
    fn attempt(&self, action: ApiAction, error: Option<&ApiError>, elapsed: Duration);
    /// Called before sleeping for an immediate retry.
    fn retry(&self, action: ApiAction, wait: Duration);
    /// Called when a transient failure goes straight to delayed redelivery
    /// because the shared retry budget is empty: the API is sick enough that
    /// the worker stopped retrying immediately, which an operator must see.
    fn budget_exhausted(&self, _action: ApiAction) {}
}

/// An observer that records nothing.
pub struct NoObserver;

impl AttemptObserver for NoObserver {
    fn attempt(&self, _: ApiAction, _: Option<&ApiError>, _: Duration) {}
    fn retry(&self, _: ApiAction, _: Duration) {}
}

/// Everything a step needs to retry well.
#[derive(Clone)]
pub struct Retrier {
    /// Backoff and time budget.
    pub policy: RetryPolicy,
    /// Shared retry budget.
    pub budget: Arc<RetryBudget>,
    /// Fires on shutdown: waiting steps give up and go to delayed redelivery.
    pub shutdown: CancellationToken,
    /// Metrics hook.
    pub observer: Arc<dyn AttemptObserver>,
}

impl Retrier {
    /// Runs `call` until it succeeds, fails for good, or the budget is spent.
    /// Every attempt is a fresh call (so a fresh signature, nonce and timestamp).
    /// Backoff sleeps are waited out without the command's `slot`.
    pub async fn run<T, F, Fut>(
        &self,
        action: ApiAction,
        slot: &mut Slot,
        mut call: F,
    ) -> StepOutcome<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let started = tokio::time::Instant::now();
        let mut backoff = self.policy.backoff();
        let mut attempts = 0u32;
        // What the last immediate retry cost, refunded if it succeeds.
        let mut last_cost: Option<u32> = None;
        loop {
            attempts += 1;
            let t0 = tokio::time::Instant::now();
            let span = crate::telemetry::ecs_attempt_span(action.as_str(), attempts);
            let result = call().instrument(span.clone()).await;
            if let Err(e) = &result {
                span.record("ecs.error_code", e.code());
                span.record("error.type", e.code());
                span.record("otel.status_code", "ERROR");
                if let Some(id) = e.request_id() {
                    span.record("ecs.request_id", id);
                }
            }
            drop(span);
            let error = match result {
                Ok(value) => {
                    self.observer.attempt(action, None, t0.elapsed());
                    match last_cost {
                        Some(cost) => self.budget.refund(cost),
                        None => self.budget.earn(),
                    }
                    return StepOutcome {
                        end: StepEnd::Done(value),
                        attempts,
                    };
                }
                Err(e) => e,
            };
            self.observer.attempt(action, Some(&error), t0.elapsed());
            let end = match classify(action, &error) {
                ErrorClass::AlreadyDone => StepEnd::AlreadyDone(error),
                ErrorClass::Permanent => StepEnd::Failed(error),
                ErrorClass::Credential => StepEnd::Credential(error),
                ErrorClass::Transient {
                    throttled,
                    retry_after,
                } => {
                    let next = backoff.next_backoff().unwrap_or(self.policy.max_interval);
                    let wait = next.max(retry_after.unwrap_or_default());
                    let cost = if throttled {
                        THROTTLE_RETRY_COST
                    } else {
                        RETRY_COST
                    };
                    let over_budget = started.elapsed() + wait > self.policy.max_elapsed;
                    let budget_empty = !over_budget && !self.budget.try_spend(cost);
                    if budget_empty {
                        self.observer.budget_exhausted(action);
                    }
                    if over_budget || budget_empty {
                        StepEnd::Redeliver(error)
                    } else {
                        last_cost = Some(cost);
                        self.observer.retry(action, wait);
                        let slept = slot
                            .wait_out(async {
                                tokio::select! {
                                    () = tokio::time::sleep(wait) => true,
                                    () = self.shutdown.cancelled() => false,
                                }
                            })
                            .await;
                        if slept {
                            continue;
                        }
                        StepEnd::Redeliver(error)
                    }
                }
            };
            return StepOutcome { end, attempts };
        }
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
        }
    }

    /// Replays scripted results and records when each attempt happened.
    async fn scripted(
        r: &Retrier,
        script: Vec<Result<u32, ApiError>>,
    ) -> (StepOutcome<u32>, Vec<Duration>) {
        let start = tokio::time::Instant::now();
        let script = Mutex::new(script.into_iter());
        let times = Mutex::new(Vec::new());
        let out = r
            .run(ApiAction::DisableActivation, &mut Slot::unbounded(), || {
                times.lock().expect("lock").push(start.elapsed());
                let next = script.lock().expect("lock").next();
                async move { next.unwrap_or(Ok(0)) }
            })
            .await;
        (out, times.into_inner().expect("lock"))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_then_success_backs_off_exponentially() {
        let r = retrier(30_000);
        let e = || Err(api("InternalError.Dispatch", 500, None));
        let (out, times) = scripted(&r, vec![e(), e(), e(), Ok(7)]).await;
        assert!(matches!(out.end, StepEnd::Done(7)));
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
        let run = r.run(ApiAction::DisableActivation, &mut slot, || {
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
        });
        let probe = async {
            // Halfway through the 100 ms backoff.
            tokio::time::sleep(Duration::from_millis(50)).await;
            semaphore.available_permits()
        };
        let (out, free_while_sleeping) = tokio::join!(run, probe);
        assert!(matches!(out.end, StepEnd::Done(1)));
        assert_eq!(free_while_sleeping, 1, "the slot is lent while sleeping");
        assert_eq!(*free_at_attempts.lock().expect("lock"), [0, 0]);
        assert!(slot.is_held());
    }

    #[tokio::test(start_paused = true)]
    async fn budget_exhausted_means_redeliver() {
        let r = retrier(1000);
        let script = (0..100)
            .map(|_| Err(api("ServiceUnavailable", 503, None)))
            .collect();
        let (out, times) = scripted(&r, script).await;
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
        // 0, 100, 300, 700; the next wait (800) would pass 1000 ms.
        assert_eq!(out.attempts, 4);
        assert!(times.last().expect("attempted") <= &Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_not_shortened() {
        let r = retrier(10_000);
        let (out, times) = scripted(
            &r,
            vec![Err(api("Throttling.User", 400, Some(2500))), Ok(1)],
        )
        .await;
        assert!(matches!(out.end, StepEnd::Done(1)));
        assert_eq!(times[1], Duration::from_millis(2500));

        // Longer than what is left: delayed redelivery instead.
        let (out, _) = scripted(&r, vec![Err(api("Throttling.User", 400, Some(60_000)))]).await;
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
        assert_eq!(out.attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn non_transient_classes_end_at_once() {
        let r = retrier(10_000);
        let (out, _) = scripted(&r, vec![Err(api("ActivationId.InUse", 403, None))]).await;
        assert!(matches!(out.end, StepEnd::Failed(_)));
        let (out, _) = scripted(&r, vec![Err(api("Forbidden.RAM", 403, None))]).await;
        assert!(matches!(out.end, StepEnd::Credential(_)));
        assert_eq!(out.attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_retry_budget_stops_immediate_retries() {
        let r = retrier(10_000);
        assert!(r.budget.try_spend(500));
        let (out, _) = scripted(&r, vec![Err(api("InternalError", 500, None)), Ok(1)]).await;
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
        assert_eq!(out.attempts, 1);
        r.budget.earn();
        assert_eq!(r.budget.available(), 1);
    }

    /// Counts what the observer hears about the retry budget.
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
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
        assert!(seen.0.lock().expect("lock").is_empty());
        // An empty bucket is.
        let left = r.budget.available();
        assert!(r.budget.try_spend(left));
        let (out, _) = scripted(&r, vec![Err(api("InternalError", 500, None))]).await;
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
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
            assert!(matches!(out.end, StepEnd::Done(1)), "command {i}");
        }
        assert_eq!(r.budget.available(), 500);
        // Retries that keep failing do drain it.
        let failing = (0..200)
            .map(|_| Err(api("InternalError", 500, None)))
            .collect();
        let (out, _) = scripted(&r, failing).await;
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
        assert!(r.budget.available() < 500);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_the_backoff_sleep() {
        let r = retrier(60_000);
        r.shutdown.cancel();
        let (out, _) = scripted(&r, vec![Err(api("InternalError", 500, None)), Ok(1)]).await;
        assert!(matches!(out.end, StepEnd::Redeliver(_)));
    }
}
