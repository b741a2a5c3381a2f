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

use crate::command::CommandKind;
use crate::settings::{Delays, QueueType, Settings, TopologySettings, lists::format_duration};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};
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

    /// Declares everything; safe to repeat.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let n = &self.names;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
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
        channel
            .queue_declare(
                short(&n.dead_letter_queue),
                durable_queue,
                self.queue_args(),
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
            channel
                .queue_declare(short(queue), durable_queue, args)
                .await?;
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
                // Quorum queues dead-letter at-most-once unless told otherwise;
                // a retry copy lost on expiry would be a lost command.
                args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
                args.insert("x-overflow".into(), long("reject-publish"));
            }
            channel
                .queue_declare(short(&stage.name), durable_queue, args)
                .await?;
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

/// An AMQP short string from a name.
pub fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

/// An AMQP long-string field value.
pub fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}
