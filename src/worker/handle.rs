//! One delivery, from bytes to settlement.
//!
//! [`Worker::handle`] reads the command, carries it out, asks
//! [`crate::settlement::plan`] what settling it means, and hands the plan to
//! [`settle`], **the one place a delivery is acknowledged or put back**: it is
//! acknowledged only after every message of the plan is confirmed by the
//! broker. When the broker refuses them, the *same* plan is published again
//! with growing pauses (the command's API calls are never made again for it)
//! and the worker reports not ready meanwhile; shutdown puts the delivery back
//! on its queue unchanged. A worker killed at any instant leaves the delivery
//! unacknowledged, and the broker redelivers it.
//!
//! The command holds its concurrency [`Slot`] while it works and lends it out
//! whenever it waits (its identity's STS call, a target's lock, a backoff, the
//! rate limit); settling holds no slot, only the unacknowledged delivery and
//! the locks of the targets it acted on, so the next command for the same
//! instance starts only once this one's outcome is confirmed.

use super::Worker;
use crate::auth;
use crate::broker::publisher::{PublishError, Publisher};
use crate::command::{self, Command, CommandKind, Envelope, FieldError, RejectReason, Rejection};
use crate::decision::{Counters, Stop, park};
use crate::domain::error::ApiError;
use crate::event::Event;
use crate::health::CredentialProblem;
use crate::locks::TargetGuard;
use crate::playbook::{self, Announce, Fate, Report, Run};
use crate::retry::Stopped;
use crate::settlement::messages;
use crate::settlement::{self, Delivered, Ending, Plan, Processed, Summary};
use crate::slot::Slot;
use crate::trace_context::TraceContext;
use backoff::backoff::Backoff;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};

