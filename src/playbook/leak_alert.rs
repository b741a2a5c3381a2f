//! `leak-alert`: shut a leaked activation code off, then find and optionally
//! quarantine what registered with it.
//!
//! 1. DisableActivation (a dry run reads the code with DescribeActivations
//!    instead); `activation.disabled` is announced at once, confirmed, not held
//!    until the steps below are done.
//! 2. DeleteActivation when the code never registered an instance
//!    (`RegisteredCount` = 0) and `delete_if_unused`; otherwise `delete_skipped`.
//! 3. DescribeManagedInstances(ActivationId): every instance registered with the
//!    code, flagged `suspicious` when registered at or after `detected_at`.
//! 4. Quarantine (`none` / `suspicious` / `all`): deregister those instances.
//! 5. `activation.exposure_report`, which says what quarantine did.
//!
//! A failure in a later step never undoes or hides an earlier one: each step
//! has its own event and line in `command.completed`. A failed disable does not
//! stop the exposure report (the operator needs it most then).

use super::decommission::{deregister, instance_lock};
use super::{Called, Cloud, InstanceFilter, Report, Run, StepRecord, StepResult, Stopped};
use crate::command::{InstanceId, LeakAlert, Quarantine, client_token};
use crate::domain::error::{ApiAction, ApiError};
use crate::domain::resource::{Activation, ManagedInstance};
use crate::event::{Event, EventError, EventType, Outcome};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Carries out a leak-alert command.
pub async fn run<C: Cloud>(mut run: Run<'_, C>, alert: &LeakAlert) -> Report {
    let result = execute(&mut run, alert).await;
    run.conclude(result)
}

/// One instance in the exposure report.
#[derive(Debug, Serialize)]
struct Exposed {
    #[serde(flatten)]
    instance: ManagedInstance,
    suspicious: bool,
    /// `not_requested`, `deregistered`, `already_gone`, `failed`, `would_deregister`.
    quarantine: &'static str,
}

async fn execute<C: Cloud>(run: &mut Run<'_, C>, alert: &LeakAlert) -> Result<(), Stopped> {
    if !run.command.dry_run {
        run.lock([format!("activation:{}", activation_id(alert))])
            .await?;
    }
    let activation = disable(run, alert).await?;
    if let Some(activation) = &activation {
        delete(run, alert, activation).await?;
    }
    exposure(run, alert).await
}

fn activation_id(alert: &LeakAlert) -> &str {
    alert.activation_id.as_str()
}

/// Step 1. Returns the code's fields when known (so step 2 can decide).
async fn disable<C: Cloud>(
    run: &mut Run<'_, C>,
    alert: &LeakAlert,
) -> Result<Option<Activation>, Stopped> {
    let command = run.command;
    let (cloud, region, id) = (run.cloud, &command.region, activation_id(alert));
    let (action, result, attempts) = if command.dry_run {
        let (r, a) = run
            .step(ApiAction::DescribeActivations, "disable", || {
                cloud.describe_activation(region, id)
            })
            .await?;
        // A code that does not exist would make DisableActivation fail with 404.
        let r = match r {
            StepResult::Done(Called {
                value: None,
                request_id,
            }) => StepResult::Failed(ApiError::Api {
                http_status: 404,
                code: "ActivationId.NotFound".into(),
                message: "the activation code does not exist".into(),
                request_id,
                retry_after: None,
            }),
            other => other,
        };
        (ApiAction::DescribeActivations, r, a)
    } else {
        let (r, a) = run
            .step(ApiAction::DisableActivation, "disable", || {
                cloud.disable_activation(region, id)
            })
            .await?;
        (ApiAction::DisableActivation, r, a)
    };
    let step = ApiAction::DisableActivation.as_str();
    let ok_outcome = if command.dry_run {
        Outcome::DryRun
    } else {
        Outcome::Succeeded
    };
    match result {
        StepResult::Done(Called {
            value: activation,
            request_id,
        }) => {
            let activation = activation.unwrap_or_else(|| Activation::with_id(id));
            // Contained: say so now, before the exposure report and quarantine.
            run.announce(
                Event::for_command(command, EventType::ActivationDisabled, ok_outcome)
                    .with("activation", &activation)
                    .with_call(attempts, request_id.clone()),
            )
            .await;
            run.record(line(step, id, ok_outcome, attempts, request_id, None));
            Ok(Some(activation))
        }
        StepResult::AlreadyDone(e) | StepResult::Failed(e) => {
            let error = EventError::from_api(action, &e);
            let request_id = e.request_id().map(str::to_owned);
            run.events.push(
                Event::for_command(command, EventType::ActivationDisableFailed, Outcome::Failed)
                    .with("activation", Activation::with_id(id))
                    .with_call(attempts, request_id.clone())
                    .with_error(error.clone()),
            );
            run.record(line(
                step,
                id,
                Outcome::Failed,
                attempts,
                request_id,
                Some(error),
            ));
            Ok(None)
        }
    }
}

