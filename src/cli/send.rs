//! `lifecycle-worker send`: publish one command, optionally wait for its
//! terminal event through `reply_to`.

use crate::auth;
use crate::broker::publisher::{Outgoing, Publisher, Routing};
use crate::secret::Secret;
use crate::settings::Settings;
use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Arguments of `send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// `decommission` or `leak-alert`.
    pub kind: String,
    /// Region of the target.
    #[arg(long, default_value = "cn-hangzhou")]
    pub region: String,
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
}

impl SendArgs {
    fn body(&self, command_id: &str) -> anyhow::Result<Vec<u8>> {
        let mut m = Map::new();
        m.insert("command_id".into(), json!(command_id));
        m.insert("region_id".into(), json!(self.region));
        let opt = |m: &mut Map<String, Value>, k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        match self.kind.as_str() {
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

/// Publishes the command (confirmed) and prints its id; with `--wait`, prints
/// the terminal event.
pub async fn run(settings: &Settings, args: SendArgs) -> anyhow::Result<()> {
    let command_id = args
        .command_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let body = args.body(&command_id)?;
    let connection = crate::broker::connect::connect(&settings.amqp, "lifecycle-worker-cli")
        .await
        .context("connecting to the broker")?;
    let publisher = Publisher::open(&connection).await?;
    let mut headers = FieldTable::default();
    if let Some(key_id) = &args.key_id {
        let key: &Secret = settings
            .security
            .command_keys
            .0
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, k)| k)
            .context("--key-id names no key in security.command_keys")?;
        headers.insert(
            auth::KEY_ID_HEADER.into(),
            AMQPValue::LongString(LongString::from(key_id.as_str())),
        );
        headers.insert(
            auth::SIGNATURE_HEADER.into(),
            AMQPValue::LongString(LongString::from(auth::sign(key, &body))),
        );
    }
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
            routing_key: args.kind.clone(),
            body,
            properties: props,
            routing: Routing::Required,
        }])
        .await
        .context("publishing the command")?;
    println!("{command_id}");
    if let (Some(secs), Some((_channel, mut consumer))) = (args.wait, replies) {
        match tokio::time::timeout(Duration::from_secs(secs), consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                println!("{}", String::from_utf8_lossy(&delivery.data));
            }
            Ok(_) => bail!("the reply consumer stopped"),
            Err(_) => bail!("no terminal event within {secs} s"),
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}