/// First pause before publishing a refused settlement again.
const REPUBLISH_INITIAL: Duration = Duration::from_millis(500);
/// Longest pause between attempts to publish a refused settlement. Short:
/// the usual refusal is a quorum queue without a leader for the seconds of an
/// election after a node died, and a leak-alert's `activation.disabled` must
/// go out as soon as the broker takes it again (with 30 s, and the backoff's
/// jitter, it waited up to 45 s after the cluster had recovered). A refusal
/// that lasts (a full queue that rejects publishes) costs one publish per held
/// command every few seconds.
const REPUBLISH_MAX: Duration = Duration::from_secs(5);
/// How long one command's outcome may be refused before the session is
/// replaced ([`Publisher::give_up_session`]): long enough that a full queue
/// the operator has to drain does not make sessions churn (each new session
/// redelivers the held commands, and a quorum queue dead-letters a command
/// after 20 deliveries: 10 minutes at this pace), short enough that a channel
/// the broker nacks for good is replaced within a minute.
pub(crate) const REFUSED_FOR_NEW_SESSION: Duration = Duration::from_secs(30);

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
        let (plan, guards) = Box::pin(
            self.process(&delivery, kind, &trace, &publisher, slot)
                .instrument(span.clone()),
        )
        .await;
        Box::pin(self.settle(&delivery, &publisher, plan).instrument(span)).await;
        // Only now may the next command for these targets start.
        drop(guards);
        self.metrics.in_flight.dec();
    }

    /// Refusals decided before the body is trusted: the signature and its
    /// age, then the publisher. Each yields (reason, field, problem).
    fn refusal(
        &self,
        delivery: &Delivery,
    ) -> Result<auth::Verified, (RejectReason, &'static str, String)> {
        let verified = auth::authenticate(
            &self.settings.security,
            &delivery.properties,
            &delivery.data,
        )
        .map_err(|e| (e.reason(), e.field(), format!("{e} ({})", e.as_str())))?;
        let publishers = &self.settings.security.allowed_publishers.0;
        let user = delivery.properties.user_id().as_ref().map(|u| u.as_str());
        if !publishers.is_empty() && !user.is_some_and(|u| publishers.iter().any(|p| p == u)) {
            return Err((
                RejectReason::PublisherNotAllowed,
                "user_id",
                "the AMQP user_id is not in security.allowed_publishers".to_owned(),
            ));
        }
        Ok(verified)
    }

    /// A signed command's key must be scoped for what it asks: judged on a
    /// parsed command, and before the policy refusals (region, account), so a
    /// key learns nothing about what it may not ask for.
    fn refused_scope(
        &self,
        verified: &auth::Verified,
        kind: CommandKind,
        parsed: &Result<Command, Rejection>,
    ) -> Option<FieldError> {
        let key_id = verified.key_id()?;
        let (region, account) = match parsed {
            Ok(c) => (c.region.as_str(), c.account_id.as_ref()),
            Err(r)
                if matches!(
                    r.reason,
                    RejectReason::RegionNotAllowed | RejectReason::UnknownAccount
                ) =>
            {
                (r.region_id.as_ref()?.as_str(), r.account_id.as_ref())
            }
            Err(_) => return None,
        };
        let request = auth::scopes::Request {
            kind,
            region,
            account: account.map(|a| a.as_str()),
        };
        if self.settings.security.key_scopes.allows(key_id, &request) {
            return None;
        }
        Some(FieldError::new(
            "key_id",
            format!("key {key_id:?} may not ask for {request} (security.key_scopes)"),
        ))
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

    /// Reads the command, and what authentication found.
    fn read(
        &self,
        delivery: &Delivery,
        kind: CommandKind,
    ) -> (Result<Command, Rejection>, auth::Verified) {
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
        // A command refused as unauthenticated, stale or out of scope keeps
        // nothing of its authentication: its dead letter is not sealed.
        let refused = auth::Verified::Refused;
        let (reason, error, verified) = match self.refusal(delivery) {
            Err((reason, field, problem)) => (reason, FieldError::new(field, problem), refused),
            Ok(verified) => match self.refused_scope(&verified, kind, &parsed) {
                Some(error) => (RejectReason::KeyScopeDenied, error, refused),
                None => match parsed.as_ref().map(|c| self.refused_target(c)) {
                    Ok(Some(error)) => (RejectReason::TargetNotAllowed, error, verified),
                    Ok(None) | Err(_) => return (parsed, verified),
                },
            },
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
        (Err(rejection), verified)
    }

    /// Reads and carries out the command; returns its settlement plan and the
    /// target locks to hold until the plan is executed.
    async fn process(
        &self,
        delivery: &Delivery,
        kind: CommandKind,
        trace: &TraceContext,
        publisher: &Publisher,
        slot: Slot,
    ) -> (Plan, Vec<TargetGuard>) {
        let (read, verified) = self.read(delivery, kind);
        let delivered = Delivered {
            body: &delivery.data,
            props: &delivery.properties,
            source_queue: self.topology.queue(kind),
            sealer: verified.sealer(),
        };
        let (plan, guards) = match read {
            Err(rejection) => {
                let processed = Processed::Rejected {
                    kind,
                    rejection: &rejection,
                };
                let plan = settlement::plan(&processed, delivered, &self.topology, trace);
                (plan, Vec::new())
            }
            Ok(command) => {
                let span = tracing::Span::current();
                span.record("command_id", command.id.as_str());
                span.record("region", command.region.as_str());
                span.record("target", command.target_key().as_str());
                // Anyone may write the retry headers: only the worker's own
                // (sealed) copies are believed.
                let (counters, prior) = if verified.trusts_bookkeeping() {
                    let props = &delivery.properties;
                    (messages::counters(props), messages::prior_attempts(props))
                } else {
                    Default::default()
                };
                let announcer = Announcer {
                    publisher,
                    exchange: &self.topology.names.event_exchange,
                    trace,
                    metrics: &self.metrics,
                };
                let mut report = self
                    .carry_out(&command, prior, counters, &announcer, slot)
                    .await;
                self.observe_credentials(&command, &report);
                let processed = Processed::Ran {
                    command: &command,
                    report: &report,
                    counters,
                };
                let plan = settlement::plan(&processed, delivered, &self.topology, trace);
                (plan, std::mem::take(&mut report.guards))
            }
        };
        self.record(kind, &plan.summary);
        (plan, guards)
    }

    /// Resolves the command's identity and runs its playbook.
    async fn carry_out(
        &self,
        command: &Command,
        prior: playbook::Attempts,
        counters: Counters,
        announcer: &Announcer<'_>,
        mut slot: Slot,
    ) -> Report {
        let account = command.account_id.as_ref().map(|a| a.as_str());
        // An account's STS may be slow or failing: its commands wait without
        // their slots, so other accounts' commands go on.
        let identity = slot.wait_out(self.identities.resolve(account)).await;
        let credentials = match identity {
            Ok(c) => c,
            // No identity to act with: the operator's problem; the decision parks it.
            Err(e) => {
                let stop = park(counters, self.retrier.stages);
                return Report {
                    events: Vec::new(),
                    steps: Vec::new(),
                    attempts: prior,
                    fate: Fate::Stopped(Stopped {
                        stop,
                        action: if account.is_some() {
                            "AssumeRole"
                        } else {
                            "ResolveCredentials"
                        },
                        error: Some(e),
                    }),
                    first_error: None,
                    guards: Vec::new(),
                };
            }
        };
        let cloud = self
            .ecs
            .traced(credentials, Some(announcer.trace.traceparent()));
        let run = Run::new(command, &cloud, self.retrier_for(command.kind), prior)
            .counters(counters)
            .limits(self.limits.clone())
            .locks(self.locks.clone())
            .announcer(announcer)
            .slot(slot);
        match &command.action {
            command::Action::Decommission(order) => playbook::decommission::run(run, order).await,
            command::Action::LeakAlert(alert) => playbook::leak_alert::run(run, alert).await,
        }
    }

    /// Logs and counts what the settlement amounts to.
    fn record(&self, kind: CommandKind, summary: &Summary) {
        let kind = kind.as_str();
        let span = tracing::Span::current();
        match *summary {
            Summary::Rejected(reason) => {
                span.record("outcome", "rejected");
                info!(kind, reason, "command rejected");
                self.metrics.command(kind, "rejected");
                self.metrics
                    .rejections
                    .get_or_create(&crate::metrics::KindReason {
                        kind: kind.to_owned(),
                        reason: reason.to_owned(),
                    })
                    .inc();
            }
            Summary::Completed(outcome) => {
                span.record("outcome", outcome.as_str());
                info!(outcome = outcome.as_str(), "command completed");
                self.metrics.command(kind, outcome.as_str());
            }
            Summary::Redelivered { reason, stage } => {
                span.record("outcome", "redelivery");
                let stage = self.topology.stage(stage).name;
                debug!(%stage, reason, "command sent to delayed redelivery");
                self.metrics
                    .redeliveries
                    .get_or_create(&crate::metrics::KindReason {
                        kind: kind.to_owned(),
                        reason: reason.to_owned(),
                    })
                    .inc();
            }
            Summary::Requeued => {
                span.record("outcome", "requeued");
                info!("shutdown: the command goes back to its queue unchanged");
            }
        }
    }

    /// A successful or permanently failing API answer proves the keys work;
    /// a credential failure proves they do not. Log once per change of cause,
    /// with the service's code and message, the call, the region, the account
    /// and where the credentials came from: what the operator needs to act.
    fn observe_credentials(&self, command: &Command, report: &Report) {
        let account = command.account_id.as_ref().map(|a| a.as_str());
        let problem = match &report.fate {
            Fate::Stopped(Stopped {
                stop: Stop::Park { .. },
                action,
                error,
            }) => Some(CredentialProblem {
                code: error
                    .as_ref()
                    .map_or("Credentials", ApiError::code)
                    .to_owned(),
                message: error.as_ref().map(ApiError::message).unwrap_or_default(),
                action: (*action).to_owned(),
                region: command.region.as_str().to_owned(),
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

    /// Executes a plan: the one ack point. Acknowledges only after every
    /// message is confirmed; publishes the same plan again, with growing
    /// pauses, while the broker refuses it (not ready meanwhile); puts the
    /// delivery back unchanged on shutdown or for a requeue plan.
    async fn settle(&self, delivery: &Delivery, publisher: &Publisher, plan: Plan) {
        if plan.ending == Ending::Requeue {
            requeue(delivery).await;
            return;
        }
        let mut pause = backoff::ExponentialBackoff {
            initial_interval: REPUBLISH_INITIAL,
            current_interval: REPUBLISH_INITIAL,
            max_interval: REPUBLISH_MAX,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        let mut refused: Option<std::time::Instant> = None;
        loop {
            match publisher.publish_all(&plan.messages).await {
                Ok(published) => {
                    if published.unroutable_events > 0 {
                        self.metrics
                            .unroutable_events
                            .inc_by(u64::from(published.unroutable_events));
                        debug!(
                            count = published.unroutable_events,
                            "events had no bound queue"
                        );
                    }
                    if refused.is_some() {
                        info!("the command's outcome is published now");
                        self.set_publishing(None);
                    }
                    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                        // The channel is gone: the broker requeues the delivery and it is
                        // processed again (idempotently) after reconnecting.
                        warn!(error = %e, "could not acknowledge; the command will be redelivered");
                    }
                    return;
                }
                // The channel is gone: nothing more can be published on it, and
                // the session reconnects; the broker redelivers the command.
                Err(e @ (PublishError::Broker(_) | PublishError::SessionLost)) => {
                    warn!(error = %e, "could not publish the command's outcome: the broker channel failed; it will be redelivered");
                    if refused.is_some() {
                        // The next session starts afresh; a refusal there says so again.
                        self.set_publishing(None);
                    }
                    return;
                }
                Err(e) => {
                    let since = *refused.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= REFUSED_FOR_NEW_SESSION {
                        // Not acknowledged: the new session's consumer gets it again.
                        warn!(error = %e, "the broker has refused the command's outcome for too long; replacing the session (the command will be redelivered)");
                        publisher.give_up_session();
                        self.set_publishing(None);
                        return;
                    }
                    let wait = pause.next_backoff().unwrap_or(REPUBLISH_MAX);
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the broker refused the command's outcome; publishing it again (its API calls are not repeated)");
                    self.set_publishing(Some(format!("the broker refuses command outcomes: {e}")));
                    let shutdown = self.retrier.shutdown.clone();
                    let waited = tokio::select! {
                        () = tokio::time::sleep(wait) => true,
                        () = shutdown.cancelled() => false,
                    };
                    if !waited {
                        // Shutdown never fails a command: back on its queue as
                        // it was (`decision::interrupted`).
                        requeue(delivery).await;
                        return;
                    }
                }
            }
        }
    }

    fn set_publishing(&self, problem: Option<String>) {
        self.health.set_publishing(problem);
        self.metrics
            .ready
            .set(i64::from(self.health.readiness().ready));
    }
}

/// Publishes the events a playbook announces before its settlement (a leaked
/// code's `activation.disabled`), confirmed, on the session's publisher.
struct Announcer<'a> {
    publisher: &'a Publisher,
    exchange: &'a str,
    trace: &'a TraceContext,
    metrics: &'a crate::metrics::Metrics,
}

impl Announce for Announcer<'_> {
    fn announce<'b>(&'b self, event: &'b Event) -> futures::future::BoxFuture<'b, bool> {
        Box::pin(async move {
            let message = messages::event(self.exchange, event, self.trace);
            match self
                .publisher
                .publish_all(std::slice::from_ref(&message))
                .await
            {
                Ok(published) => {
                    self.metrics
                        .unroutable_events
                        .inc_by(u64::from(published.unroutable_events));
                    true
                }
                Err(e) => {
                    warn!(error = %e, event = event.kind.as_str(), "could not announce at once; the event goes out with the settlement");
                    false
                }
            }
        })
    }
}

/// Puts the delivery back on its queue unchanged.
async fn requeue(delivery: &Delivery) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(e) = delivery.acker.nack(requeue).await {
        warn!(error = %e, "could not requeue; the broker will redeliver on channel close");
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
