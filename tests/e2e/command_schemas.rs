//! Keeps `docs/schemas/command.*.schema.json` in step with the parser: the
//! same property names, the same required fields, and examples that `parse`
//! accepts. (Pattern semantics are checked by hand against the corpus;
//! `tests/e2e/event_schemas.rs` also validates the commands it sends, and every
//! event the worker emits, with a JSON Schema validator.)

use lifecycle_worker::command::{CommandKind, Envelope, Policy, parse};
use serde_json::Value;
use std::collections::BTreeSet;

const COMMON: [&str; 6] = [
    "command_id",
    "region_id",
    "dry_run",
    "account_id",
    "reason",
    "requested_by",
];

fn load(kind: &str) -> Value {
    let path = format!(
        "{}/docs/schemas/command.{kind}.schema.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("schema readable"))
        .expect("schema is JSON")
}

fn check(kind: CommandKind, own: &[&str], required: &[&str]) {
    let schema = load(kind.as_str());
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(schema["type"], "object");
    let properties: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = COMMON.iter().chain(own).copied().collect();
    assert_eq!(properties, expected);
    let listed: BTreeSet<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, required.iter().copied().collect());
    for example in schema["examples"].as_array().expect("examples") {
        let body = example.to_string();
        let envelope = Envelope {
            kind,
            body: body.as_bytes(),
            content_type: None,
            message_id: None,
        };
        assert!(
            parse(&envelope, &Policy::default()).is_ok(),
            "example rejected: {body}"
        );
    }
}

#[test]
fn decommission_schema_matches_parser() {
    check(
        CommandKind::Decommission,
        &["instance_id", "machine_id", "ip", "hostname", "all_matches"],
        &["region_id"],
    );
    let schema = load("decommission");
    assert_eq!(schema["oneOf"].as_array().map(Vec::len), Some(4));
}

#[test]
fn leak_alert_schema_matches_parser() {
    check(
        CommandKind::LeakAlert,
        &[
            "activation_id",
            "detected_at",
            "delete_if_unused",
            "quarantine",
        ],
        &["region_id", "activation_id"],
    );
}
