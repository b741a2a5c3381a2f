//! The worker: a supervised broker session that consumes both command queues
//! and carries commands out, with bounded concurrency, per-target
//! serialization and a clean shutdown.
//!
//! A session has two connections (`link`): one consumes and acknowledges,
//! the other publishes (events, retry copies, dead letters, replies).
//!
//! Reconnection is ours, not lapin's: when either connection or a channel
//! fails, the session ends, readiness turns false, and new connections are
//! made, each round over every node of `amqp.url` in a fresh random order,
//! with jittered backoff between rounds; the topology is re-declared and
//! consumers restarted. Deliveries of the dead session that were not
//! acknowledged are redelivered by the broker, and whatever still waits for a
//! confirm of the dead session stops waiting: unconfirmed is not confirmed.

mod handle;
mod link;

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
use link::{Connections, lost};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

/// Capacity of the shared retry budget (see [`RetryBudget`]).
const RETRY_BUDGET: u32 = 500;

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
        self.health.set_link(|l| {
            l.nodes = crate::broker::connect::uris(&self.settings.amqp).map_or(0, |u| u.len())
        });
        while !shutdown.is_cancelled() {
            let connections = match Connections::open(&self.settings.amqp).await {
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
                self.health.set_link(|l| l.reconnects = sessions - 1);
            }
            backoff.reset();
            info!(
                consuming_node = connections.consuming_node,
                publishing_node = connections.publishing_node,
                "connected to the broker"
            );
            Connections::report(Some(&connections), &self.health, &self.metrics);
            let end = self.session(&connections, &tracker).await;
            Connections::report(None, &self.health, &self.metrics);
            match end {
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
        match self.topology.declare(&connections.publishing).await {
            Ok(declared) => {
                if let Some(w) = declared.warning() {
                    warn!("{w}");
                }
            }
            Err(e) => {
                error!(error = %e, "could not declare the topology");
                return SessionEnd::Lost(format!("topology: {e}"));
            }
        }
        let (blocked, _following) =
            link::follow_blocking(&connections.publishing, self.health.clone());
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
            let blocked = blocked.clone();
            loops.spawn(async move {
                let lane = Lane {
                    kind,
                    channel,
                    publisher,
                    session,
                    tracker,
                    blocked,
                };
                worker.consume_loop(lane, consumer).await
            });
        }
        let end = tokio::select! {
            () = shutdown.cancelled() => None,
            ended = loops.join_next() => Some(match ended {
                Some(Ok(Err(why))) => why,
                _ => "consumer stopped".to_owned(),
            }),
            why = lost(connections, publisher.channel()) => Some(why),
            () = publisher.given_up() => Some(format!(
                "the broker refused a command's outcome for {} s; replacing the session",
                handle::REFUSED_FOR_NEW_SESSION.as_secs()
            )),
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
            Some(why) => {
                // Tasks still waiting for confirms of this session stop waiting.
                publisher.session_lost();
                SessionEnd::Lost(why)
            }
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
        let consumer = self.start_consumer(&channel, kind).await?;
        Ok((kind, channel, consumer))
    }

    async fn start_consumer(
        &self,
        channel: &Channel,
        kind: CommandKind,
    ) -> Result<lapin::Consumer, lapin::Error> {
        channel
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
            .await
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
        mut lane: Lane,
        mut consumer: lapin::Consumer,
    ) -> Result<(), String> {
        let kind = lane.kind;
        loop {
            // Wait for a delivery first, then for a permit: an idle queue must not
            // hold a permit the other queue's commands need. A delivery waiting for
            // a permit is bounded by the prefetch and requeued if the session ends.
            let next = tokio::select! {
                () = lane.session.cancelled() => break,
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e.to_string()),
                // A broker-initiated basic.cancel (the queue deleted, a replica
                // gone) ends lapin's stream as a normal end would. Consume again on
                // the same channel; if the queue is gone for good the channel
                // fails and the next session declares it again.
                None => {
                    warn!(
                        queue = self.topology.queue(kind),
                        "the broker cancelled the consumer; consuming again"
                    );
                    consumer = self
                        .start_consumer(&lane.channel, kind)
                        .await
                        .map_err(|e| format!("cannot consume again after a broker cancel: {e}"))?;
                    continue;
                }
            };
            // While the broker blocks publishing (a resource alarm), no command
            // starts: its outcome could not be published, and the API calls
            // would be made for nothing. The delivery waits here unstarted.
            let unblocked = tokio::select! {
                () = lane.session.cancelled() => false,
                r = lane.blocked.wait_for(Option::is_none) => r.is_ok(),
            };
            if !unblocked {
                break;
            }
            // Held from receipt (waiting for a permit included) to settlement.
            let held = (kind == CommandKind::LeakAlert).then(|| self.metrics.hold_leak_alert());
            let permit = tokio::select! {
                () = lane.session.cancelled() => break,
                p = Arc::clone(self.pool(kind)).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let worker = Arc::clone(&self);
            let publisher = lane.publisher.clone();
            let task = async move {
                let _held = held;
                worker
                    .handle(delivery, kind, publisher, Slot::held(permit))
                    .await;
            };
            lane.tracker.spawn(task);
        }
        // Stop the broker from sending more; unstarted prefetched deliveries
        // are requeued when the channel closes.
        let tag = consumer.tag();
        let _ = lane
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await;
        Ok(())
    }
}

/// What one consumer loop works with: its queue's kind and channel, the
/// session's publisher and signals, and the tracker of in-flight commands.
struct Lane {
    kind: CommandKind,
    channel: Channel,
    publisher: Publisher,
    session: CancellationToken,
    tracker: TaskTracker,
    /// The broker's reason while it blocks publishing.
    blocked: watch::Receiver<Option<String>>,
}

use crate::command;
