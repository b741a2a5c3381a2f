//! One delivery, from bytes to settlement.
//!
//! The command holds its concurrency [`Slot`] from the start until its
//! playbook is done, lending it out while it waits for its target's lock or a
//! backoff; settling (publishing and awaiting confirms) is waiting on the
//! broker and holds no slot, only the unacknowledged delivery.
//!
//! [`Worker::handle`] reads the command, runs its playbook, and hands the
//! resulting batch (events, reply, retry copy or dead letter) to [`settle`],
//! **the one place a delivery is acknowledged**: only after every message of
//! the batch is confirmed by the broker. If publishing fails, the delivery is
//! requeued (after a pause, so a broken broker is not spun against) and the
//! command is processed again later, which is safe because playbooks are
//! idempotent. A worker killed at any instant leaves the delivery unacked,
//! and the broker redelivers it.

use super::Worker;
use super::messages::{self, DeadLetterInfo};
use crate::auth;
use crate::broker::publisher::{Outgoing, Publisher};
use crate::command::{self, Command, CommandKind, Envelope, FieldError, RejectReason, Rejection};
use crate::event::{Event, EventError, Outcome};
use crate::health::CredentialProblem;
use crate::playbook::{self, End, Parked, Report, Run};
use crate::slot::Slot;
use crate::trace_context::TraceContext;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};

/// Pause before requeueing a delivery whose settlement could not be published.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

