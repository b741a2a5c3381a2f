//! `lifecycle-worker send`: publish one command, optionally wait for its
//! terminal event through `reply_to`; with `--from-file`, one command per row
//! of a file ([`crate::cli::bulk`]).

use crate::auth;
use crate::broker::publisher::{Outgoing, Publisher, Routing};
use crate::cli::bulk;
use crate::cli::output::{self, OutputMode};
use crate::command::CommandKind;
use crate::secret::Secret;
use crate::settings::{CommandKeys, Settings};
use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The target options of a single command, which `--from-file` takes from the file.
const SINGLE: &[&str] = &[
    "command_id",
    "instance_id",
    "machine_id",
    "hostname",
    "ip",
    "all_matches",
    "activation_id",
    "detected_at",
    "quarantine",
    "delete_if_unused",
    "account_id",
    "reason",
    "requested_by",
    "wait",
];

/// Arguments of `send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// `decommission` or `leak-alert` (with --from-file: for rows without a `kind`).
    #[arg(required_unless_present = "from_file")]
    pub kind: Option<String>,
    /// Region of the target (with --from-file: for rows without a `region_id`).
    #[arg(long)]
    pub region: Option<String>,
    /// The command id (default: a new UUID).
    #[arg(long)]
    pub command_id: Option<String>,
    /// decommission: the managed instance id (mi-...).
    #[arg(long)]
    pub instance_id: Option<String>,
    /// decommission: the machine id.
    #[arg(long)]
    pub machine_id: Option<String>,
    /// decommission: the hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// decommission: an IP address.
    #[arg(long)]
    pub ip: Option<String>,
    /// decommission: act on every match.
    #[arg(long)]
    pub all_matches: bool,
    /// leak-alert: the activation code id.
    #[arg(long)]
    pub activation_id: Option<String>,
    /// leak-alert: RFC 3339 time of the leak.
    #[arg(long)]
    pub detected_at: Option<String>,
    /// leak-alert: none, suspicious or all.
    #[arg(long)]
    pub quarantine: Option<String>,
    /// leak-alert: delete the code if it never registered an instance.
    #[arg(long)]
    pub delete_if_unused: Option<bool>,
    /// Validate, resolve and report; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Account to act in.
    #[arg(long)]
    pub account_id: Option<String>,
    /// Audit: why.
    #[arg(long)]
    pub reason: Option<String>,
    /// Audit: who.
    #[arg(long)]
    pub requested_by: Option<String>,
    /// Sign with this key id (the secret comes from security.command_keys).
    #[arg(long)]
    pub key_id: Option<String>,
    /// Wait this many seconds for the terminal event and print it.
    #[arg(long)]
    pub wait: Option<u64>,
    /// How to print: human-readable on a terminal and JSON otherwise (auto), or as said.
    #[arg(long, value_enum, default_value = "auto")]
    pub output: OutputMode,
    /// One command per row of FILE (CSV with a header, or JSON lines), see the README.
    #[arg(long, value_name = "FILE", conflicts_with_all = SINGLE)]
    pub from_file: Option<PathBuf>,
    /// --from-file: csv or jsonl (default: from the name, else the content).
    #[arg(long, value_enum, requires = "from_file")]
    pub format: Option<bulk::rows::Format>,
    /// --from-file: commands published per second at most.
    #[arg(long, default_value_t = 50, requires = "from_file", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// --from-file: give up waiting after this many seconds without a terminal event.
    #[arg(long, default_value_t = 600, requires = "from_file")]
    pub timeout: u64,
    /// --from-file: where progress is recorded for a resume (default FILE.journal).
    #[arg(long, value_name = "PATH", requires = "from_file")]
    pub journal: Option<PathBuf>,
    /// --from-file: prefix of the command ids derived from rows without one.
    #[arg(long, default_value = "bulk", requires = "from_file")]
    pub id_prefix: String,
}

/// Headers that sign `body` with the publisher key `key_id` at the current
/// time (none without one): the MAC covers `<timestamp>.<body>`.
pub fn signing_headers(
    keys: &CommandKeys,
    key_id: Option<&str>,
    body: &[u8],
) -> anyhow::Result<FieldTable> {
    let mut headers = FieldTable::default();
    if let Some(key_id) = key_id {
        let key: &Secret =
            auth::key(&keys.0, key_id).context("--key-id names no key in security.command_keys")?;
        let timestamp = auth::unix_now().to_string();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(auth::KEY_ID_HEADER.into(), text(key_id));
        headers.insert(auth::TIMESTAMP_HEADER.into(), text(&timestamp));
        headers.insert(
            auth::SIGNATURE_HEADER.into(),
            text(&auth::sign(key, &timestamp, body)),
        );
    }
    Ok(headers)
}

