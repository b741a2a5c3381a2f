//! Property tests of `command::parse`: no input makes it panic, and every
//! accepted command survives a trip through its own wire form unchanged.

use lifecycle_worker::command::{CommandKind, Envelope, Policy, parse};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

const ACCOUNT: &str = "1234567890123456";

fn policy() -> Policy {
    Policy {
        known_accounts: [ACCOUNT.to_string()].into(),
        ..Policy::default()
    }
}

fn kind() -> impl Strategy<Value = CommandKind> {
    prop_oneof![
        Just(CommandKind::Decommission),
        Just(CommandKind::LeakAlert)
    ]
}

fn rfc3339() -> impl Strategy<Value = String> {
    // 1900..2100, any nanosecond, any whole-minute offset RFC 3339 can write.
    (
        -2_208_988_800i64..4_102_444_800,
        0u32..1_000_000_000,
        -1439i32..=1439,
    )
        .prop_map(|(secs, nanos, minutes)| {
            let offset = UtcOffset::from_whole_seconds(minutes * 60).unwrap_or(UtcOffset::UTC);
            let at = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH)
                + time::Duration::nanoseconds(i64::from(nanos));
            at.to_offset(offset).format(&Rfc3339).unwrap_or_default()
        })
}

fn hostname() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", 1..4),
        any::<bool>(),
    )
        .prop_map(|(labels, dot)| labels.join(".") + if dot { "." } else { "" })
}

fn target() -> impl Strategy<Value = (&'static str, String)> {
    prop_oneof![
        "mi-[A-Za-z0-9]{1,61}".prop_map(|v| ("instance_id", v)),
        "[A-Za-z0-9-]{1,64}".prop_map(|v| ("machine_id", v)),
        any::<IpAddr>().prop_map(|v| ("ip", v.to_string())),
        hostname().prop_map(|v| ("hostname", v)),
    ]
}

/// An optional value: absent, or present with the given strategy.
fn maybe<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop::option::of(s)
}

/// A well-formed body for `kind`, with optional fields randomly present.
fn valid_body(kind: CommandKind) -> BoxedStrategy<Value> {
    let common = (
        "[A-Za-z0-9._:-]{1,64}",
        prop::sample::select(vec!["cn-hangzhou", "cn-beijing", "cn-shanghai"]),
        maybe(any::<bool>()),
        maybe(Just(ACCOUNT)),
        maybe("\\PC{0,256}"),
        maybe("[ -~]{0,256}"),
    );
    let common = common.prop_map(|(id, region, dry_run, account, reason, by)| {
        let mut m = Map::new();
        m.insert("command_id".into(), json!(id));
        m.insert("region_id".into(), json!(region));
        if let Some(v) = dry_run {
            m.insert("dry_run".into(), json!(v));
        }
        if let Some(v) = account {
            m.insert("account_id".into(), json!(v));
        }
        if let Some(v) = reason {
            m.insert("reason".into(), json!(v));
        }
        if let Some(v) = by {
            m.insert("requested_by".into(), json!(v));
        }
        m
    });
    match kind {
        CommandKind::Decommission => (common, target(), maybe(any::<bool>()))
            .prop_map(|(mut m, (field, value), all)| {
                m.insert(field.into(), json!(value));
                if let Some(v) = all {
                    m.insert("all_matches".into(), json!(v));
                }
                Value::Object(m)
            })
            .boxed(),
        CommandKind::LeakAlert => (
            common,
            "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
            maybe(rfc3339()),
            maybe(any::<bool>()),
            maybe(prop::sample::select(vec!["none", "suspicious", "all"])),
        )
            .prop_map(|(mut m, activation, at, delete, quarantine)| {
                m.insert("activation_id".into(), json!(activation));
                if let Some(v) = at {
                    m.insert("detected_at".into(), json!(v));
                }
                if let Some(v) = delete {
                    m.insert("delete_if_unused".into(), json!(v));
                }
                if let Some(v) = quarantine {
                    m.insert("quarantine".into(), json!(v));
                }
                Value::Object(m)
            })
            .boxed(),
    }
}

/// Any JSON value, small, with a bias towards the command's own keys.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "\\PC{0,20}".prop_map(Value::String),
        "mi-[a-z0-9]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            prop::sample::select(vec![
                "command_id",
                "region_id",
                "dry_run",
                "account_id",
                "reason",
                "requested_by",
                "instance_id",
                "machine_id",
                "ip",
                "hostname",
                "all_matches",
                "activation_id",
                "detected_at",
                "delete_if_unused",
                "quarantine",
            ])
            .prop_map(String::from),
            "\\PC{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        kind in kind(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        content_type in maybe("\\PC{0,24}"),
        message_id in maybe("[ -~]{0,70}"),
    ) {
        let envelope = Envelope {
            kind,
            body: &body,
            content_type: content_type.as_deref(),
            message_id: message_id.as_deref(),
        };
        if let Err(rejection) = parse(&envelope, &policy()) {
            prop_assert!(!rejection.errors.is_empty());
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_round_trips(kind in kind(), value in any_json()) {
        let body = value.to_string();
        let envelope = Envelope { kind, body: body.as_bytes(), content_type: None, message_id: Some("m-1") };
        match parse(&envelope, &policy()) {
            Ok(command) => {
                let again = command.to_json().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let envelope = Envelope { kind, body: again.as_bytes(), content_type: None, message_id: None };
                prop_assert_eq!(parse(&envelope, &policy()), Ok(command));
            }
            Err(rejection) => prop_assert!(!rejection.errors.is_empty()),
        }
    }

    #[test]
    fn valid_commands_are_accepted_and_round_trip(
        (kind, value) in kind().prop_flat_map(|k| (Just(k), valid_body(k))),
    ) {
        let body = value.to_string();
        let envelope = Envelope { kind, body: body.as_bytes(), content_type: Some("application/json"), message_id: None };
        let command = parse(&envelope, &policy());
        prop_assert!(command.is_ok(), "{:?} for {}", command, body);
        let command = command.map_err(|r| TestCaseError::fail(r.message()))?;
        let again = command.to_json().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let envelope = Envelope { kind, body: again.as_bytes(), content_type: None, message_id: None };
        prop_assert_eq!(parse(&envelope, &policy()), Ok(command));
    }
}
