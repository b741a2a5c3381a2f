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
use crate::command::CommandKind;
use crate::decision::{Counters, interrupted};
use crate::domain::cloud::{Called, Cloud, InstanceFilter};
use crate::domain::error::{ApiAction, ApiError};
use crate::domain::resource::{Activation, ManagedInstance};
use crate::ecs::rate_limit::{Lane, PaceKey};
use crate::event::{Event, EventError, EventType, Outcome};
use crate::limits::Limits;
use crate::locks::{KeyedLocks, TargetGuard};
use crate::retry::{For, Retrier, StepResult, Stopped};
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
pub enum Fate {
    /// Carried out: `command.completed` with this outcome.
    Completed(Outcome),
    /// Stopped before completing (the decision's [`Stop`]): the command comes
    /// back later, to a retry stage or, on shutdown, to its queue as it was.
    Stopped(Stopped),
}

/// Everything a processing produced, for the settlement to publish.
#[derive(Debug)]
pub struct Report {
    /// Step events, in order (the terminal event is built by the settlement).
    pub events: Vec<Event>,
    /// Step lines for `command.completed`.
    pub steps: Vec<StepRecord>,
    /// API attempts so far, per step key (prior processings included).
    pub attempts: Attempts,
    /// How it ended.
    pub fate: Fate,
    /// The error that decided a `failed`/`partially_failed` outcome (for dead-letter headers).
    pub first_error: Option<EventError>,
    /// The locks of the instances and codes the command acted on; whoever
    /// settles the command drops them only after the settlement is confirmed,
    /// so commands for one target are carried out *and reported* in turn.
    pub guards: Vec<TargetGuard>,
}

impl Report {
    /// `command.completed` for a completed processing.
    pub fn completed_event(&self, command: &Command, outcome: Outcome) -> Event {
        let mut event = Event::for_command(command, EventType::CommandCompleted, outcome)
            .with("steps", &self.steps);
        if matches!(outcome, Outcome::Failed | Outcome::PartiallyFailed) {
            event.error = self.first_error.clone();
        }
        event
    }
}

/// Publishes an event before the command is settled: a leaked code's
/// containment is announced when it happens, not after the exposure report and
/// quarantine (the SOC's dashboards and runbooks wait on it).
pub trait Announce: Send + Sync {
    /// Publishes `event` now and waits for the broker's confirm; false when it
    /// could not be, and the event then goes out with the settlement instead.
    fn announce<'a>(&'a self, event: &'a Event) -> futures::future::BoxFuture<'a, bool>;
}