/// Step 2.
async fn delete<C: Cloud>(
    run: &mut Run<'_, C>,
    alert: &LeakAlert,
    activation: &Activation,
) -> Result<(), Stopped> {
    let command = run.command;
    let id = activation_id(alert);
    let step = ApiAction::DeleteActivation.as_str();
    let registered = activation.registered_count.unwrap_or(0);
    let skip = if !alert.delete_if_unused {
        Some("not_requested")
    } else if registered > 0 {
        Some("in_use")
    } else {
        None
    };
    if let Some(reason) = skip {
        run.events.push(
            Event::for_command(
                command,
                EventType::ActivationDeleteSkipped,
                Outcome::Skipped,
            )
            .with("activation", activation)
            .with("reason", reason),
        );
        run.record(line(step, id, Outcome::Skipped, 0, None, None));
        return Ok(());
    }
    if command.dry_run {
        run.events.push(
            Event::for_command(command, EventType::ActivationDeleted, Outcome::DryRun)
                .with("activation", activation),
        );
        run.record(line(step, id, Outcome::DryRun, 0, None, None));
        return Ok(());
    }
    let (cloud, region) = (run.cloud, &command.region);
    let (result, attempts) = run
        .step(ApiAction::DeleteActivation, "delete", || {
            cloud.delete_activation(region, id)
        })
        .await?;
    let (event, outcome, request_id, error) = match result {
        StepResult::Done(Called {
            value: deleted,
            request_id,
        }) => (
            Event::for_command(command, EventType::ActivationDeleted, Outcome::Succeeded)
                .with("activation", deleted.unwrap_or_else(|| activation.clone())),
            Outcome::Succeeded,
            request_id,
            None,
        ),
        StepResult::AlreadyDone(e) => (
            Event::for_command(command, EventType::ActivationDeleted, Outcome::AlreadyDone)
                .with("activation", activation),
            Outcome::AlreadyDone,
            e.request_id().map(str::to_owned),
            None,
        ),
        StepResult::Failed(e) => {
            let error = EventError::from_api(ApiAction::DeleteActivation, &e);
            (
                Event::for_command(command, EventType::ActivationDeleteFailed, Outcome::Failed)
                    .with("activation", activation)
                    .with_error(error.clone()),
                Outcome::Failed,
                e.request_id().map(str::to_owned),
                Some(error),
            )
        }
    };
    run.events
        .push(event.with_call(attempts, request_id.clone()));
    run.record(line(step, id, outcome, attempts, request_id, error));
    Ok(())
}

