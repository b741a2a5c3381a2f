//! The settlement table, without a broker: what each kind of processing
//! publishes, where, with which headers, and how the delivery ends.

use super::*;
use crate::auth::seal::{DEAD_LETTER_SEAL_HEADER, Hold, SEAL_HEADER};
use crate::command::{FieldError, RejectReason};
use crate::decision::Stop;
use crate::domain::error::ApiError;
use crate::event::{EventError, EventType};
use crate::playbook::fake::command;
use crate::settings::Settings;
use crate::settlement::messages::{DL_REASON, PARKS, REDELIVERIES, header_str, header_u32};
use lapin::types::{AMQPValue, FieldTable, ShortString};

fn topology() -> Topology {
    let no_env: [(String, String); 0] = [];
    let settings = Settings::load(&[], no_env).expect("defaults load");
    Topology::from_settings(&settings)
}

fn props(reply_to: bool) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-custom".into(), AMQPValue::LongString("kept".into()));
    let p = BasicProperties::default().with_headers(headers);
    if reply_to {
        p.with_reply_to(ShortString::from("amq.gen-reply"))
    } else {
        p
    }
}

fn decommission() -> Command {
    command(
        CommandKind::Decommission,
        r#"{"command_id":"c-1","region_id":"cn-hangzhou","instance_id":"mi-1"}"#,
    )
}

fn report(command: &Command, fate: Fate) -> Report {
    let step = Event::for_command(command, EventType::InstanceDeregistered, Outcome::Succeeded);
    Report {
        events: vec![step],
        steps: Vec::new(),
        attempts: [("deregister:mi-1".to_owned(), 3)].into_iter().collect(),
        fate,
        first_error: Some(EventError::own("ActivationId.InUse", "in use")),
        guards: Vec::new(),
    }
}

fn stopped(stop: Stop) -> Fate {
    Fate::Stopped(Stopped {
        stop,
        action: "DeregisterManagedInstance",
        error: Some(ApiError::Api {
            http_status: 500,
            code: "InternalError".into(),
            message: "m".into(),
            request_id: None,
            retry_after: None,
        }),
    })
}

/// (exchange, routing key) of each message, in order.
fn routes(plan: &Plan) -> Vec<(String, String)> {
    plan.messages
        .iter()
        .map(|m| (m.exchange.clone(), m.routing_key.clone()))
        .collect()
}

fn route(exchange: &str, key: &str) -> (String, String) {
    (exchange.to_owned(), key.to_owned())
}

const Q: &str = "lifecycle.decommission";

fn ran(fate: Fate, counters: Counters, reply_to: bool) -> Plan {
    ran_sealed(fate, counters, reply_to, None)
}

fn ran_sealed(fate: Fate, counters: Counters, reply_to: bool, sealer: Option<&Sealer>) -> Plan {
    let command = decommission();
    let report = report(&command, fate);
    let props = props(reply_to);
    let processed = Processed::Ran {
        command: &command,
        report: &report,
        counters,
    };
    let delivered = Delivered {
        body: b"{\"command_id\":\"c-1\"}",
        props: &props,
        source_queue: Q,
        sealer,
    };
    plan(
        &processed,
        delivered,
        &topology(),
        &TraceContext::continue_or_start(None, None),
    )
}

