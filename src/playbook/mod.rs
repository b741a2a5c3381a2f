//! The playbooks: which API calls a command makes, in which order, and what
//! each answer means for the next call and for the events.
//!
//! Playbooks talk to the cloud only through the [`Cloud`] trait and retry only
//! through [`Retrier`], so they are unit-tested with a scripted fake and a
//! paused clock, without a broker or HTTP. A playbook never acknowledges
//! anything: it returns a [`Report`] and the worker decides the ack from it.
//!
//! Re-running a playbook is safe by construction (delayed redelivery and
//! at-least-once delivery both re-run it): deregistration carries a
//! deterministic ClientToken and treats not-found as done, disabling twice is
//! harmless, and a deleted code's not-found is done.

pub mod decommission;
pub mod leak_alert;

use crate::command::Command;
use crate::domain::cloud::{Called, Cloud, InstanceFilter};
use crate::domain::error::{ApiAction, ApiError};
use crate::domain::resource::{Activation, ManagedInstance};
use crate::event::{Event, EventError, EventType, Outcome};
use crate::limits::Limits;
use crate::retry::{Retrier, StepEnd};
use crate::slot::Slot;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;

/// Upper bound on pages followed for one resolution: a region with more than
/// this many managed instances on one hostname query is a configuration
/// problem, not something to page through forever.
pub const MAX_PAGES: u32 = 200;

/// API attempts per step key, carried across delayed redeliveries in a header
/// so events report the true count.
pub type Attempts = BTreeMap<String, u32>;

/// A step's line in `command.completed`.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// The API action (or `Resolve` for target resolution).
    pub step: &'static str,
    /// The instance or activation it concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// API attempts across processings.
    pub attempts: u32,
    /// The last RequestId.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
}

/// How a processing of a command ends.
#[derive(Debug)]
pub enum End {
    /// Carried out: publish `command.completed` with this outcome.
    Completed(Outcome),
    /// Transient failures outlasted immediate retries: send to the next retry queue.
    Redeliver(EventError),
    /// Credentials or permissions failed: park in the retry queues, never fail.
    Park(Parked),
}

/// Why a command is parked: the call that was refused and the service's
/// answer, for the operator (`/readyz`, the log), never for the command.
#[derive(Debug, Clone)]
pub struct Parked {
    /// The refused API action (`AssumeRole` for an account's role, or
    /// `ResolveCredentials` when the worker's own credential source failed).
    pub action: &'static str,
    /// The service's code and message (for `SignatureDoesNotMatch` its
    /// string-to-sign), or the credential source's failure.
    pub error: EventError,
}

/// Everything a processing produced, for the worker to publish and settle.
#[derive(Debug)]
pub struct Report {
    /// Step events, in order (the terminal event is added by [`Report::terminal_event`]).
    pub events: Vec<Event>,
    /// Step lines for `command.completed`.
    pub steps: Vec<StepRecord>,
    /// API attempts so far, per step key (prior processings included).
    pub attempts: Attempts,
    /// How it ended.
    pub end: End,
    /// The error that decided a `failed`/`partially_failed` outcome (for dead-letter headers).
    pub first_error: Option<EventError>,
}

impl Report {
    /// `command.completed`, when the processing completed.
    pub fn terminal_event(&self, command: &Command) -> Option<Event> {
        let End::Completed(outcome) = self.end else {
            return None;
        };
        let mut event = Event::for_command(command, EventType::CommandCompleted, outcome)
            .with("steps", &self.steps);
        if matches!(outcome, Outcome::Failed | Outcome::PartiallyFailed) {
            event.error = self.first_error.clone();
        }
        Some(event)
    }
}

/// Shared state of one playbook run: the command, the cloud, the retrier,
/// and what has been produced so far.
pub struct Run<'a, C: Cloud> {
    /// The command being carried out.
    pub command: &'a Command,
    /// The cloud API.
    pub cloud: &'a C,
    /// Retry policy, budget and shutdown.
    pub retrier: &'a Retrier,
    /// Events produced so far.
    pub events: Vec<Event>,
    /// Step lines so far.
    pub steps: Vec<StepRecord>,
    /// Attempts per step key, prior processings included.
    pub attempts: Attempts,
    /// The first permanent failure.
    pub first_error: Option<EventError>,
    /// No delayed redelivery is left: transient failures become failures.
    pub last_chance: bool,
    /// What the command may touch.
    pub limits: Limits,
    /// The command's concurrency slot, lent out during backoff sleeps and
    /// given back when the run is finished.
    pub slot: Slot,
}

/// A step whose immediate retries ended in a transient or credential failure:
/// the processing stops and the command is redelivered or parked.
pub struct Interrupted(pub End);

/// A step's result once retries are done, as the playbook sees it.
pub enum StepResult<T> {
    /// Succeeded with a value.
    Done(T, Option<String>),
    /// The goal state already held.
    AlreadyDone(ApiError),
    /// Failed for good.
    Failed(ApiError),
}