/// Shared state of one playbook run: the command, the cloud, the retrier,
/// and what has been produced so far.
pub struct Run<'a, C: Cloud> {
    /// The command being carried out.
    pub command: &'a Command,
    /// The cloud API.
    pub cloud: &'a C,
    /// Retry policy, budget, rate limit and shutdown.
    pub retrier: &'a Retrier,
    /// Events produced so far.
    pub events: Vec<Event>,
    /// Step lines so far.
    pub steps: Vec<StepRecord>,
    /// Attempts per step key, prior processings included.
    pub attempts: Attempts,
    /// The first permanent failure.
    pub first_error: Option<EventError>,
    /// The command's retry counters (which stage it is on).
    pub counters: Counters,
    /// The pace bucket its calls draw from (its region and account).
    pub pace: PaceKey,
    /// Its lane: leak-alerts are security work, never queued behind bulk work.
    pub lane: Lane,
    /// What the command may touch.
    pub limits: Limits,
    /// The command's concurrency slot, lent out during waits and given back
    /// when the run is finished.
    pub slot: Slot,
    /// Per-target locks shared by every command of this process.
    pub locks: KeyedLocks,
    /// The locks this run holds.
    pub guards: Vec<TargetGuard>,
    /// Where events that must not wait for the settlement go (none: they wait).
    pub announcer: Option<&'a dyn Announce>,
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
            counters: Counters::default(),
            pace: PaceKey {
                region: command.region.as_str().to_owned(),
                account: command.account_id.as_ref().map(|a| a.as_str().to_owned()),
            },
            lane: lane_of(command.kind),
            limits: Limits::default(),
            slot: Slot::unbounded(),
            locks: KeyedLocks::default(),
            guards: Vec::new(),
            announcer: None,
        }
    }

    /// Publishes events that must not wait for the settlement through `announcer`.
    pub fn announcer(mut self, announcer: &'a dyn Announce) -> Self {
        self.announcer = Some(announcer);
        self
    }

    /// Publishes `event` at once when an announcer is set and the broker takes
    /// it; otherwise (or if that fails) it goes out with the settlement, so it
    /// is never lost either way.
    pub async fn announce(&mut self, event: Event) {
        if let Some(announcer) = self.announcer
            && announcer.announce(&event).await
        {
            return;
        }
        self.events.push(event);
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

    /// The command's retry counters, read from its delivery.
    pub fn counters(mut self, counters: Counters) -> Self {
        self.counters = counters;
        self
    }

    /// Shares the process's per-target locks (unit tests get their own).
    pub fn locks(mut self, locks: KeyedLocks) -> Self {
        self.locks = locks;
        self
    }

    /// Takes the locks of `targets` (instance ids, activation ids), in a
    /// fixed order so two commands never wait for each other, skipping those
    /// this run already holds. Waiting lends the slot; shutdown cuts the wait
    /// short and the command goes back to its queue.
    pub async fn lock(&mut self, targets: impl IntoIterator<Item = String>) -> Result<(), Stopped> {
        let mut keys: Vec<String> = targets
            .into_iter()
            .filter(|k| !self.guards.iter().any(|g| g.key() == k))
            .collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let shutdown = self.retrier.shutdown.clone();
            let locks = self.locks.clone();
            let guard = self
                .slot
                .wait_out(async move {
                    tokio::select! {
                        guard = locks.lock(key) => Some(guard),
                        () = shutdown.cancelled() => None,
                    }
                })
                .await;
            match guard {
                Some(guard) => self.guards.push(guard),
                None => {
                    return Err(Stopped {
                        stop: interrupted(),
                        action: "TargetLock",
                        error: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs one step with retries, adding its attempts to `key`'s count.
    /// Returns the total attempts with the result, or stops the run.
    pub async fn step<T, F, Fut>(
        &mut self,
        action: ApiAction,
        key: &str,
        call: F,
    ) -> Result<(StepResult<Called<T>>, u32), Stopped>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Called<T>, ApiError>>,
    {
        let step = For {
            pace: &self.pace,
            lane: self.lane,
            counters: self.counters,
        };
        let tried = self.retrier.run(action, step, &mut self.slot, call).await;
        let total = self.attempts.entry(key.to_owned()).or_insert(0);
        *total = total.saturating_add(tried.attempts);
        Ok((tried.result?, *total))
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
    ) -> Result<(Result<Vec<ManagedInstance>, ApiError>, u32, Option<String>), Stopped> {
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
                StepResult::Done(Called {
                    value: page,
                    request_id,
                }) => {
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
    pub fn finish(self, fate: Fate) -> Report {
        Report {
            events: self.events,
            steps: self.steps,
            attempts: self.attempts,
            fate,
            first_error: self.first_error,
            guards: self.guards,
        }
    }

    /// Ends the run with the outcome of its steps, or as stopped.
    pub fn conclude(self, result: Result<(), Stopped>) -> Report {
        let fate = match result {
            Ok(()) => Fate::Completed(overall(self.command.dry_run, &self.steps)),
            Err(stopped) => Fate::Stopped(stopped),
        };
        self.finish(fate)
    }
}

/// The lane of a command kind: containing a leaked code is an incident,
/// offboarding can wait seconds.
pub fn lane_of(kind: CommandKind) -> Lane {
    match kind {
        CommandKind::LeakAlert => Lane::Security,
        CommandKind::Decommission => Lane::Bulk,
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