impl SendArgs {
    fn body(&self, kind: &str, command_id: &str) -> anyhow::Result<Vec<u8>> {
        let mut m = Map::new();
        m.insert("command_id".into(), json!(command_id));
        m.insert(
            "region_id".into(),
            json!(self.region.as_deref().unwrap_or("cn-hangzhou")),
        );
        let opt = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        match kind {
            "decommission" => {
                opt(&mut m, "instance_id", &self.instance_id);
                opt(&mut m, "machine_id", &self.machine_id);
                opt(&mut m, "hostname", &self.hostname);
                opt(&mut m, "ip", &self.ip);
                if self.all_matches {
                    m.insert("all_matches".into(), json!(true));
                }
            }
            "leak-alert" => {
                opt(&mut m, "activation_id", &self.activation_id);
                opt(&mut m, "detected_at", &self.detected_at);
                opt(&mut m, "quarantine", &self.quarantine);
                if let Some(d) = self.delete_if_unused {
                    m.insert("delete_if_unused".into(), json!(d));
                }
            }
            other => bail!("unknown command kind {other:?} (decommission or leak-alert)"),
        }
        if self.dry_run {
            m.insert("dry_run".into(), json!(true));
        }
        opt(&mut m, "account_id", &self.account_id);
        opt(&mut m, "reason", &self.reason);
        opt(&mut m, "requested_by", &self.requested_by);
        Ok(serde_json::to_vec(&Value::Object(m))?)
    }
}

/// How `send` ended, for the exit code.
pub type SendEnd = bulk::RunEnd;

/// Publishes the command (confirmed) and prints its id; with `--wait`, prints
/// the terminal event. With `--from-file`, runs the bulk send.
pub async fn run(settings: &Settings, args: SendArgs) -> anyhow::Result<SendEnd> {
    if let Some(file) = args.from_file.clone() {
        bulk::rows::check_id_prefix(&args.id_prefix).map_err(anyhow::Error::msg)?;
        let kind = match args.kind.as_deref() {
            Some(k) => Some(CommandKind::from_name(k).with_context(|| {
                format!("unknown command kind {k:?} (decommission or leak-alert)")
            })?),
            None => None,
        };
        let opts = bulk::BulkOptions {
            file,
            format: args.format,
            defaults: bulk::rows::Defaults {
                kind,
                region: args.region.clone(),
                dry_run: args.dry_run,
                id_prefix: args.id_prefix.clone(),
            },
            rate: args.rate,
            timeout: Duration::from_secs(args.timeout),
            journal: args.journal.clone(),
            key_id: args.key_id.clone(),
            output: args.output,
        };
        return bulk::run(settings, opts).await;
    }
    let kind = args.kind.clone().unwrap_or_default();
    let command_id = args
        .command_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let body = args.body(&kind, &command_id)?;
    let connection = crate::broker::connect::connect(&settings.amqp, "lifecycle-worker-cli")
        .await
        .context("connecting to the broker")?;
    let publisher = Publisher::open(&connection).await?;
    let headers = signing_headers(
        &settings.security.command_keys,
        args.key_id.as_deref(),
        &body,
    )?;
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(command_id.as_str().into())
        .with_headers(headers);
    let mut replies = None;
    if args.wait.is_some() {
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
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "send-reply".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        props = props.with_reply_to(queue.name().clone());
        replies = Some((channel, consumer));
    }
    publisher
        .publish_all(&[Outgoing {
            exchange: settings.topology.command_exchange.clone(),
            routing_key: kind.clone(),
            body,
            properties: props,
            routing: Routing::Required,
        }])
        .await
        .context("publishing the command")?;
    let human = args.output.human();
    if human {
        println!("sent {kind} {command_id}");
    } else {
        println!("{command_id}");
    }
    if let (Some(secs), Some((_channel, mut consumer))) = (args.wait, replies) {
        match tokio::time::timeout(Duration::from_secs(secs), consumer.next()).await {
            Ok(Some(Ok(delivery))) => match serde_json::from_slice::<Value>(&delivery.data) {
                Ok(event) if human => println!("{}", output::event_block(&event)),
                _ => println!("{}", String::from_utf8_lossy(&delivery.data)),
            },
            Ok(_) => bail!("the reply consumer stopped"),
            Err(_) => bail!("no terminal event within {secs} s"),
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(SendEnd::AllGood)
}
