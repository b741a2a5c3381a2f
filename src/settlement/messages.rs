//! Building the messages a settlement publishes: events, replies, retry
//! copies and dead letters, with the headers the contract names.

use super::Delivered;
use crate::auth::seal::{self, Sealer};
use crate::broker::publisher::{Outgoing, Routing};
use crate::broker::topology::RetryStage;
use crate::decision::Counters;
use crate::event::Event;
use crate::playbook::Attempts;
use crate::trace_context::TraceContext;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Header: how many delayed redeliveries after transient failures this command
/// has had (it picks the retry stage; past the last, a transient failure is final).
pub const REDELIVERIES: &str = "x-lifecycle-redeliveries";
/// Header: how many times the command was parked for credentials. Counted apart,
/// so time spent waiting for an operator does not use up the transient retries.
pub const PARKS: &str = "x-lifecycle-parks";
/// Header: API attempts per step so far (JSON object), so `attempts` stays true.
pub const ATTEMPTS: &str = "x-lifecycle-attempts";
/// Dead-letter headers (CONTRACT section 5).
pub const DL_REASON: &str = "x-lifecycle-dead-letter-reason";
/// The error code that sent the command to the dead-letter queue.
pub const DL_CODE: &str = "x-lifecycle-error-code";
/// The error message that sent the command to the dead-letter queue.
pub const DL_MESSAGE: &str = "x-lifecycle-error-message";
/// The command queue the dead letter came from (where replay sends it).
pub const DL_SOURCE: &str = "x-lifecycle-source-queue";

