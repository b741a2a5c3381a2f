//! `lifecycle-worker events tail`: follow the event exchange live.
//!
//! A temporary queue (server-named, exclusive, deleted with the connection)
//! is bound to the event exchange, by event type when `--type` is given (the
//! routing key is the type, so the broker filters), otherwise to everything;
//! `--command-id` and `--kind` filter here. Nothing is taken from anyone: the
//! exchange copies each event to every bound queue.

use crate::cli::output::{self, OutputMode};
use crate::settings::Settings;
use anyhow::Context;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// `events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Print events as they are published, until interrupted.
    Tail(TailArgs),
}

/// Arguments of `events tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only the events of this command.
    #[arg(long)]
    pub command_id: Option<String>,
    /// Only events of commands of this kind (decommission, leak-alert).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events of this type; a topic pattern works too (`activation.*`, `command.#`).
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,
    /// Stop after this many events (default: until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    /// Human-readable on a terminal and JSON lines otherwise (auto), or as said.
    #[arg(long, value_enum, default_value = "auto")]
    pub output: OutputMode,
}

impl TailArgs {
    fn matches(&self, event: &Value) -> bool {
        let field = |k: &str| event.get(k).and_then(Value::as_str);
        self.command_id
            .as_deref()
            .is_none_or(|id| field("command_id") == Some(id))
            && self
                .kind
                .as_deref()
                .is_none_or(|k| field("command_kind") == Some(k))
    }
}

/// Runs an `events` subcommand.
pub async fn run(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let EventsCommand::Tail(args) = command;
    let connection = crate::broker::connect::connect(&settings.amqp, "lifecycle-worker-events")
        .await
        .context("connecting to the broker")?;
    let channel = connection.create_channel().await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let exchange = settings.topology.event_exchange.as_str();
    let key = args.event_type.as_deref().unwrap_or("#");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding to the event exchange {exchange}"))?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "lifecycle-worker-events".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    // On stderr, so a script reading stdout sees events only; a caller can wait
    // for this line to know nothing published from now on is missed.
    eprintln!("following {exchange} (routing key {key}); Ctrl-C to stop");
    let stop = CancellationToken::new();
    crate::cli::run::cancel_on_signals(stop.clone());
    let human = args.output.human();
    let mut printed = 0u64;
    while args.count.is_none_or(|n| printed < n) {
        let delivery = tokio::select! {
            () = stop.cancelled() => break,
            d = consumer.next() => match d {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e).context("following the events"),
                None => anyhow::bail!("the broker cancelled the consumer"),
            },
        };
        let event: Value = serde_json::from_slice(&delivery.data).unwrap_or(Value::Null);
        if !args.matches(&event) {
            continue;
        }
        if human && event.is_object() {
            println!("{}", output::event_block(&event));
        } else {
            println!("{}", String::from_utf8_lossy(&delivery.data));
        }
        printed += 1;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        events: EventsCommand,
    }

    fn tail(args: &[&str]) -> TailArgs {
        let mut argv = vec!["x", "tail"];
        argv.extend_from_slice(args);
        let EventsCommand::Tail(t) = Cli::parse_from(argv).events;
        t
    }

    #[test]
    fn filters_by_command_id_and_kind() {
        let event = json!({"type": "command.completed", "command_id": "c1", "command_kind": "decommission"});
        assert!(tail(&[]).matches(&event));
        assert!(tail(&["--command-id", "c1", "--kind", "decommission"]).matches(&event));
        assert!(!tail(&["--command-id", "c2"]).matches(&event));
        assert!(!tail(&["--kind", "leak-alert"]).matches(&event));
        assert_eq!(
            tail(&["--type", "command.*"]).event_type.as_deref(),
            Some("command.*")
        );
    }
}
