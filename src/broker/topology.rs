//! The broker topology (CONTRACT section 2), declared idempotently at start and
//! after every reconnect.
//!
//! Delayed retries: for each delay there is a fanout exchange and a queue, both
//! named `<prefix>.<delay>` (e.g. `lifecycle.retry.30s`). The queue has a
//! per-queue TTL and dead-letters to the default exchange *without* a routing
//! key override, so an expired copy goes back under its own routing key. The
//! worker publishes a retry copy to the delay's exchange with the routing key
//! set to the command queue it came from, which is therefore where it returns.
//! One queue per delay serves every command queue, and per-queue TTL keeps
//! expiry in FIFO order.
//!
//! Quorum command queues say what RabbitMQ 4 would otherwise decide for them:
//! `x-delivery-limit` 20 (4.x's default, so 3.x behaves the same: a command
//! that kills every worker that takes it ends in the dead-letter queue instead
//! of looping forever) with `x-dead-letter-strategy: at-least-once` and
//! `x-overflow: reject-publish`, without which quorum queues dead-letter
//! at-most-once and such a command could be lost. A queue that already
//! exists with other arguments (declared by an older version, or by hand)
//! cannot be changed by a declaration: it is used as it is, and the worker
//! and `check` say so.

use crate::command::CommandKind;
use crate::settings::{Delays, QueueType, Settings, TopologySettings, lists::format_duration};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use std::time::Duration;

/// Names and kinds of everything the worker declares.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Configured names.
    pub names: TopologySettings,
    /// Quorum or classic for the command, retry and dead-letter queues.
    pub queue_type: QueueType,
    /// Retry delays, in order (at least one).
    pub delays: Delays,
}

/// Deliveries of one command before a quorum queue dead-letters it.
pub const DELIVERY_LIMIT: i64 = 20;

/// What a declaration found that an operator should hear about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Queues that exist with other arguments than the worker's; used as they are.
    pub kept_as_they_are: Vec<String>,
}

impl Declared {
    /// A sentence for logs and `check`, if there is anything to say.
    pub fn warning(&self) -> Option<String> {
        (!self.kept_as_they_are.is_empty()).then(|| {
            format!(
                "queue(s) {} already exist with other arguments than the worker declares \
                 (x-delivery-limit {DELIVERY_LIMIT}, at-least-once dead-lettering): used as they are; \
                 see docs/operations.md to recreate them",
                self.kept_as_they_are.join(", ")
            )
        })
    }
}

/// Whether a declaration failed because the queue exists with other arguments.
fn precondition_failed(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(amqp)
        if amqp.get_id() == 406)
}

/// A delayed-retry stage: where to publish and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryStage {
    /// Exchange and queue name.
    pub name: String,
    /// The queue's message TTL.
    pub delay: Duration,
}

impl Topology {
    /// From settings.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            names: settings.topology.clone(),
            queue_type: settings.amqp.queue_type,
            delays: settings.retry.redelivery_delays.clone(),
        }
    }

    /// The command queue of a kind.
    pub fn queue(&self, kind: CommandKind) -> &str {
        match kind {
            CommandKind::Decommission => &self.names.decommission_queue,
            CommandKind::LeakAlert => &self.names.leak_alert_queue,
        }
    }

    /// The kind a command queue carries, if it is one of ours.
    pub fn kind_of_queue(&self, queue: &str) -> Option<CommandKind> {
        [CommandKind::Decommission, CommandKind::LeakAlert]
            .into_iter()
            .find(|k| self.queue(*k) == queue)
    }

    /// The retry stages, in order.
    pub fn stages(&self) -> Vec<RetryStage> {
        self.delays
            .as_slice()
            .iter()
            .map(|d| self.stage_of(*d))
            .collect()
    }

    /// Retry stage `index` (0-based; past the last, the last: there always is one).
    pub fn stage(&self, index: usize) -> RetryStage {
        self.stage_of(self.delays.get_clamped(index))
    }

    fn stage_of(&self, delay: Duration) -> RetryStage {
        RetryStage {
            name: format!(
                "{}.{}",
                self.names.retry_queue_prefix,
                format_duration(delay)
            ),
            delay,
        }
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let kind = match self.queue_type {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        };
        args.insert("x-queue-type".into(), long(kind));
        args
    }

    /// Declares a queue; one that exists with other arguments is used as it
    /// is (the refusal closes the channel, so a fresh one replaces it).
    async fn declare_queue(
        connection: &Connection,
        channel: &mut Channel,
        name: &str,
        args: FieldTable,
        declared: &mut Declared,
    ) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        match channel.queue_declare(short(name), durable, args).await {
            Ok(_) => Ok(()),
            Err(e) if precondition_failed(&e) => {
                *channel = connection.create_channel().await?;
                let exists = QueueDeclareOptions {
                    passive: true,
                    ..durable
                };
                channel
                    .queue_declare(short(name), exists, FieldTable::default())
                    .await?;
                declared.kept_as_they_are.push(name.to_owned());
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Declares everything on a channel of its own; safe to repeat.
    pub async fn declare(&self, connection: &Connection) -> Result<Declared, lapin::Error> {
        let mut channel = connection.create_channel().await?;
        let mut declared = Declared::default();
        self.declare_on(connection, &mut channel, &mut declared)
            .await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(declared)
    }

    async fn declare_on(
        &self,
        connection: &Connection,
        channel: &mut Channel,
        declared: &mut Declared,
    ) -> Result<(), lapin::Error> {
        let n = &self.names;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [
            &n.command_exchange,
            &n.event_exchange,
            &n.dead_letter_exchange,
        ] {
            channel
                .exchange_declare(
                    short(exchange),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        Self::declare_queue(
            connection,
            channel,
            &n.dead_letter_queue,
            self.queue_args(),
            declared,
        )
        .await?;
        channel
            .queue_bind(
                short(&n.dead_letter_queue),
                short(&n.dead_letter_exchange),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for kind in [CommandKind::Decommission, CommandKind::LeakAlert] {
            let queue = self.queue(kind);
            let mut args = self.queue_args();
            // A safety net for messages the broker itself rejects; the worker
            // dead-letters with its own headers and never nacks without requeue.
            args.insert(
                "x-dead-letter-exchange".into(),
                long(&n.dead_letter_exchange),
            );
            if self.queue_type == QueueType::Quorum {
                args.insert(
                    "x-delivery-limit".into(),
                    AMQPValue::LongLongInt(DELIVERY_LIMIT),
                );
                at_least_once(&mut args);
            }
            Self::declare_queue(connection, channel, queue, args, declared).await?;
            channel
                .queue_bind(
                    short(queue),
                    short(&n.command_exchange),
                    short(kind.as_str()),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        for stage in self.stages() {
            channel
                .exchange_declare(
                    short(&stage.name),
                    ExchangeKind::Fanout,
                    durable,
                    FieldTable::default(),
                )
                .await?;
            let mut args = self.queue_args();
            let ttl = i64::try_from(stage.delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            args.insert("x-dead-letter-exchange".into(), long(""));
            if self.queue_type == QueueType::Quorum {
                // A retry copy lost on expiry would be a lost command.
                at_least_once(&mut args);
            }
            Self::declare_queue(connection, channel, &stage.name, args, declared).await?;
            channel
                .queue_bind(
                    short(&stage.name),
                    short(&stage.name),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Quorum queues dead-letter at-most-once unless told otherwise (and only
/// with `reject-publish` overflow, which at-least-once requires).
fn at_least_once(args: &mut FieldTable) {
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
}

/// An AMQP short string from a name.
pub fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

/// An AMQP long-string field value.
pub fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}
