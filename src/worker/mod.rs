//! The worker: a supervised broker session that consumes both command queues
//! and carries commands out, with bounded concurrency, per-target
//! serialization and a clean shutdown.
//!
//! A session has two connections, as RabbitMQ advises: one consumes and
//! acknowledges, the other publishes (events, retry copies, dead letters,
//! replies). Flow control the broker applies to a publishing connection then
//! never holds up deliveries and acks, and the reverse.
//!
//! Reconnection is ours, not lapin's: when either connection or a channel
//! fails, the session ends, readiness turns false, and new connections are
//! made with backoff, the topology re-declared and consumers restarted.
//! Deliveries of the dead session that were not acknowledged are redelivered
//! by the broker.

mod handle;

use crate::broker::connect::{ConnectError, connect};
use crate::broker::publisher::Publisher;
use crate::broker::topology::Topology;
use crate::command::{CommandKind, Policy};
use crate::credentials::identities::Identities;
use crate::ecs::client::EcsClient;
use crate::ecs::rate_limit::RateLimiter;
use crate::health::Health;
use crate::limits::Limits;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::retry::{Retrier, RetryBudget, RetryPolicy};
use crate::settings::Settings;
use crate::slot::Slot;
use backoff::backoff::Backoff;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Capacity of the shared retry budget (see [`RetryBudget`]).
const RETRY_BUDGET: u32 = 500;

/// How often a session checks that both its connections are still open.
const CONNECTION_CHECK: Duration = Duration::from_millis(250);

/// Connection names, as `rabbitmqctl list_connections` shows them.
const CONSUMING: &str = "lifecycle-worker";
const PUBLISHING: &str = "lifecycle-worker-publisher";

/// The two connections of one broker session.
struct Connections {
    consuming: Connection,
    publishing: Connection,
}

/// Longest wait for the broker's answer to a connection close. A connection
/// whose socket failed may never answer (lapin then waits forever), and the
/// reconnect loop must not wait with it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

impl Connections {
    async fn close(&self, code: u16, reason: &str) {
        for connection in [&self.consuming, &self.publishing] {
            if connection.status().connected() {
                let close = connection.close(code, reason.into());
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            }
        }
    }
}

/// Resolves when either connection, or the publishing channel, is no longer
/// open. Consumers notice a lost consuming connection on their own; this also
/// covers an idle one, and the publishing side, which nothing else is reading
/// from: a channel the broker closed (say, a publish to an exchange deleted by
/// hand) takes no more outcomes, so the session must be replaced.
async fn lost(connections: &Connections, publishing: &Channel) -> String {
    loop {
        tokio::time::sleep(CONNECTION_CHECK).await;
        for (name, connection) in [
            (CONSUMING, &connections.consuming),
            (PUBLISHING, &connections.publishing),
        ] {
            if !connection.status().connected() {
                return format!("the {name} connection closed");
            }
        }
        if !publishing.status().connected() {
            return "the publishing channel closed".to_owned();
        }
    }
}

/// Everything one processing needs; shared by all tasks.
pub struct Worker {
    settings: Arc<Settings>,
    topology: Topology,
    ecs: EcsClient,
    identities: Arc<Identities>,
    policy: Policy,
    /// Steps of offboarding commands (the bulk lane).
    retrier: Retrier,
    /// Steps of leak-alerts (the security lane): a retry budget of their own,
    /// so an offboarding backlog's failures never use up an incident's retries.
    security: Retrier,
    metrics: Arc<Metrics>,
    health: Health,
    locks: KeyedLocks,
    /// Concurrency slots of offboarding commands.
    permits: Arc<Semaphore>,
    /// Concurrency slots of leak-alerts: a pool of their own, so no backlog
    /// of offboarding ever holds the slot an incident needs.
    security_permits: Arc<Semaphore>,
    limits: Limits,
}

/// Why a broker session ended.
enum SessionEnd {
    /// Shutdown was requested and in-flight work drained.
    Shutdown,
    /// The broker was lost.
    Lost(String),
}