/// Headers the worker adds for its own bookkeeping or the broker adds on
/// dead-lettering; a dead letter drops them so a replay starts afresh, and a
/// seal is never carried over: each copy gets its own.
const BOOKKEEPING: &[&str] = &[
    REDELIVERIES,
    PARKS,
    ATTEMPTS,
    seal::SEAL_HEADER,
    seal::DEAD_LETTER_SEAL_HEADER,
    DL_REASON,
    DL_CODE,
    DL_MESSAGE,
    DL_SOURCE,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

/// A string header value, if present and textual.
pub fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// A non-negative integer header value.
pub fn header_u32(props: &BasicProperties, name: &str) -> Option<u32> {
    let v = props.headers().as_ref()?.inner().get(name)?;
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// The attempts header of an earlier processing (malformed: start from zero,
/// since it only feeds the reported counts).
pub fn prior_attempts(props: &BasicProperties) -> Attempts {
    header_str(props, ATTEMPTS)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn with_trace(mut headers: FieldTable, trace: &TraceContext) -> FieldTable {
    headers.insert("traceparent".into(), long(&trace.traceparent()));
    if let Some(state) = &trace.tracestate {
        headers.insert("tracestate".into(), long(state));
    }
    headers
}

/// An event to the event exchange, routing key = type.
pub fn event(exchange: &str, event: &Event, trace: &TraceContext) -> Outgoing {
    let mut headers = FieldTable::default();
    if let Some(id) = &event.command_id {
        headers.insert("x-lifecycle-command-id".into(), long(id));
    }
    Outgoing {
        exchange: exchange.to_owned(),
        routing_key: event.kind.as_str().to_owned(),
        body: event.to_json(),
        properties: event_properties(event, with_trace(headers, trace)),
        routing: Routing::Reported,
    }
}

fn event_properties(event: &Event, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_message_id(event.event_id.to_string().into())
        .with_type(event.kind.as_str().into())
        .with_app_id("lifecycle-worker".into())
        .with_timestamp(
            u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0),
        )
        .with_headers(headers)
}

/// The terminal event sent to the command's `reply_to`, if it has one.
/// `correlation_id`: the command's own, else its `message_id`, else its `command_id`.
pub fn reply(command: &BasicProperties, event: &Event, trace: &TraceContext) -> Option<Outgoing> {
    let reply_to = command.reply_to().as_ref()?;
    if reply_to.as_str().is_empty() {
        return None;
    }
    let correlation: Option<ShortString> = command
        .correlation_id()
        .clone()
        .or_else(|| command.message_id().clone())
        .or_else(|| {
            event
                .command_id
                .as_deref()
                .and_then(|c| ShortString::try_new(c).ok())
        });
    let mut properties = event_properties(event, with_trace(FieldTable::default(), trace));
    if let Some(c) = correlation {
        properties = properties.with_correlation_id(c);
    }
    Some(Outgoing {
        exchange: String::new(),
        routing_key: reply_to.as_str().to_owned(),
        body: event.to_json(),
        properties,
        routing: Routing::BestEffort,
    })
}

/// The command's original headers minus bookkeeping, plus trace context.
fn carried_headers(props: &BasicProperties, trace: &TraceContext) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(original) = props.headers() {
        for (k, v) in original.inner() {
            if !BOOKKEEPING.contains(&k.as_str())
                && k.as_str() != "traceparent"
                && k.as_str() != "tracestate"
            {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    with_trace(headers, trace)
}

/// The retry counters a delivery carries (absent or malformed: zero).
pub fn counters(props: &BasicProperties) -> Counters {
    Counters {
        redeliveries: header_u32(props, REDELIVERIES).unwrap_or(0),
        parks: header_u32(props, PARKS).unwrap_or(0),
    }
}

/// A retry copy: the body byte for byte, the properties kept, the redelivery
/// count and attempts updated, and for a signed command the worker's seal
/// (so it is not judged by its age when it comes back); routed back to the
/// source queue when the stage's TTL expires.
pub fn retry_copy(
    stage: &RetryStage,
    delivered: Delivered<'_>,
    counts: Counters,
    attempts: &Attempts,
    trace: &TraceContext,
) -> Outgoing {
    let mut headers = carried_headers(delivered.props, trace);
    headers.insert(
        REDELIVERIES.into(),
        AMQPValue::LongLongInt(counts.redeliveries.into()),
    );
    headers.insert(PARKS.into(), AMQPValue::LongLongInt(counts.parks.into()));
    let attempts = serde_json::to_string(attempts).unwrap_or_else(|_| "{}".into());
    headers.insert(ATTEMPTS.into(), long(&attempts));
    if let Some(sealer) = delivered.sealer {
        let seal = sealer.retry(delivered.body, counts, &attempts, stage.delay);
        headers.insert(seal::SEAL_HEADER.into(), long(&seal));
    }
    Outgoing {
        exchange: stage.name.clone(),
        routing_key: delivered.source_queue.to_owned(),
        body: delivered.body.to_vec(),
        properties: delivered
            .props
            .clone()
            .with_delivery_mode(2)
            .with_headers(headers),
        routing: Routing::Required,
    }
}

/// Why a command was dead-lettered.
pub struct DeadLetterInfo<'a> {
    /// `rejected`, `failed` or `partially_failed`.
    pub reason: &'a str,
    /// The error code.
    pub code: &'a str,
    /// The error message (truncated to keep headers small).
    pub message: &'a str,
    /// The command queue it came from.
    pub source_queue: &'a str,
}

/// A dead letter: body byte for byte, original headers and properties, plus
/// the `x-lifecycle-*` explanation, and with `sealer` (a command that was
/// authentic and in time) the worker's word for it, which `dead-letters
/// replay --re-sign-within` asks for.
pub fn dead_letter(
    exchange: &str,
    body: &[u8],
    props: &BasicProperties,
    info: &DeadLetterInfo<'_>,
    sealer: Option<&Sealer>,
    trace: &TraceContext,
) -> Outgoing {
    let mut headers = carried_headers(props, trace);
    if let Some(sealer) = sealer {
        headers.insert(
            seal::DEAD_LETTER_SEAL_HEADER.into(),
            long(&sealer.dead_letter(body)),
        );
    }
    headers.insert(DL_REASON.into(), long(info.reason));
    headers.insert(DL_CODE.into(), long(info.code));
    let message: String = info.message.chars().take(500).collect();
    headers.insert(DL_MESSAGE.into(), long(&message));
    headers.insert(DL_SOURCE.into(), long(info.source_queue));
    Outgoing {
        exchange: exchange.to_owned(),
        routing_key: info.source_queue.to_owned(),
        body: body.to_vec(),
        properties: props.clone().with_delivery_mode(2).with_headers(headers),
        routing: Routing::Required,
    }
}

/// For replay: the dead letter's headers without the dead-letter explanation.
pub fn strip_bookkeeping(props: &BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(original) = props.headers() {
        for (k, v) in original.inner() {
            if !BOOKKEEPING.contains(&k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    props.clone().with_headers(headers)
}