impl Worker {
    /// Processes one delivery from the `kind` queue in `slot`, and settles it.
    pub async fn handle(
        &self,
        delivery: Delivery,
        kind: CommandKind,
        publisher: Publisher,
        slot: Slot,
    ) {
        self.metrics.in_flight.inc();
        let props = &delivery.properties;
        let mut trace = TraceContext::continue_or_start(
            messages::header_str(props, "traceparent"),
            messages::header_str(props, "tracestate"),
        );
        let queue = self.topology.queue(kind);
        let destination = destination_name(
            delivery.exchange.as_str(),
            delivery.routing_key.as_str(),
            queue,
        );
        // A consumer span (OpenTelemetry messaging conventions); with OTel on, its
        // parent is the publisher's span and `trace` takes its ids.
        let span = info_span!(
            "command",
            otel.name = format!("process {destination}"),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = %destination,
            messaging.rabbitmq.destination.routing_key = delivery.routing_key.as_str(),
            messaging.rabbitmq.message.delivery_tag = delivery.delivery_tag,
            messaging.message.id = props.message_id().as_ref().map(|m| m.as_str()),
            messaging.message.body.size = delivery.data.len(),
            kind = kind.as_str(),
            command_id = tracing::field::Empty,
            region = tracing::field::Empty,
            target = tracing::field::Empty,
            outcome = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::bind_command_span(&span, &mut trace);
        span.record("trace_id", trace.trace_id.as_str());
        // Boxed: the playbook's future (HTTP client included) is several KiB,
        // and a task's future is moved by value as it is spawned; one heap
        // allocation here saves copying it around.
        let batch = Box::pin(self.process(&delivery, kind, &trace, slot).instrument(span)).await;
        Box::pin(settle(&delivery, &publisher, batch, &self.metrics)).await;
        self.metrics.in_flight.dec();
    }

    fn authenticate(&self, delivery: &Delivery) -> Result<(), auth::AuthError> {
        if !self.settings.security.require_signed_commands {
            return Ok(());
        }
        let props = &delivery.properties;
        auth::verify(
            &self.settings.security.command_keys.0,
            messages::header_str(props, auth::KEY_ID_HEADER),
            messages::header_str(props, auth::SIGNATURE_HEADER),
            &delivery.data,
        )
    }

    /// Refusals decided before the body is trusted: the signature, then the
    /// publisher. Each yields (reason, field, problem).
    fn refusal(&self, delivery: &Delivery) -> Option<(RejectReason, &'static str, String)> {
        if let Err(e) = self.authenticate(delivery) {
            return Some((
                RejectReason::Unauthenticated,
                "signature",
                format!("{e} ({})", e.as_str()),
            ));
        }
        let publishers = &self.settings.security.allowed_publishers.0;
        let user = delivery.properties.user_id().as_ref().map(|u| u.as_str());
        if !publishers.is_empty() && !user.is_some_and(|u| publishers.iter().any(|p| p == u)) {
            return Some((
                RejectReason::PublisherNotAllowed,
                "user_id",
                "the AMQP user_id is not in security.allowed_publishers".to_owned(),
            ));
        }
        None
    }

    /// Targets named outright must match the allowed patterns.
    fn refused_target(&self, command: &Command) -> Option<FieldError> {
        match &command.action {
            command::Action::Decommission(d) => match &d.target {
                command::Target::InstanceId(id) if !self.limits.allows_instance(id.as_str()) => {
                    Some(FieldError::new(
                        "instance_id",
                        "matches none of security.allowed_instance_ids",
                    ))
                }
                _ => None,
            },
            command::Action::LeakAlert(a)
                if !self.limits.allows_activation(a.activation_id.as_str()) =>
            {
                Some(FieldError::new(
                    "activation_id",
                    "matches none of security.allowed_activation_ids",
                ))
            }
            command::Action::LeakAlert(_) => None,
        }
    }

    #[allow(clippy::result_large_err)] // the rejection is the common, cheap path
    fn read(&self, delivery: &Delivery, kind: CommandKind) -> Result<Command, Rejection> {
        let props = &delivery.properties;
        let envelope = Envelope {
            kind,
            body: &delivery.data,
            content_type: props.content_type().as_ref().map(|c| c.as_str()),
            message_id: props.message_id().as_ref().map(|m| m.as_str()),
        };
        // Parsing is pure and bounded, so even an unauthenticated body is read,
        // only to identify the rejection (CONTRACT section 5); nothing runs.
        let parsed = command::parse(&envelope, &self.policy);
        let (reason, error) = match (self.refusal(delivery), &parsed) {
            (Some((reason, field, problem)), _) => (reason, FieldError::new(field, problem)),
            (None, Ok(command)) => match self.refused_target(command) {
                Some(error) => (RejectReason::TargetNotAllowed, error),
                None => return parsed,
            },
            (None, Err(_)) => return parsed,
        };
        let mut rejection = Rejection::new(reason, error);
        match parsed {
            Ok(c) => {
                rejection.command_id = Some(c.id);
                rejection.region_id = Some(c.region);
                rejection.account_id = c.account_id;
                rejection.audit = c.audit;
            }
            Err(r) => {
                rejection.command_id = r.command_id;
                rejection.region_id = r.region_id;
                rejection.account_id = r.account_id;
                rejection.audit = r.audit;
            }
        }
        Err(rejection)
    }

    async fn process(
        &self,
        delivery: &Delivery,
        kind: CommandKind,
        trace: &TraceContext,
        mut slot: Slot,
    ) -> Vec<Outgoing> {
        let source_queue = self.topology.queue(kind).to_owned();
        let command = match self.read(delivery, kind) {
            Ok(c) => c,
            Err(rejection) => {
                return self.rejected(delivery, kind, &rejection, &source_queue, trace);
            }
        };
        let span = tracing::Span::current();
        span.record("command_id", command.id.as_str());
        span.record("region", command.region.as_str());
        span.record("target", command.target_key().as_str());

        let _target = slot.wait_out(self.locks.lock(command.target_key())).await;
        let props = &delivery.properties;
        let counts = messages::RetryCounts::of(props);
        let redeliveries = counts.redeliveries;
        let stages = self.topology.delays.len();
        let last_chance = usize::try_from(redeliveries).unwrap_or(usize::MAX) >= stages;
        let prior = messages::prior_attempts(props);
        let account = command.account_id.as_ref().map(|a| a.as_str());
        let report = match self.identities.resolve(account).await {
            Ok(credentials) => {
                let cloud = self.ecs.traced(credentials, Some(trace.traceparent()));
                let run = Run::new(&command, &cloud, &self.retrier, prior)
                    .last_chance(last_chance)
                    .limits(self.limits.clone())
                    .slot(slot);
                match &command.action {
                    command::Action::Decommission(order) => {
                        playbook::decommission::run(run, order).await
                    }
                    command::Action::LeakAlert(alert) => {
                        playbook::leak_alert::run(run, alert).await
                    }
                }
            }
            // No identity to act with: the operator's problem; the command waits.
            Err(e) => Report {
                events: Vec::new(),
                steps: Vec::new(),
                attempts: prior,
                end: End::Park(Parked {
                    action: if account.is_some() {
                        "AssumeRole"
                    } else {
                        "ResolveCredentials"
                    },
                    error: EventError::own(e.code(), e.message()),
                }),
                first_error: None,
            },
        };
        self.observe_credentials(account, command.region.as_str(), &report);
        self.settlement(delivery, &command, report, counts, &source_queue, trace)
    }

    /// A successful or permanently failing API answer proves the keys work;
    /// a credential failure proves they do not. Log once per change of cause,
    /// with the service's code and message, the call, the region, the account
    /// and where the credentials came from: what the operator needs to act.
    fn observe_credentials(&self, account: Option<&str>, region: &str, report: &Report) {
        let problem = match &report.end {
            End::Park(Parked { action, error }) => Some(CredentialProblem {
                code: error.code.clone(),
                message: error.message.clone(),
                action: (*action).to_owned(),
                region: region.to_owned(),
                account: account.map(str::to_owned),
                source: self.identities.source(account),
            }),
            _ if report.attempts.values().any(|a| *a > 0) => None,
            _ => return,
        };
        let log = |p: &CredentialProblem, what: &str| {
            warn!(
                code = %p.code,
                message = %p.message,
                action = %p.action,
                region = %p.region,
                account = p.account.as_deref(),
                source = %p.source,
                "{what}: {p}"
            );
        };
        match account {
            // One account's role failing concerns that account's commands only:
            // the worker stays ready and says so in /readyz and the metrics.
            Some(account) => {
                if self.health.set_account_problem(account, problem.clone()) {
                    if let Some(p) = &problem {
                        log(
                            p,
                            "the account's role cannot be used: its commands wait in delayed retry",
                        );
                    } else {
                        info!(account, "the account's role works again");
                    }
                }
                let degraded = self.health.readiness().degraded_accounts.len();
                self.metrics
                    .degraded_accounts
                    .set(i64::try_from(degraded).unwrap_or(i64::MAX));
            }
            None => {
                if self.health.set_credential_problem(problem.clone()) {
                    if let Some(p) = &problem {
                        log(
                            p,
                            "credential or permission failure (commands wait in delayed retry; not ready until a call succeeds)",
                        );
                    } else {
                        info!("ECS calls succeed again: credentials are usable, ready");
                    }
                }
            }
        }
        self.metrics
            .ready
            .set(i64::from(self.health.readiness().ready));
    }

    fn rejected(
        &self,
        delivery: &Delivery,
        kind: CommandKind,
        rejection: &Rejection,
        source_queue: &str,
        trace: &TraceContext,
    ) -> Vec<Outgoing> {
        let reason = rejection.reason.as_str();
        tracing::Span::current().record("outcome", "rejected");
        info!(kind = kind.as_str(), reason, "command rejected");
        self.metrics
            .command(kind.as_str(), Outcome::Rejected.as_str());
        self.metrics
            .rejections
            .get_or_create(&crate::metrics::KindReason {
                kind: kind.as_str().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        let event = Event::rejected(kind, rejection);
        let summary = rejection
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.problem))
            .collect::<Vec<_>>()
            .join("; ");
        let mut batch = vec![
            messages::dead_letter(
                &self.topology.names.dead_letter_exchange,
                &delivery.data,
                &delivery.properties,
                &DeadLetterInfo {
                    reason: "rejected",
                    code: reason,
                    message: &summary,
                    source_queue,
                },
                trace,
            ),
            messages::event(&self.topology.names.event_exchange, &event, trace),
        ];
        batch.extend(messages::reply(&delivery.properties, &event, trace));
        batch
    }

    fn settlement(
        &self,
        delivery: &Delivery,
        command: &Command,
        report: Report,
        counts: messages::RetryCounts,
        source_queue: &str,
        trace: &TraceContext,
    ) -> Vec<Outgoing> {
        let exchange = &self.topology.names.event_exchange;
        let kind = command.kind.as_str();
        let mut batch: Vec<Outgoing> = report
            .events
            .iter()
            .map(|e| messages::event(exchange, e, trace))
            .collect();
        let props = &delivery.properties;
        let (reason, error) = match &report.end {
            End::Completed(outcome) => {
                let Some(terminal) = report.terminal_event(command) else {
                    return batch;
                };
                tracing::Span::current().record("outcome", outcome.as_str());
                info!(outcome = outcome.as_str(), "command completed");
                self.metrics.command(kind, outcome.as_str());
                if matches!(outcome, Outcome::Failed | Outcome::PartiallyFailed) {
                    let (code, message) = report
                        .first_error
                        .as_ref()
                        .map(|e| (e.code.as_str(), e.message.as_str()))
                        .unwrap_or(("Failed", "the command failed"));
                    batch.push(messages::dead_letter(
                        &self.topology.names.dead_letter_exchange,
                        &delivery.data,
                        props,
                        &DeadLetterInfo {
                            reason: outcome.as_str(),
                            code,
                            message,
                            source_queue,
                        },
                        trace,
                    ));
                }
                batch.push(messages::event(exchange, &terminal, trace));
                batch.extend(messages::reply(props, &terminal, trace));
                return batch;
            }
            End::Redeliver(error) => ("transient", error),
            End::Park(Parked { error, .. }) => ("credentials", error),
        };
        let (index, next) = match report.end {
            End::Park(_) => (
                counts.parks,
                messages::RetryCounts {
                    parks: counts.parks.saturating_add(1),
                    ..counts
                },
            ),
            _ => (
                counts.redeliveries,
                messages::RetryCounts {
                    redeliveries: counts.redeliveries.saturating_add(1),
                    ..counts
                },
            ),
        };
        let Some(stage) = self.topology.stage(index) else {
            return batch;
        };
        tracing::Span::current().record("outcome", "redelivery");
        debug!(stage = %stage.name, code = %error.code, reason, "command sent to delayed redelivery");
        self.metrics
            .redeliveries
            .get_or_create(&crate::metrics::KindReason {
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        batch.push(messages::retry_copy(
            &stage.name,
            source_queue,
            &delivery.data,
            props,
            next,
            &report.attempts,
            trace,
        ));
        batch
    }
}

/// `messaging.destination.name` for a RabbitMQ consumer (OpenTelemetry
/// semantic conventions): `{exchange}:{routing key}:{queue}`, empty parts
/// left out, and the queue alone when it equals the routing key.
fn destination_name(exchange: &str, routing_key: &str, queue: &str) -> String {
    let queue = if queue == routing_key { "" } else { queue };
    let parts: Vec<&str> = [exchange, routing_key, queue]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        "amq.default".to_owned()
    } else {
        parts.join(":")
    }
}

/// The ack point: acknowledge only after the whole batch is confirmed.
pub async fn settle(
    delivery: &Delivery,
    publisher: &Publisher,
    batch: Vec<Outgoing>,
    metrics: &crate::metrics::Metrics,
) {
    match publisher.publish_all(batch).await {
        Ok(published) => {
            if published.unroutable_events > 0 {
                metrics
                    .unroutable_events
                    .inc_by(u64::from(published.unroutable_events));
                debug!(
                    count = published.unroutable_events,
                    "events had no bound queue"
                );
            }
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                // The channel is gone: the broker requeues the delivery and it is
                // processed again (idempotently) after reconnecting.
                warn!(error = %e, "could not acknowledge; the command will be redelivered");
            }
        }
        Err(e) => {
            warn!(error = %e, "could not publish the command's outcome; requeueing it");
            tokio::time::sleep(REQUEUE_PAUSE).await;
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            if let Err(e) = delivery.acker.nack(requeue).await {
                warn!(error = %e, "could not requeue; the broker will redeliver on channel close");
            }
        }
    }
}
