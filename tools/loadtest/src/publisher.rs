//! The publisher: decommission commands `bench-0000000`... for instances
//! `mi-bench000001`..., persistent, `mandatory` and confirmed, pipelined with
//! at most `WINDOW` confirms outstanding, optionally paced. It records each
//! command's publish instant in the tally the collector completes.

use crate::collector::{Shared, unix_micros};
use crate::sim::{REGION, instance_id};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection};
use std::time::{Duration, Instant};

/// Confirms outstanding at most: enough to keep the broker busy, few enough
/// that a refused publish is noticed while the run still means something.
const WINDOW: usize = 1024;

pub fn command_id(i: usize) -> String {
    format!("bench-{i:07}")
}

/// The command number in a `command_id` of ours.
pub fn index_of(command_id: &str) -> Option<usize> {
    command_id.strip_prefix("bench-")?.parse().ok()
}

/// Publishes commands `range` on a channel of its own, paced at `rate` per
/// second if given; an unconfirmed or unroutable command is an error.
pub async fn publish(
    conn: &Connection,
    shared: &Shared,
    range: std::ops::Range<usize>,
    rate: Option<f64>,
) -> Result<(), String> {
    let chan = conn.create_channel().await.map_err(|e| e.to_string())?;
    chan.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    let first = range.start;
    for i in range {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64((i - first) as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let id = command_id(i);
        let body = format!(
            "{{\"command_id\":\"{id}\",\"region_id\":\"{REGION}\",\"instance_id\":\"{}\"}}",
            instance_id(i)
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-bench-published-at-us".into(),
            AMQPValue::LongLongInt(unix_micros()),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.as_str().into())
            .with_headers(headers);
        {
            let mut t = shared.0.lock().expect("tally");
            t.sent[i] = Some(Instant::now());
            t.sent_us[i] = unix_micros();
        }
        let confirm = chan
            .basic_publish(
                "lifecycle.commands".into(),
                "decommission".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body.as_bytes(),
                props,
            )
            .await
            .map_err(|e| e.to_string())?;
        pending.push(confirm);
        while pending.len() >= WINDOW {
            check_confirm(pending.next().await)?;
        }
    }
    while !pending.is_empty() {
        check_confirm(pending.next().await)?;
    }
    let _ = chan.close(200, "published".into()).await;
    Ok(())
}

/// An ack without a returned message is a delivered command.
pub fn check_confirm(c: Option<lapin::Result<Confirmation>>) -> Result<(), String> {
    match c {
        Some(Ok(Confirmation::Ack(None))) | None => Ok(()),
        Some(other) => Err(format!("command publish not confirmed/routed: {other:?}")),
    }
}
