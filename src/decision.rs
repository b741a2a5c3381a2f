//! The one place a command's fate is decided: after every API attempt, and
//! after every wait that shutdown cut short, [`decide`] says what happens next.
//!
//! Like smithy-rs' retry strategy (a classifier says what an error *is*, the
//! strategy says what to *do*), [`crate::domain::error::classify`] names the
//! error's class and this function, pure and table-tested, turns the class and
//! the command's circumstances (time spent, the shared retry budget, its retry
//! stage, shutdown) into one [`Next`] value. Executing it is someone else's
//! job: the retrier sleeps or stops, the playbook records the step, the
//! settlement publishes the retry copy or puts the delivery back.
//!
//! The rules, CONTRACT sections 4 to 6:
//! - already-done (404 on a delete) is done;
//! - permanent errors fail the step;
//! - credential and permission errors park the command in the retry stages
//!   (staying on the last one), never failing it;
//! - transient errors are retried after the backoff (or the server's
//!   `x-acs-retry-after`, never shortened) while the step's time budget and
//!   the shared retry budget allow; then the command goes to its next retry
//!   stage; past the last stage the step fails;
//! - shutdown never fails a command, never uses up a stage: an interrupted wait,
//!   or a transient error once shutdown began, puts the delivery back as it was.

use crate::domain::error::ErrorClass;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Retry-budget tokens one immediate retry after a transient error costs.
pub const RETRY_COST: u32 = 5;
/// Retry-budget tokens one immediate retry after throttling costs (the API
/// asked us to slow down; a sick API drains the budget faster).
pub const THROTTLE_RETRY_COST: u32 = 10;

/// The retry counters a command carries between processings (in headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Delayed redeliveries after transient failures; picks the retry stage.
    pub redeliveries: u32,
    /// Parks for credential failures; counted apart, so waiting for an
    /// operator never uses up the transient retries.
    pub parks: u32,
}

/// Everything the decision after a failed attempt depends on (a success needs
/// no decision: the step is done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    /// What the failure means.
    pub class: ErrorClass,
    /// Time this step has spent on immediate retries so far.
    pub elapsed: Duration,
    /// The next backoff interval (jittered exponential) the policy offers.
    pub backoff: Duration,
    /// The step's time budget for immediate retries.
    pub max_elapsed: Duration,
    /// Tokens left in the shared retry budget.
    pub budget: u32,
    /// The command's retry counters.
    pub counters: Counters,
    /// How many retry stages there are (at least one, by configuration).
    pub stages: NonZeroUsize,
    /// Shutdown has begun.
    pub shutting_down: bool,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The goal state already held: the step is done, outcome `already_done`.
    AlreadyDone,
    /// Call again after `wait`, taking `cost` tokens from the retry budget.
    RetryAfter {
        /// How long to wait first.
        wait: Duration,
        /// Retry-budget tokens the retry takes.
        cost: u32,
    },
    /// The step failed for good; the playbook records it and goes on.
    Fail,
    /// The processing stops here; the command comes back later.
    Stop(Stop),
}

/// How a processing stops before the command completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Transient failures outlasted the immediate retries: a retry copy goes
    /// to retry stage `stage` (0-based) with one more redelivery counted.
    Redeliver {
        /// The retry stage.
        stage: usize,
    },
    /// Credentials or permissions failed: a retry copy goes to retry stage
    /// `stage` with one more park counted; the command never fails for it.
    Park {
        /// The retry stage.
        stage: usize,
    },
    /// Shutdown: the delivery goes back to its queue unchanged.
    Requeue,
}

/// Decides what happens after a failed attempt. Pure: the same situation,
/// the same answer.
pub fn decide(s: &Situation) -> Next {
    let last = s.stages.get() - 1;
    match s.class {
        ErrorClass::AlreadyDone => Next::AlreadyDone,
        ErrorClass::Permanent => Next::Fail,
        ErrorClass::Credential => Next::Stop(park(s.counters, s.stages)),
        ErrorClass::Transient {
            throttled,
            retry_after,
        } => {
            if s.shutting_down {
                return Next::Stop(Stop::Requeue);
            }
            // The server's wait is honoured, never shortened.
            let wait = s.backoff.max(retry_after.unwrap_or_default());
            let cost = if throttled {
                THROTTLE_RETRY_COST
            } else {
                RETRY_COST
            };
            let in_time = s.elapsed.saturating_add(wait) <= s.max_elapsed;
            if in_time && s.budget >= cost {
                Next::RetryAfter { wait, cost }
            } else if index(s.counters.redeliveries) <= last {
                Next::Stop(Stop::Redeliver {
                    stage: index(s.counters.redeliveries),
                })
            } else {
                Next::Fail
            }
        }
    }
}

/// Where a credential or permission failure sends the command: the retry
/// stage its park count reaches, staying on the last one (it never fails for
/// it). Also what happens when a command's identity cannot be had at all.
pub fn park(counters: Counters, stages: NonZeroUsize) -> Stop {
    Stop::Park {
        stage: index(counters.parks).min(stages.get() - 1),
    }
}

/// What happens when shutdown cuts a wait short (a backoff, the rate limit, a
/// target's lock, a settlement's republish pause): the delivery goes back to
/// its queue as it was. Never a failure, never a used-up stage.
pub const fn interrupted() -> Stop {
    Stop::Requeue
}

fn index(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[path = "decision/tests.rs"]
mod tests;
