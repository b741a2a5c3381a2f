//! The broker side of a `send --from-file` run: the reply queue that outlives
//! the process, the confirm channel rows are published on at a bounded rate,
//! and the loop that records confirms and terminal events in the journal.

use super::journal::{self, Entry, Journal};
use super::progress::{Counts, Progress};
use super::report;
use super::rows::Row;
use super::{BulkOptions, State};
use crate::broker::connect::connect;
use crate::settings::Settings;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// `?` inside the run loop: ends the loop with the error, so the progress
/// display is cleared and the connection closed before the summary.
macro_rules! or_break {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => break Err(anyhow::Error::from(e)),
        }
    };
}

/// Unconfirmed publishes at most: enough to keep the pipe full, few enough
/// that a broker refusing them does not leave many rows in doubt.
const WINDOW: usize = 128;

/// How long the reply queue outlives its last use: the time an interrupted
/// run has to be resumed before the events that arrived meanwhile are gone.
const REPLY_QUEUE_TTL: Duration = Duration::from_secs(24 * 3600);

/// The broker side of a run: a confirm channel to publish on and the reply
/// queue's consumer.
pub(super) struct Session {
    connection: Connection,
    publish: Channel,
    replies: lapin::Consumer,
    reply_queue: String,
    keys: crate::settings::CommandKeys,
    key_id: Option<String>,
    exchange: String,
}