/// (name, the plan, expected (exchange, routing key) of each message, ending, summary).
type Row = (&'static str, Plan, Vec<(String, String)>, Ending, Summary);

#[test]
fn the_settlement_table() {
    let none = Counters::default();
    let ev = "lifecycle.events";
    let dl = "lifecycle.dead-letter";
    let rows: Vec<Row> = vec![
        (
            "completed, succeeded",
            ran(Fate::Completed(Outcome::Succeeded), none, false),
            vec![
                route(ev, "instance.deregistered"),
                route(ev, "command.completed"),
            ],
            Ending::Ack,
            Summary::Completed(Outcome::Succeeded),
        ),
        (
            "completed, dry run, with reply_to",
            ran(Fate::Completed(Outcome::DryRun), none, true),
            vec![
                route(ev, "instance.deregistered"),
                route(ev, "command.completed"),
                route("", "amq.gen-reply"),
            ],
            Ending::Ack,
            Summary::Completed(Outcome::DryRun),
        ),
        (
            "completed, failed",
            ran(Fate::Completed(Outcome::Failed), none, false),
            vec![
                route(ev, "instance.deregistered"),
                route(dl, Q),
                route(ev, "command.completed"),
            ],
            Ending::Ack,
            Summary::Completed(Outcome::Failed),
        ),
        (
            "completed, partially failed, with reply_to",
            ran(Fate::Completed(Outcome::PartiallyFailed), none, true),
            vec![
                route(ev, "instance.deregistered"),
                route(dl, Q),
                route(ev, "command.completed"),
                route("", "amq.gen-reply"),
            ],
            Ending::Ack,
            Summary::Completed(Outcome::PartiallyFailed),
        ),
        (
            "stopped: redeliver to the middle stage",
            ran(
                stopped(Stop::Redeliver { stage: 1 }),
                Counters {
                    redeliveries: 1,
                    parks: 0,
                },
                true,
            ),
            vec![
                route(ev, "instance.deregistered"),
                route("lifecycle.retry.5m", Q),
            ],
            Ending::Ack,
            Summary::Redelivered {
                reason: "transient",
                stage: 1,
            },
        ),
        (
            "stopped: park on the last stage",
            ran(
                stopped(Stop::Park { stage: 2 }),
                Counters {
                    redeliveries: 0,
                    parks: 5,
                },
                false,
            ),
            vec![
                route(ev, "instance.deregistered"),
                route("lifecycle.retry.30m", Q),
            ],
            Ending::Ack,
            Summary::Redelivered {
                reason: "credentials",
                stage: 2,
            },
        ),
        (
            "stopped: requeue on shutdown",
            ran(
                stopped(Stop::Requeue),
                Counters {
                    redeliveries: 2,
                    parks: 0,
                },
                true,
            ),
            vec![],
            Ending::Requeue,
            Summary::Requeued,
        ),
    ];
    for (name, plan, want_routes, ending, summary) in rows {
        assert_eq!(routes(&plan), want_routes, "{name}");
        assert_eq!(plan.ending, ending, "{name}");
        assert_eq!(plan.summary, summary, "{name}");
    }
}

#[test]
fn retry_copies_count_the_stage_and_keep_the_command_as_it_was() {
    let plan = ran(
        stopped(Stop::Redeliver { stage: 1 }),
        Counters {
            redeliveries: 1,
            parks: 4,
        },
        false,
    );
    let copy = plan.messages.last().expect("a retry copy");
    assert_eq!(copy.body, b"{\"command_id\":\"c-1\"}");
    assert_eq!(header_u32(&copy.properties, REDELIVERIES), Some(2));
    assert_eq!(header_u32(&copy.properties, PARKS), Some(4));
    assert_eq!(header_str(&copy.properties, "x-custom"), Some("kept"));
    assert_eq!(copy.routing, crate::broker::publisher::Routing::Required);
    assert!(
        header_str(&copy.properties, messages::ATTEMPTS)
            .is_some_and(|a| a.contains("\"deregister:mi-1\":3"))
    );
    let parked = ran(
        stopped(Stop::Park { stage: 0 }),
        Counters {
            redeliveries: 1,
            parks: 4,
        },
        false,
    );
    let copy = parked.messages.last().expect("a retry copy");
    assert_eq!(
        header_u32(&copy.properties, REDELIVERIES),
        Some(1),
        "parks never use up transient stages"
    );
    assert_eq!(header_u32(&copy.properties, PARKS), Some(5));
}

#[test]
fn a_failure_dead_letters_the_body_with_its_cause() {
    let plan = ran(Fate::Completed(Outcome::Failed), Counters::default(), false);
    let dead = &plan.messages[1];
    assert_eq!(dead.body, b"{\"command_id\":\"c-1\"}");
    assert_eq!(header_str(&dead.properties, DL_REASON), Some("failed"));
    assert_eq!(
        header_str(&dead.properties, messages::DL_CODE),
        Some("ActivationId.InUse")
    );
    assert_eq!(header_str(&dead.properties, messages::DL_SOURCE), Some(Q));
    assert_eq!(header_str(&dead.properties, "x-custom"), Some("kept"));
}

#[test]
fn a_rejection_is_dead_lettered_then_announced() {
    let rejection = Rejection::new(
        RejectReason::InvalidFields,
        FieldError::new("region_id", "not allowed"),
    );
    let props = props(true);
    let processed = Processed::Rejected {
        kind: CommandKind::Decommission,
        rejection: &rejection,
    };
    let delivered = Delivered {
        body: b"{}",
        props: &props,
        source_queue: Q,
        sealer: None,
    };
    let plan = plan(
        &processed,
        delivered,
        &topology(),
        &TraceContext::continue_or_start(None, None),
    );
    assert_eq!(
        routes(&plan),
        vec![
            route("lifecycle.dead-letter", Q),
            route("lifecycle.events", "command.rejected"),
            route("", "amq.gen-reply"),
        ]
    );
    assert_eq!(plan.ending, Ending::Ack);
    assert_eq!(plan.summary, Summary::Rejected("invalid_fields"));
    assert_eq!(
        header_str(&plan.messages[0].properties, DL_REASON),
        Some("rejected")
    );
}

/// A signed command's sealer, as `auth::verify` makes it.
fn sealer() -> Sealer {
    use crate::auth::{KEY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    use crate::secret::Secret;
    let body = b"{\"command_id\":\"c-1\"}";
    let key = Secret::new("k-secret");
    let mut h = FieldTable::default();
    h.insert(KEY_ID_HEADER.into(), AMQPValue::LongString("k".into()));
    h.insert(
        TIMESTAMP_HEADER.into(),
        AMQPValue::LongString("1700000000".into()),
    );
    let sig = crate::auth::sign(&key, "1700000000", body);
    h.insert(
        SIGNATURE_HEADER.into(),
        AMQPValue::LongString(sig.as_str().into()),
    );
    let props = BasicProperties::default().with_headers(h);
    let keys = [("k".to_owned(), key)];
    crate::auth::authentic(&keys, &props, body, 300)
        .expect("authentic")
        .0
        .sealer
}

#[test]
fn a_signed_commands_retry_copy_is_sealed_over_what_it_carries() {
    let s = sealer();
    let counters = Counters {
        redeliveries: 1,
        parks: 4,
    };
    let plan = ran_sealed(
        stopped(Stop::Redeliver { stage: 1 }),
        counters,
        false,
        Some(&s),
    );
    let copy = plan.messages.last().expect("a retry copy");
    let seal = header_str(&copy.properties, SEAL_HEADER);
    assert!(seal.is_some_and(|s| s.starts_with("v1:")), "{seal:?}");
    // Read back from the copy's own headers, as the worker reads it: held
    // until the stage's delay (5 min) plus the age limit have passed.
    let judge = |now| {
        s.hold(
            seal,
            &copy.body,
            messages::counters(&copy.properties),
            header_str(&copy.properties, messages::ATTEMPTS).unwrap_or_default(),
            now,
        )
    };
    let now = crate::auth::unix_now();
    assert_eq!(judge(now), Hold::Held);
    assert_eq!(judge(now + 300 + 300 - 2), Hold::Held);
    assert_eq!(judge(now + 300 + 300 + 2), Hold::Expired);
    // Without a sealer (signatures not required) there is no seal.
    let plain = ran(stopped(Stop::Redeliver { stage: 1 }), counters, false);
    let copy = plain.messages.last().expect("a retry copy");
    assert_eq!(header_str(&copy.properties, SEAL_HEADER), None);
}

#[test]
fn seals_are_never_carried_over_and_dead_letters_get_their_own() {
    let s = sealer();
    let mut props = props(false);
    let mut h = props.headers().clone().unwrap_or_default();
    h.insert(SEAL_HEADER.into(), AMQPValue::LongString("v1:1:00".into()));
    h.insert(
        DEAD_LETTER_SEAL_HEADER.into(),
        AMQPValue::LongString("v1:00".into()),
    );
    props = props.with_headers(h);
    let delivered = Delivered {
        body: b"{\"command_id\":\"c-1\"}",
        props: &props,
        source_queue: Q,
        sealer: None,
    };
    let command = decommission();
    let report = report(&command, Fate::Completed(Outcome::Failed));
    let processed = Processed::Ran {
        command: &command,
        report: &report,
        counters: Counters::default(),
    };
    let trace = TraceContext::continue_or_start(None, None);
    let unsealed = plan(&processed, delivered, &topology(), &trace);
    let dead = &unsealed.messages[1];
    assert_eq!(header_str(&dead.properties, DL_REASON), Some("failed"));
    assert_eq!(header_str(&dead.properties, SEAL_HEADER), None);
    assert_eq!(header_str(&dead.properties, DEAD_LETTER_SEAL_HEADER), None);
    let sealed = plan(
        &processed,
        Delivered {
            sealer: Some(&s),
            ..delivered
        },
        &topology(),
        &trace,
    );
    let dead = &sealed.messages[1];
    let vouched = header_str(&dead.properties, DEAD_LETTER_SEAL_HEADER);
    assert!(s.vouches_for_dead_letter(vouched, &dead.body));
    assert_eq!(header_str(&dead.properties, SEAL_HEADER), None);
    // Replay strips both.
    let replayed = messages::strip_bookkeeping(&dead.properties);
    assert_eq!(header_str(&replayed, DEAD_LETTER_SEAL_HEADER), None);
}
