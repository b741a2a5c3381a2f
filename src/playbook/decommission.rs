//! `decommission`: resolve the target to managed instances, then deregister them.
//!
//! - By `instance_id`: no lookup (DeregisterManagedInstance answers with the
//!   instance, and not-found is already done), except in a dry run, which
//!   describes the instance to report what would happen.
//! - By `machine_id` / `ip`: DescribeManagedInstances with the API filter.
//! - By `hostname`: the API has no hostname filter, so page through the region
//!   and match the `Hostname` field (ASCII case-insensitive, one trailing dot).
//! - Zero matches: the goal state holds (`already_done`). Several: refused
//!   (`AmbiguousTarget`) unless `all_matches`.
//! - One instance: ClientToken = command_id. Several: a token per instance
//!   derived from command_id and instance id, since one token reused with
//!   other parameters is refused by the API.

use super::{Called, Cloud, InstanceFilter, Report, Run, StepRecord, StepResult, Stopped};
use crate::command::{Command, Decommission, InstanceId, Target, client_token};
use crate::domain::error::ApiAction;
use crate::domain::resource::ManagedInstance;
use crate::event::{Event, EventError, EventType, Outcome};

/// The step name of target resolution in `command.completed`.
pub const RESOLVE: &str = "Resolve";

/// Carries out a decommission command.
pub async fn run<C: Cloud>(mut run: Run<'_, C>, order: &Decommission) -> Report {
    let result = execute(&mut run, order).await;
    run.conclude(result)
}

async fn execute<C: Cloud>(run: &mut Run<'_, C>, order: &Decommission) -> Result<(), Stopped> {
    let command = run.command;
    let targets: Vec<(InstanceId, Option<ManagedInstance>)> = match &order.target {
        Target::InstanceId(id) if !command.dry_run => vec![(id.clone(), None)],
        target => {
            let filter = match target {
                Target::InstanceId(id) => InstanceFilter::InstanceId(id.as_str().to_owned()),
                Target::MachineId(m) => InstanceFilter::MachineId(m.as_str().to_owned()),
                Target::Ip(ip) => InstanceFilter::InstanceIp(ip.to_string()),
                Target::Hostname(_) => InstanceFilter::All,
            };
            let (result, attempts, request_id) = run.describe_all("resolve", &filter).await?;
            let found = match result {
                Ok(found) => found,
                Err(e) => {
                    let error = EventError::from_api(ApiAction::DescribeManagedInstances, &e);
                    run.record(StepRecord {
                        step: RESOLVE,
                        target: None,
                        outcome: Outcome::Failed,
                        attempts,
                        request_id: e.request_id().map(str::to_owned).or(request_id),
                        error: Some(error),
                    });
                    return Ok(());
                }
            };
            let matches: Vec<ManagedInstance> = found
                .into_iter()
                .filter(|i| match target {
                    Target::Hostname(h) => i.hostname.as_deref().is_some_and(|n| h.matches(n)),
                    Target::InstanceId(id) => i.instance_id == id.as_str(),
                    _ => true,
                })
                .collect();
            let resolved = matches.len();
            let max = run.limits.max_instances;
            let error = match resolved {
                0 | 1 => None,
                _ if !order.all_matches => Some(EventError::own(
                    "AmbiguousTarget",
                    format!(
                        "the target matches {resolved} managed instances; set all_matches to deregister them all"
                    ),
                )),
                // Refused whole, not half-done: the limit bounds what one command can remove.
                _ if resolved > max => Some(EventError::own(
                    "TooManyInstances",
                    format!(
                        "the target matches {resolved} managed instances, more than security.max_instances_per_command ({max})"
                    ),
                )),
                _ => None,
            };
            let outcome = match (resolved, &error) {
                (_, Some(_)) => Outcome::Failed,
                (0, None) => Outcome::AlreadyDone,
                _ => Outcome::Succeeded,
            };
            run.record(StepRecord {
                step: RESOLVE,
                target: None,
                outcome,
                attempts,
                request_id,
                error,
            });
            if outcome == Outcome::Failed {
                return Ok(());
            }
            let mut targets = Vec::with_capacity(matches.len());
            for instance in matches {
                // An instance without a parseable id cannot be acted on; skip it visibly.
                match InstanceId::parse(&instance.instance_id) {
                    Ok(id) => targets.push((id, Some(instance))),
                    _ => run.record(StepRecord {
                        step: ApiAction::DeregisterManagedInstance.as_str(),
                        target: Some(instance.instance_id.clone()),
                        outcome: Outcome::Failed,
                        attempts: 0,
                        request_id: None,
                        error: Some(EventError::own(
                            "InvalidInstanceId",
                            "DescribeManagedInstances returned an instance id this worker cannot use",
                        )),
                    }),
                }
            }
            targets
        }
    };
    // The resolved instances' locks (not the selector's: a hostname and an
    // instance id of one host are one target), held until settled.
    if !command.dry_run {
        run.lock(targets.iter().map(|(id, _)| instance_lock(id)))
            .await?;
    }
    let single = targets.len() == 1;
    for (id, described) in targets {
        let token = if single {
            command.id.as_str().to_owned()
        } else {
            client_token(&command.id, &id)
        };
        deregister(run, &id, described, &token).await?;
    }
    Ok(())
}