impl<'a, C: Cloud> Run<'a, C> {
    /// Starts a run with the attempts of earlier processings.
    pub fn new(command: &'a Command, cloud: &'a C, retrier: &'a Retrier, prior: Attempts) -> Self {
        Self {
            command,
            cloud,
            retrier,
            events: Vec::new(),
            steps: Vec::new(),
            attempts: prior,
            first_error: None,
            last_chance: false,
            limits: Limits::default(),
            slot: Slot::unbounded(),
        }
    }

    /// Runs in the worker's concurrency `slot` (unit tests run unbounded).
    pub fn slot(mut self, slot: Slot) -> Self {
        self.slot = slot;
        self
    }

    /// Applies blast-radius limits (the worker always does; unit tests may not).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Marks the processing as the last one the retry stages allow: a step
    /// whose immediate retries run out then fails for good instead of
    /// interrupting the run, so later steps still happen and are reported.
    pub fn last_chance(mut self, last_chance: bool) -> Self {
        self.last_chance = last_chance;
        self
    }

    /// Runs one step with retries, adding its attempts to `key`'s count.
    /// Returns the total attempts with the result, or stops the run.
    pub async fn step<T, F, Fut>(
        &mut self,
        action: ApiAction,
        key: &str,
        call: F,
    ) -> Result<(StepResult<T>, u32), Interrupted>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Called<T>, ApiError>>,
    {
        let outcome = self.retrier.run(action, &mut self.slot, call).await;
        let total = self.attempts.entry(key.to_owned()).or_insert(0);
        *total = total.saturating_add(outcome.attempts);
        let total = *total;
        let result = match outcome.end {
            StepEnd::Done(called) => StepResult::Done(called.value, called.request_id),
            StepEnd::AlreadyDone(e) => StepResult::AlreadyDone(e),
            StepEnd::Failed(e) => StepResult::Failed(e),
            StepEnd::Redeliver(e) if self.last_chance => StepResult::Failed(e),
            StepEnd::Redeliver(e) => {
                return Err(Interrupted(End::Redeliver(EventError::from_api(
                    action, &e,
                ))));
            }
            StepEnd::Credential(e) => {
                return Err(Interrupted(End::Park(Parked {
                    action: action.as_str(),
                    error: EventError::from_api(action, &e),
                })));
            }
        };
        Ok((result, total))
    }

    /// Records a step line, remembering the first failure.
    pub fn record(&mut self, record: StepRecord) {
        if record.outcome == Outcome::Failed && self.first_error.is_none() {
            self.first_error = record.error.clone();
        }
        self.steps.push(record);
    }

    /// Follows DescribeManagedInstances pages to the end (bounded by [`MAX_PAGES`]).
    pub async fn describe_all(
        &mut self,
        key: &str,
        filter: &InstanceFilter,
    ) -> Result<(Result<Vec<ManagedInstance>, ApiError>, u32, Option<String>), Interrupted> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        let mut last_request = None;
        let mut total = 0;
        for _ in 0..MAX_PAGES {
            let (cloud, region) = (self.cloud, &self.command.region);
            let page_token = token.clone();
            let (result, attempts) = self
                .step(ApiAction::DescribeManagedInstances, key, || {
                    cloud.describe_instances(region, filter, page_token.as_deref())
                })
                .await?;
            total = attempts;
            match result {
                StepResult::Done(page, request_id) => {
                    last_request = request_id;
                    all.extend(page.instances);
                    match page.next_token.filter(|t| !t.is_empty()) {
                        Some(next) => token = Some(next),
                        None => return Ok((Ok(all), total, last_request)),
                    }
                }
                StepResult::AlreadyDone(e) | StepResult::Failed(e) => {
                    return Ok((Err(e), total, last_request));
                }
            }
        }
        Ok((
            Err(ApiError::Decode {
                http_status: 200,
                message: format!("more than {MAX_PAGES} pages of DescribeManagedInstances"),
                request_id: last_request.clone(),
            }),
            total,
            last_request,
        ))
    }

    /// Ends the run.
    pub fn finish(self, end: End) -> Report {
        Report {
            events: self.events,
            steps: self.steps,
            attempts: self.attempts,
            end,
            first_error: self.first_error,
        }
    }
}

/// Combines per-step outcomes into the command's outcome.
pub fn overall(dry_run: bool, steps: &[StepRecord]) -> Outcome {
    let failed = steps
        .iter()
        .filter(|s| s.outcome == Outcome::Failed)
        .count();
    if failed == 0 {
        return if dry_run {
            Outcome::DryRun
        } else {
            Outcome::Succeeded
        };
    }
    let good = steps
        .iter()
        .filter(|s| {
            matches!(
                s.outcome,
                Outcome::Succeeded | Outcome::AlreadyDone | Outcome::DryRun
            )
        })
        .count();
    if good > 0 {
        Outcome::PartiallyFailed
    } else {
        Outcome::Failed
    }
}

impl ManagedInstance {
    /// What events show for an instance known only by id (e.g. already gone).
    pub fn with_id(id: &str) -> Self {
        Self {
            instance_id: id.to_owned(),
            ..Self::default()
        }
    }
}

impl Activation {
    /// What events show for a code known only by id.
    pub fn with_id(id: &str) -> Self {
        Self {
            activation_id: id.to_owned(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod fake;