impl Worker {
    /// Builds a worker. `shutdown` stops consuming and interrupts retry waits.
    pub fn new(
        settings: Arc<Settings>,
        ecs: EcsClient,
        identities: Arc<Identities>,
        limiter: Arc<RateLimiter>,
        metrics: Arc<Metrics>,
        health: Health,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let policy = Policy {
            allowed_regions: settings.security.allowed_regions.0.clone(),
            delete_if_unused_default: settings.leak_alert.delete_if_unused,
            known_accounts: settings
                .accounts
                .roles
                .0
                .iter()
                .map(|(a, _)| a.clone())
                .collect(),
            max_body_bytes: command::DEFAULT_MAX_BODY_BYTES,
        };
        let retrier = Retrier {
            policy: RetryPolicy::from_settings(&settings.retry),
            budget: RetryBudget::new(RETRY_BUDGET),
            shutdown,
            observer: metrics.clone(),
            stages: settings.retry.redelivery_delays.count(),
            limiter: Some(limiter),
        };
        let permits = Arc::new(Semaphore::new(
            usize::try_from(settings.worker.concurrency).unwrap_or(1),
        ));
        let limits = Limits {
            max_instances: usize::try_from(settings.security.max_instances_per_command)
                .unwrap_or(usize::MAX),
            instance_patterns: settings.security.allowed_instance_ids.0.clone(),
            activation_patterns: settings.security.allowed_activation_ids.0.clone(),
        };
        Arc::new(Self {
            topology: Topology::from_settings(&settings),
            settings,
            ecs,
            identities,
            policy,
            security: Retrier {
                budget: RetryBudget::new(RETRY_BUDGET),
                ..retrier.clone()
            },
            retrier,
            metrics,
            health,
            locks: KeyedLocks::default(),
            security_permits: Arc::new(Semaphore::new(permits.available_permits())),
            permits,
            limits,
        })
    }

