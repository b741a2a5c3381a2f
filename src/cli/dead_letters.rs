//! `lifecycle-worker dead-letters list|replay`: inspect the dead-letter queue
//! and send commands back once their cause is fixed.
//!
//! Listing takes each message and nacks it back with requeue, so nothing is
//! lost (RabbitMQ may then reorder them). Replay publishes a confirmed copy to
//! the source queue, without the dead-letter headers, before acknowledging
//! the dead letter: a crash in between duplicates, never loses.
//!
//! A signed command's dead letter older than `security.max_command_age_s` is
//! left in the queue, with why, unless `--re-sign-within` says how old a
//! command the operator is willing to sign again ([`crate::auth::replay`]).
//!
//! Both look only at the dead letters that were there when they started
//! (the queue's depth then): a replayed command that fails again while a
//! worker runs comes back to the dead-letter queue behind them and is not
//! replayed again in the same run. `--limit` bounds what is listed, or what is
//! replayed.

use crate::auth::replay::{self, Replay};
use crate::broker::publisher::{Outgoing, Publisher, Routing};
use crate::settings::Settings;
use crate::settlement::messages;
use anyhow::Context;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;
use std::time::Duration;

/// `dead-letters` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLetterCommand {
    /// Print the dead letters as JSON lines.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back to their command queues.
    Replay {
        /// Only the dead letter(s) of this command id (default: all).
        #[arg(long)]
        id: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Sign again, now, the stale dead letters of signed commands signed at
        /// most this long ago (e.g. 6h), under their own key, if a worker
        /// vouched for them; without it they stay in the queue.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        re_sign_within: Option<Duration>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::settings::lists::parse_duration(s)
}

fn command_id_of(body: &[u8], props: &lapin::BasicProperties) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("command_id")
                .and_then(|c| c.as_str())
                .map(str::to_owned)
        })
        .or_else(|| props.message_id().as_ref().map(|m| m.to_string()))
}

/// Runs a `dead-letters` subcommand.
pub async fn run(settings: &Settings, command: DeadLetterCommand) -> anyhow::Result<()> {
    let connection = crate::broker::connect::connect(&settings.amqp, "lifecycle-worker-cli")
        .await
        .context("connecting to the broker")?;
    let channel = connection.create_channel().await?;
    let publisher = Publisher::open(&connection).await?;
    let queue = settings.topology.dead_letter_queue.as_str();
    let (limit, only, re_sign_within) = match &command {
        DeadLetterCommand::List { limit } => (*limit, None, None),
        DeadLetterCommand::Replay {
            id,
            limit,
            re_sign_within,
        } => (*limit, id.clone(), *re_sign_within),
    };
    let policy = replay::Policy {
        keys: &settings.security.command_keys.0,
        max_age_s: settings.security.max_command_age_s,
        re_sign_within,
    };
    let replay = matches!(command, DeadLetterCommand::Replay { .. });
    // The depth now: later arrivals (a replay failing again) are not this run's.
    let depth = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("the dead-letter queue {queue}"))?
        .message_count();
    let mut seen = Vec::new();
    let mut replayed = 0usize;
    let mut taken = 0u32;
    while taken < depth && (if replay { replayed } else { seen.len() }) < limit {
        taken += 1;
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let props = &delivery.properties;
        let id = command_id_of(&delivery.data, props);
        let matches = only.is_none() || id == only;
        if !replay || !matches {
            if !replay {
                println!(
                    "{}",
                    json!({
                        "command_id": id,
                        "reason": messages::header_str(props, messages::DL_REASON),
                        "error_code": messages::header_str(props, messages::DL_CODE),
                        "error_message": messages::header_str(props, messages::DL_MESSAGE),
                        "source_queue": messages::header_str(props, messages::DL_SOURCE),
                        "body": String::from_utf8_lossy(&delivery.data),
                    })
                );
            }
            seen.push(delivery);
            continue;
        }
        let Some(source) = messages::header_str(props, messages::DL_SOURCE).map(str::to_owned)
        else {
            eprintln!("skipping a dead letter without {}", messages::DL_SOURCE);
            seen.push(delivery);
            continue;
        };
        let label = id.as_deref().unwrap_or("(no id)");
        let verdict = replay::judge(&policy, props, &delivery.data, crate::auth::unix_now());
        if let Replay::Left(why) = &verdict {
            eprintln!("left {label} in the dead-letter queue: {why}");
            seen.push(delivery);
            continue;
        }
        publisher
            .publish_all(&[Outgoing {
                exchange: String::new(),
                routing_key: source.clone(),
                body: delivery.data.clone(),
                properties: verdict.properties(messages::strip_bookkeeping(props)),
                routing: Routing::Required,
            }])
            .await
            .with_context(|| format!("replaying to {source}"))?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        let how = if verdict == Replay::AsIs {
            ""
        } else {
            " (signed again now)"
        };
        println!("replayed {label} to {source}{how}");
    }
    // Everything looked at but not replayed goes back.
    for delivery in seen {
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await?;
    }
    if replay {
        eprintln!("{replayed} dead letter(s) replayed");
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