impl Session {
    pub(super) async fn open(
        settings: &Settings,
        opts: &BulkOptions,
        states: &mut [State],
        earlier: &journal::State,
        journal: &mut Journal,
    ) -> anyhow::Result<Session> {
        let connection = connect(&settings.amqp, "lifecycle-worker-send").await?;
        let reuse = match &earlier.reply_queue {
            Some(name) => queue_exists(&connection, name).await?.then(|| name.clone()),
            None => None,
        };
        let reply_queue = match reuse {
            Some(name) => name,
            None => {
                // The events of commands published earlier went to a queue that is
                // gone: publish those again, under the same ids.
                let again = states
                    .iter_mut()
                    .filter(|s| **s == State::Published)
                    .map(|s| *s = State::Queued)
                    .count();
                if again > 0 {
                    eprintln!(
                        "the reply queue of the earlier run is gone: publishing its {again} unfinished command(s) again under the same ids (the worker does no API effect twice)"
                    );
                }
                let name = declare_reply_queue(&connection).await?;
                journal.record(&Entry::ReplyQueue { name: name.clone() })?;
                name
            }
        };
        let consume = connection.create_channel().await?;
        consume.basic_qos(256, BasicQosOptions::default()).await?;
        let replies = consume
            .basic_consume(
                reply_queue.as_str().into(),
                "lifecycle-worker-send".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let keys = settings.security.command_keys.clone();
        let key_id = opts.key_id.clone();
        if let Some(k) = &key_id {
            crate::cli::send::signing_headers(&keys, Some(k), b"")?;
        }
        Ok(Session {
            connection,
            publish,
            replies,
            reply_queue,
            keys,
            key_id,
            exchange: settings.topology.command_exchange.clone(),
        })
    }

    /// Publishes what is queued and collects terminal events until every row
    /// has one, the wait times out, or a signal stops it.
    pub(super) async fn drive(
        mut self,
        opts: &BulkOptions,
        rows: &[Row],
        states: &mut [State],
        journal: &mut Journal,
    ) -> anyhow::Result<()> {
        let index: HashMap<&str, usize> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.command_id.as_str(), i))
            .collect();
        let stop = CancellationToken::new();
        crate::cli::run::cancel_on_signals(stop.clone());
        let mut progress = Progress::new(rows.len() as u64);
        let mut ticker =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1))));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(Duration::from_millis(500));
        let mut confirms = FuturesUnordered::new();
        let mut next = 0usize;
        let mut deadline = Instant::now() + opts.timeout;
        let result = loop {
            while next < rows.len() && states[next] != State::Queued {
                next += 1;
            }
            let waiting = states
                .iter()
                .any(|s| matches!(s, State::Queued | State::Unconfirmed | State::Published));
            if !waiting {
                break Ok(());
            }
            let can_publish = next < rows.len() && confirms.len() < WINDOW;
            if can_publish || !confirms.is_empty() {
                deadline = Instant::now() + opts.timeout;
            }
            tokio::select! {
                () = stop.cancelled() => break Err(anyhow::anyhow!("interrupted")),
                () = tokio::time::sleep_until(deadline) => {
                    break Err(anyhow::anyhow!(
                        "no terminal event for {} s",
                        opts.timeout.as_secs()
                    ));
                }
                _ = ticker.tick(), if can_publish => {
                    let row = &rows[next];
                    let confirm = or_break!(self.publish_row(row).await);
                    states[next] = State::Unconfirmed;
                    let i = next;
                    confirms.push(async move { (i, confirm.await) });
                    next += 1;
                }
                Some((i, confirmation)) = confirms.next() => {
                    let row = &rows[i];
                    match or_break!(confirmation) {
                        Confirmation::Ack(None) => {
                            or_break!(journal.record(&Entry::Published { command_id: row.command_id.clone() }));
                            if states[i] == State::Unconfirmed {
                                states[i] = State::Published;
                            }
                        }
                        Confirmation::Ack(Some(_)) => {
                            states[i] = State::Refused(format!(
                                "unroutable: no queue is bound to {} with key {} (has the worker declared its topology?)",
                                self.exchange, row.kind.as_str()
                            ));
                        }
                        Confirmation::Nack(_) | Confirmation::NotRequested => {
                            states[i] = State::Refused("the broker refused it (nack)".into());
                        }
                    }
                }
                delivery = self.replies.next() => {
                    let delivery = match delivery {
                        Some(Ok(d)) => d,
                        Some(Err(e)) => break Err(e.into()),
                        None => break Err(anyhow::anyhow!("the broker cancelled the reply consumer")),
                    };
                    let event: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
                    if let Some((id, end, error)) = report::classify(&event)
                        && let Some(&i) = index.get(id.as_str())
                        && !matches!(states[i], State::Finished(..))
                    {
                        or_break!(journal.record(&Entry::Finished {
                            command_id: id.clone(),
                            result: end.as_str().to_owned(),
                            error: error.clone(),
                        }));
                        if opts.output.human() {
                            if !end.is_good() {
                                progress.println(&format!(
                                    "line {}: {id}: {end}{}",
                                    rows[i].line,
                                    error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
                                ));
                            }
                        } else {
                            println!("{}", json!({
                                "line": rows[i].line, "command_id": id,
                                "result": end.as_str(), "error": error,
                            }));
                        }
                        states[i] = State::Finished(end, error);
                        deadline = Instant::now() + opts.timeout;
                    }
                    // Acked only once journaled: a kill before this leaves the event
                    // in the queue for the next run.
                    or_break!(delivery.ack(BasicAckOptions::default()).await);
                }
                _ = refresh.tick() => progress.update(counts(states)),
            }
        };
        progress.finish(counts(states));
        let unfinished = states
            .iter()
            .any(|s| matches!(s, State::Unconfirmed | State::Published));
        if !unfinished {
            // Nothing more can arrive for this run: the queue is not needed.
            let _ = self
                .publish
                .queue_delete(
                    self.reply_queue.as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
        eprintln!("journal: {}", journal.path().display());
        result
    }

    async fn publish_row(&self, row: &Row) -> anyhow::Result<lapin::PublisherConfirm> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(row.command_id.as_str().into())
            .with_reply_to(self.reply_queue.as_str().into())
            .with_timestamp(
                u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0),
            )
            .with_headers(crate::cli::send::signing_headers(
                &self.keys,
                self.key_id.as_deref(),
                &row.body,
            )?);
        Ok(self
            .publish
            .basic_publish(
                self.exchange.as_str().into(),
                row.kind.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &row.body,
                props,
            )
            .await?)
    }
}

fn counts(states: &[State]) -> Counts {
    let mut c = Counts {
        total: states.len() as u64,
        ..Counts::default()
    };
    for s in states {
        match s {
            State::Published => c.published += 1,
            State::Finished(end, _) => {
                c.published += 1;
                c.finished += 1;
                if !end.is_good() {
                    c.bad += 1;
                }
            }
            _ => {}
        }
    }
    c
}

/// True when `name` exists (a passive declare, on a channel of its own: a
/// missing queue closes the channel it was asked on).
async fn queue_exists(connection: &Connection, name: &str) -> anyhow::Result<bool> {
    let channel = connection.create_channel().await?;
    let found = channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .is_ok();
    let _ = channel.close(200, "probe".into()).await;
    Ok(found)
}

/// A durable server-named (`amq.gen-…`, within a publisher's permissions) queue
/// that outlives this process and expires a day after its last use.
async fn declare_reply_queue(connection: &Connection) -> anyhow::Result<String> {
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(i64::try_from(REPLY_QUEUE_TTL.as_millis()).unwrap_or(i64::MAX)),
    );
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    let name = queue.name().to_string();
    let _ = channel.close(200, "declared".into()).await;
    Ok(name)
}