/// Deregisters one instance (or reports that it would), emitting its event.
/// Shared with the leak-alert quarantine.
pub async fn deregister<C: Cloud>(
    run: &mut Run<'_, C>,
    id: &InstanceId,
    described: Option<ManagedInstance>,
    token: &str,
) -> Result<Outcome, Stopped> {
    let command: &Command = run.command;
    if !run.limits.allows_instance(id.as_str()) {
        let error = EventError::own(
            "TargetNotAllowed",
            "the instance id matches none of security.allowed_instance_ids",
        );
        run.events.push(
            Event::for_command(
                command,
                EventType::InstanceDeregistrationFailed,
                Outcome::Failed,
            )
            .with(
                "instance",
                described.unwrap_or_else(|| ManagedInstance::with_id(id.as_str())),
            )
            .with_error(error.clone()),
        );
        run.record(StepRecord {
            step: ApiAction::DeregisterManagedInstance.as_str(),
            target: Some(id.as_str().to_owned()),
            outcome: Outcome::Failed,
            attempts: 0,
            request_id: None,
            error: Some(error),
        });
        return Ok(Outcome::Failed);
    }
    let fallback = || {
        described
            .clone()
            .unwrap_or_else(|| ManagedInstance::with_id(id.as_str()))
    };
    if command.dry_run {
        run.events.push(
            Event::for_command(command, EventType::InstanceDeregistered, Outcome::DryRun)
                .with("instance", fallback()),
        );
        run.record(StepRecord {
            step: ApiAction::DeregisterManagedInstance.as_str(),
            target: Some(id.as_str().to_owned()),
            outcome: Outcome::DryRun,
            attempts: 0,
            request_id: None,
            error: None,
        });
        return Ok(Outcome::DryRun);
    }
    let cloud = run.cloud;
    let region = &command.region;
    let key = format!("deregister:{id}");
    let (result, attempts) = run
        .step(ApiAction::DeregisterManagedInstance, &key, || {
            cloud.deregister(region, id, token)
        })
        .await?;
    let (event, outcome, request_id, error) = match result {
        StepResult::Done(Called {
            value: instance,
            request_id,
        }) => (
            Event::for_command(command, EventType::InstanceDeregistered, Outcome::Succeeded)
                .with("instance", instance.unwrap_or_else(fallback)),
            Outcome::Succeeded,
            request_id,
            None,
        ),
        StepResult::AlreadyDone(e) => (
            Event::for_command(
                command,
                EventType::InstanceDeregistered,
                Outcome::AlreadyDone,
            )
            .with("instance", fallback()),
            Outcome::AlreadyDone,
            e.request_id().map(str::to_owned),
            None,
        ),
        StepResult::Failed(e) => {
            let error = EventError::from_api(ApiAction::DeregisterManagedInstance, &e);
            (
                Event::for_command(
                    command,
                    EventType::InstanceDeregistrationFailed,
                    Outcome::Failed,
                )
                .with("instance", fallback())
                .with_error(error.clone()),
                Outcome::Failed,
                e.request_id().map(str::to_owned),
                Some(error),
            )
        }
    };
    run.events.push(
        event
            .with("client_token", token)
            .with_call(attempts, request_id.clone()),
    );
    run.record(StepRecord {
        step: ApiAction::DeregisterManagedInstance.as_str(),
        target: Some(id.as_str().to_owned()),
        outcome,
        attempts,
        request_id,
        error,
    });
    Ok(outcome)
}

/// The lock key of an instance (see [`crate::locks`]).
pub fn instance_lock(id: &InstanceId) -> String {
    format!("instance:{id}")
}

#[cfg(test)]
mod tests;