    /// Runs until `shutdown` fires and in-flight commands are finished.
    pub async fn run(self: Arc<Self>) {
        let shutdown = self.retrier.shutdown.clone();
        let tracker = TaskTracker::new();
        let mut backoff = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(self.settings.amqp.reconnect_initial_ms),
            current_interval: Duration::from_millis(self.settings.amqp.reconnect_initial_ms),
            max_interval: Duration::from_millis(self.settings.amqp.reconnect_max_ms),
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        let mut sessions = 0u64;
        while !shutdown.is_cancelled() {
            let connections = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    let wait = backoff.next_backoff().unwrap_or(backoff.max_interval);
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "broker unavailable");
                    self.set_ready(Some(format!("broker unavailable: {e}")));
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            };
            sessions += 1;
            if sessions > 1 {
                self.metrics.reconnects.inc();
            }
            backoff.reset();
            match self.session(&connections, &tracker).await {
                SessionEnd::Shutdown => {
                    connections.close(200, "shutdown").await;
                    break;
                }
                SessionEnd::Lost(why) => {
                    warn!(reason = %why, "broker session lost; reconnecting");
                    self.set_ready(Some(format!("broker connection lost: {why}")));
                    connections.close(320, "reconnecting").await;
                }
            }
        }
        self.health.set_shutting_down();
        self.metrics.ready.set(0);
        tracker.close();
        self.drain(&tracker).await;
        info!("worker stopped");
    }

    fn set_ready(&self, broker_problem: Option<String>) {
        self.health.set_broker(broker_problem);
        self.metrics
            .ready
            .set(i64::from(self.health.readiness().ready));
    }

    async fn connect(&self) -> Result<Connections, ConnectError> {
        let consuming = connect(&self.settings.amqp, CONSUMING).await?;
        match connect(&self.settings.amqp, PUBLISHING).await {
            Ok(publishing) => Ok(Connections {
                consuming,
                publishing,
            }),
            Err(e) => {
                let _ = consuming.close(320, "reconnecting".into()).await;
                Err(e)
            }
        }
    }

    async fn drain(&self, tracker: &TaskTracker) {
        let grace = Duration::from_millis(self.settings.worker.shutdown_grace_ms);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            error!(
                in_flight = tracker.len(),
                "shutdown grace period over; unfinished commands stay unacknowledged and will be redelivered"
            );
        }
    }

    /// One session's life: declare, consume, until lost or shut down.
    async fn session(
        self: &Arc<Self>,
        connections: &Connections,
        tracker: &TaskTracker,
    ) -> SessionEnd {
        let shutdown = self.retrier.shutdown.clone();
        let publisher = match Publisher::open(&connections.publishing).await {
            Ok(p) => p,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        if let Err(e) = self.topology.declare(publisher.channel()).await {
            error!(error = %e, "could not declare the topology");
            return SessionEnd::Lost(format!("topology: {e}"));
        }
        let mut consumers = Vec::new();
        for kind in [CommandKind::Decommission, CommandKind::LeakAlert] {
            match self.consume(&connections.consuming, kind).await {
                Ok(c) => consumers.push(c),
                Err(e) => return SessionEnd::Lost(format!("consumer: {e}")),
            }
        }
        self.set_ready(None);
        info!(
            prefetch = self.settings.amqp.prefetch,
            concurrency = self.settings.worker.concurrency,
            "consuming"
        );
        let session = CancellationToken::new();
        let mut loops = tokio::task::JoinSet::new();
        let channels: Vec<Channel> = consumers.iter().map(|(_, ch, _)| ch.clone()).collect();
        for (kind, channel, consumer) in consumers {
            let worker = Arc::clone(self);
            let publisher = publisher.clone();
            let session = session.clone();
            let tracker = tracker.clone();
            loops.spawn(async move {
                worker
                    .consume_loop(kind, channel, consumer, publisher, session, tracker)
                    .await
            });
        }
        let end = tokio::select! {
            () = shutdown.cancelled() => None,
            ended = loops.join_next() => Some(match ended {
                Some(Ok(Err(why))) => why,
                _ => "consumer stopped".to_owned(),
            }),
            why = lost(connections, publisher.channel()) => Some(why),
        };
        session.cancel();
        while loops.join_next().await.is_some() {}
        match end {
            None => {
                info!("shutdown: consumers cancelled; finishing in-flight commands");
                self.health.set_shutting_down();
                self.metrics.ready.set(0);
                // No session follows: close the tracker so the drain ends as soon
                // as the last in-flight command settles, not at the grace deadline.
                tracker.close();
                self.drain(tracker).await;
                // Acks of the drained commands went out on these channels; close
                // them (then the publisher's) before the connection, in order.
                for channel in channels.iter().chain([publisher.channel()]) {
                    let _ = channel.close(200, "shutdown".into()).await;
                }
                SessionEnd::Shutdown
            }
            Some(why) => SessionEnd::Lost(why),
        }
    }

    async fn consume(
        &self,
        connection: &Connection,
        kind: CommandKind,
    ) -> Result<(CommandKind, Channel, lapin::Consumer), lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(
                self.settings.amqp.prefetch,
                BasicQosOptions { global: false },
            )
            .await?;
        let consumer = channel
            .basic_consume(
                self.topology.queue(kind).into(),
                format!(
                    "lifecycle-worker-{}-{}",
                    kind.as_str(),
                    uuid::Uuid::new_v4().simple()
                )
                .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((kind, channel, consumer))
    }

    /// The concurrency slots of a kind's commands (its lane's own pool).
    fn pool(&self, kind: CommandKind) -> &Arc<Semaphore> {
        match kind {
            CommandKind::LeakAlert => &self.security_permits,
            CommandKind::Decommission => &self.permits,
        }
    }

    /// The step executor of a kind's commands (its lane's own retry budget).
    fn retrier_for(&self, kind: CommandKind) -> &Retrier {
        match kind {
            CommandKind::LeakAlert => &self.security,
            CommandKind::Decommission => &self.retrier,
        }
    }

    /// Pulls deliveries and spawns one task each, bounded by the permits.
    /// Returns `Err(reason)` when the broker is lost, `Ok` when cancelled.
    async fn consume_loop(
        self: Arc<Self>,
        kind: CommandKind,
        channel: Channel,
        mut consumer: lapin::Consumer,
        publisher: Publisher,
        session: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<(), String> {
        loop {
            // Wait for a delivery first, then for a permit: an idle queue must not
            // hold a permit the other queue's commands need. A delivery waiting for
            // a permit is bounded by the prefetch and requeued if the session ends.
            let next = tokio::select! {
                () = session.cancelled() => break,
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the broker cancelled the consumer".to_owned()),
            };
            // Held from receipt (waiting for a permit included) to settlement.
            let held = (kind == CommandKind::LeakAlert).then(|| self.metrics.hold_leak_alert());
            let permit = tokio::select! {
                () = session.cancelled() => break,
                p = Arc::clone(self.pool(kind)).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let worker = Arc::clone(&self);
            let publisher = publisher.clone();
            let task = async move {
                let _held = held;
                worker
                    .handle(delivery, kind, publisher, Slot::held(permit))
                    .await;
            };
            tracker.spawn(task);
        }
        // Stop the broker from sending more; unstarted prefetched deliveries
        // are requeued when the channel closes.
        let tag = consumer.tag();
        let _ = channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await;
        Ok(())
    }
}

use crate::command;