/// Steps 3 to 5.
async fn exposure<C: Cloud>(run: &mut Run<'_, C>, alert: &LeakAlert) -> Result<(), Stopped> {
    let command = run.command;
    let id = activation_id(alert);
    let filter = InstanceFilter::ActivationId(id.to_owned());
    let (result, attempts, request_id) = run.describe_all("describe", &filter).await?;
    let step = ApiAction::DescribeManagedInstances.as_str();
    let instances = match result {
        Ok(instances) => instances,
        Err(e) => {
            let error = EventError::from_api(ApiAction::DescribeManagedInstances, &e);
            let request_id = e.request_id().map(str::to_owned).or(request_id);
            run.events.push(
                Event::for_command(
                    command,
                    EventType::ActivationExposureReport,
                    Outcome::Failed,
                )
                .with("activation_id", id)
                .with_call(attempts, request_id.clone())
                .with_error(error.clone()),
            );
            run.record(line(
                step,
                id,
                Outcome::Failed,
                attempts,
                request_id,
                Some(error),
            ));
            return Ok(());
        }
    };
    let ok_outcome = if command.dry_run {
        Outcome::DryRun
    } else {
        Outcome::Succeeded
    };
    run.record(line(
        step,
        id,
        ok_outcome,
        attempts,
        request_id.clone(),
        None,
    ));

    let wanted = |instance: &ManagedInstance| match alert.quarantine {
        Quarantine::None => false,
        Quarantine::Suspicious => is_suspicious(instance, alert.detected_at),
        Quarantine::All => true,
    };
    let chosen = instances.iter().filter(|i| wanted(i)).count();
    let max = run.limits.max_instances;
    // Over the limit, quarantine is refused whole rather than done in part.
    let refused = chosen > max;
    if refused {
        run.record(StepRecord {
            step: "Quarantine",
            target: Some(id.to_owned()),
            outcome: Outcome::Failed,
            attempts: 0,
            request_id: None,
            error: Some(EventError::own(
                "TooManyInstances",
                format!(
                    "quarantine would deregister {chosen} instances, more than security.max_instances_per_command ({max})"
                ),
            )),
        });
    }
    if !refused && !command.dry_run {
        let quarantined = instances.iter().filter(|i| wanted(i));
        let ids = quarantined.filter_map(|i| InstanceId::parse(&i.instance_id).ok());
        run.lock(ids.map(|id| instance_lock(&id)).collect::<Vec<_>>())
            .await?;
    }
    let mut report = Vec::with_capacity(instances.len());
    for instance in instances {
        let suspicious = is_suspicious(&instance, alert.detected_at);
        let wanted = wanted(&instance);
        let parsed = InstanceId::parse(&instance.instance_id);
        let quarantine = match (wanted, parsed) {
            (false, _) => "not_requested",
            (true, _) if refused => "refused",
            (true, Ok(mid)) => {
                let token = client_token(&command.id, &mid);
                match deregister(run, &mid, Some(instance.clone()), &token).await? {
                    Outcome::Succeeded => "deregistered",
                    Outcome::AlreadyDone => "already_gone",
                    Outcome::DryRun => "would_deregister",
                    _ => "failed",
                }
            }
            (true, _) => "failed",
        };
        report.push(Exposed {
            instance,
            suspicious,
            quarantine,
        });
    }
    let suspicious = report.iter().filter(|e| e.suspicious).count();
    run.events.push(
        Event::for_command(command, EventType::ActivationExposureReport, ok_outcome)
            .with("activation_id", id)
            .with(
                "detected_at",
                alert.detected_at.and_then(|d| d.format(&Rfc3339).ok()),
            )
            .with("quarantine", alert.quarantine.as_str())
            .with("instance_count", report.len())
            .with("suspicious_count", suspicious)
            .with("instances", &report)
            .with_call(attempts, request_id),
    );
    Ok(())
}

/// Registered at or after the detection time. Without `detected_at` nothing is
/// suspicious (no evidence); with it, an instance whose registration time is
/// missing or unreadable is suspicious (it cannot be shown to predate the leak).
fn is_suspicious(instance: &ManagedInstance, detected_at: Option<OffsetDateTime>) -> bool {
    let Some(detected) = detected_at else {
        return false;
    };
    match instance
        .registration_time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    {
        Some(registered) => registered >= detected,
        None => true,
    }
}

fn line(
    step: &'static str,
    target: &str,
    outcome: Outcome,
    attempts: u32,
    request_id: Option<String>,
    error: Option<EventError>,
) -> StepRecord {
    StepRecord {
        step,
        target: Some(target.to_owned()),
        outcome,
        attempts,
        request_id,
        error,
    }
}

#[cfg(test)]
mod tests;
