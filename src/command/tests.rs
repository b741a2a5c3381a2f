//! Unit tests of `parse` on well-formed and slightly wrong commands; the
//! hostile corpus lives in `tests/fixtures/hostile/`.

use super::*;
use serde_json::json;

const UUID: &str = "4ECEEE12-DE25-4BB4-A8F0-09F8F0DE7B5D";

fn policy() -> Policy {
    Policy {
        known_accounts: ["1234567890123456".to_string()].into(),
        ..Policy::default()
    }
}

#[allow(clippy::result_large_err, reason = "mirrors `parse`")]
fn run(kind: CommandKind, body: &serde_json::Value) -> Result<Command, Rejection> {
    let bytes = body.to_string().into_bytes();
    parse(
        &Envelope {
            kind,
            body: &bytes,
            content_type: Some("application/json"),
            message_id: None,
        },
        &policy(),
    )
}

fn rejected(kind: CommandKind, body: &serde_json::Value) -> Rejection {
    match run(kind, body) {
        Ok(c) => panic!("accepted {c:?}"),
        Err(r) => r,
    }
}

fn fields(r: &Rejection) -> Vec<&str> {
    r.errors.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn minimal_decommission() {
    let c = run(
        CommandKind::Decommission,
        &json!({"command_id": "c1", "region_id": "cn-hangzhou", "instance_id": "mi-abc"}),
    )
    .unwrap();
    assert_eq!(c.id.as_str(), "c1");
    assert!(!c.dry_run);
    assert!(c.account_id.is_none());
    assert!(c.audit.is_empty());
    let Action::Decommission(d) = &c.action else {
        panic!()
    };
    assert!(!d.all_matches);
    assert_eq!(d.target.key(), "instance:mi-abc");
}

#[test]
fn full_decommission_by_hostname() {
    let c = run(
        CommandKind::Decommission,
        &json!({"command_id": "c1", "region_id": "cn-beijing", "hostname": "Web-1.Example.",
                "all_matches": true, "dry_run": true, "account_id": "1234567890123456",
                "reason": "offboarding", "requested_by": "alice", "unknown": [1, {"x": null}]}),
    )
    .unwrap();
    assert!(c.dry_run);
    assert_eq!(c.account_id.unwrap().as_str(), "1234567890123456");
    assert_eq!(c.audit.reason.as_deref(), Some("offboarding"));
    let Action::Decommission(d) = &c.action else {
        panic!()
    };
    assert!(d.all_matches);
    assert_eq!(d.target.key(), "hostname:web-1.example");
}

#[test]
fn ip_targets() {
    for (ip, key) in [
        ("10.0.0.1", "ip:10.0.0.1"),
        ("2001:db8::1", "ip:2001:db8::1"),
        ("::ffff:10.0.0.1", "ip:10.0.0.1"),
    ] {
        let c = run(
            CommandKind::Decommission,
            &json!({"command_id": "c", "region_id": "cn-hangzhou", "ip": ip}),
        )
        .unwrap();
        let Action::Decommission(d) = &c.action else {
            panic!()
        };
        assert_eq!(d.target.key(), key);
        assert_eq!(format!("ip:{}", d.target.value()), key);
    }
    for ip in [
        "fe80::1%eth0",
        "[::1]",
        "10.0.0.1:22",
        "010.0.0.1",
        "10.0.0",
        " 10.0.0.1",
        "1.2.3.256",
    ] {
        let r = rejected(
            CommandKind::Decommission,
            &json!({"command_id": "c", "region_id": "cn-hangzhou", "ip": ip}),
        );
        assert_eq!(r.reason, RejectReason::InvalidFields, "{ip}");
        assert_eq!(fields(&r), ["ip"]);
    }
}

#[test]
fn target_must_be_exactly_one() {
    let none = rejected(
        CommandKind::Decommission,
        &json!({"command_id": "c", "region_id": "cn-hangzhou"}),
    );
    assert_eq!(none.reason, RejectReason::InvalidFields);
    assert_eq!(fields(&none), ["target"]);
    let two = rejected(
        CommandKind::Decommission,
        &json!({"command_id": "c", "region_id": "cn-hangzhou", "instance_id": "mi-a", "hostname": "h"}),
    );
    assert_eq!(fields(&two), ["target"]);
    assert!(two.errors[0].problem.contains("instance_id, hostname"));
}

#[test]
fn all_problems_are_collected() {
    let r = rejected(
        CommandKind::LeakAlert,
        &json!({"command_id": "c 1", "region_id": 5, "dry_run": "true", "account_id": 123,
                "reason": "x".repeat(257), "activation_id": "{x}", "detected_at": "yesterday",
                "delete_if_unused": 1, "quarantine": "ALL"}),
    );
    assert_eq!(r.reason, RejectReason::InvalidFields);
    let mut got = fields(&r);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "account_id",
            "activation_id",
            "command_id",
            "delete_if_unused",
            "detected_at",
            "dry_run",
            "quarantine",
            "reason",
            "region_id"
        ]
    );
    assert!(r.command_id.is_none() && r.region_id.is_none() && r.account_id.is_none());
}

#[test]
fn leak_alert_defaults_and_values() {
    let c = run(
        CommandKind::LeakAlert,
        &json!({"command_id": "c", "region_id": "cn-shanghai", "activation_id": UUID}),
    )
    .unwrap();
    let Action::LeakAlert(l) = &c.action else {
        panic!()
    };
    assert!(l.delete_if_unused);
    assert_eq!(l.quarantine, Quarantine::None);
    assert!(l.detected_at.is_none());
    assert_eq!(l.key(), format!("activation:{}", UUID.to_lowercase()));

    let c = run(
        CommandKind::LeakAlert,
        &json!({"command_id": "c", "region_id": "cn-shanghai", "activation_id": UUID,
                "detected_at": "2024-05-01T12:00:00.5+08:00", "delete_if_unused": false, "quarantine": "suspicious"}),
    )
    .unwrap();
    let Action::LeakAlert(l) = &c.action else {
        panic!()
    };
    assert!(!l.delete_if_unused);
    assert_eq!(l.quarantine, Quarantine::Suspicious);
    assert_eq!(l.detected_at.unwrap().unix_timestamp(), 1_714_536_000);
}

#[test]
fn policy_default_for_delete_if_unused() {
    let bytes =
        json!({"command_id": "c", "region_id": "cn-shanghai", "activation_id": UUID}).to_string();
    let p = Policy {
        delete_if_unused_default: false,
        ..Policy::default()
    };
    let env = Envelope {
        kind: CommandKind::LeakAlert,
        body: bytes.as_bytes(),
        content_type: None,
        message_id: None,
    };
    let Action::LeakAlert(l) = parse(&env, &p).unwrap().action else {
        panic!()
    };
    assert!(!l.delete_if_unused);
}

#[test]
fn detected_at_out_of_range() {
    for bad in [
        "9999-12-31T25:00:00Z",
        "10000-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00Z",
    ] {
        let r = rejected(
            CommandKind::LeakAlert,
            &json!({"command_id": "c", "region_id": "cn-hangzhou", "activation_id": UUID, "detected_at": bad}),
        );
        assert_eq!(fields(&r), ["detected_at"], "{bad}");
    }
}

#[test]
fn message_id_fallback() {
    let body = json!({"region_id": "cn-hangzhou", "instance_id": "mi-a"}).to_string();
    let mut env = Envelope {
        kind: CommandKind::Decommission,
        body: body.as_bytes(),
        content_type: None,
        message_id: Some("m-1"),
    };
    assert_eq!(parse(&env, &policy()).unwrap().id.as_str(), "m-1");
    env.message_id = None;
    let r = parse(&env, &policy()).unwrap_err();
    assert_eq!(r.reason, RejectReason::MissingCommandId);
    env.message_id = Some("bad id");
    let r = parse(&env, &policy()).unwrap_err();
    assert_eq!(r.reason, RejectReason::MissingCommandId);
    assert_eq!(fields(&r), ["message_id"]);
    assert!(r.command_id.is_none());
}

#[test]
fn body_id_wins_and_bad_body_id_falls_back_for_context_only() {
    let body = json!({"command_id": "bad id", "region_id": "cn-hangzhou", "instance_id": "mi-a"})
        .to_string();
    let env = Envelope {
        kind: CommandKind::Decommission,
        body: body.as_bytes(),
        content_type: None,
        message_id: Some("m-1"),
    };
    let r = parse(&env, &policy()).unwrap_err();
    assert_eq!(r.reason, RejectReason::InvalidFields);
    assert_eq!(r.command_id.unwrap().as_str(), "m-1");
}

#[test]
fn policy_rejections_and_precedence() {
    let r = rejected(
        CommandKind::Decommission,
        &json!({"command_id": "c", "region_id": "us-east-1", "instance_id": "mi-a"}),
    );
    assert_eq!(r.reason, RejectReason::RegionNotAllowed);
    assert_eq!(r.region_id.unwrap().as_str(), "us-east-1");
    assert_eq!(r.command_id.unwrap().as_str(), "c");

    let r = rejected(
        CommandKind::Decommission,
        &json!({"command_id": "c", "region_id": "cn-hangzhou", "instance_id": "mi-a", "account_id": "42"}),
    );
    assert_eq!(r.reason, RejectReason::UnknownAccount);
    assert_eq!(r.account_id.unwrap().as_str(), "42");

    let r = rejected(
        CommandKind::Decommission,
        &json!({"command_id": "c", "region_id": "us-east-1", "instance_id": "mi-a", "account_id": "42", "reason": "r"}),
    );
    assert_eq!(r.reason, RejectReason::RegionNotAllowed);
    assert_eq!(fields(&r), ["region_id", "account_id"]);
    assert_eq!(r.audit.reason.as_deref(), Some("r"));

    let r = rejected(
        CommandKind::Decommission,
        &json!({"region_id": "us-east-1", "instance_id": 1}),
    );
    assert_eq!(r.reason, RejectReason::MissingCommandId);
    assert_eq!(fields(&r), ["command_id", "region_id", "instance_id"]);
}

#[test]
fn framing_rejections() {
    let p = policy();
    let env = |body: &'static [u8], ct: Option<&'static str>| Envelope {
        kind: CommandKind::Decommission,
        body,
        content_type: ct,
        message_id: Some("m"),
    };
    let ok = br#"{"command_id":"c","region_id":"cn-hangzhou","instance_id":"mi-a"}"#;
    for ct in [
        None,
        Some(""),
        Some("application/json"),
        Some("Application/JSON; charset=UTF-8"),
        Some("application/json;"),
    ] {
        assert!(parse(&env(ok, ct), &p).is_ok(), "{ct:?}");
    }
    for ct in [
        "text/plain",
        "application/json; charset=latin1",
        "application/jsonx",
        "application/json; x",
        "; charset=utf-8",
    ] {
        let r = parse(&env(ok, Some(ct)), &p).unwrap_err();
        assert_eq!(r.reason, RejectReason::InvalidContentType, "{ct}");
        // The body is still readable, so its context is echoed.
        assert_eq!(r.command_id.unwrap().as_str(), "c");
        assert_eq!(r.region_id.unwrap().as_str(), "cn-hangzhou");
    }
    let unreadable = parse(&env(b"x", Some("text/plain")), &p).unwrap_err();
    assert_eq!(unreadable.command_id.unwrap().as_str(), "m");
    assert_eq!(
        parse(&env(b"\xff{}", None), &p).unwrap_err().reason,
        RejectReason::InvalidUtf8
    );
    assert_eq!(
        parse(&env(b"\xef\xbb\xbf{}", None), &p).unwrap_err().reason,
        RejectReason::InvalidJson
    );
    assert_eq!(
        parse(&env(b"[]", None), &p).unwrap_err().reason,
        RejectReason::NotAnObject
    );
    assert_eq!(
        parse(&env(b"{} {}", None), &p).unwrap_err().reason,
        RejectReason::InvalidJson
    );
    let small = Policy {
        max_body_bytes: 10,
        ..policy()
    };
    assert_eq!(
        parse(&env(ok, None), &small).unwrap_err().reason,
        RejectReason::BodyTooLarge
    );
}

#[test]
fn duplicates_keep_only_unambiguous_context() {
    let body = br#"{"command_id":"c","region_id":"cn-hangzhou","region_id":"cn-beijing","instance_id":"mi-a"}"#;
    let env = Envelope {
        kind: CommandKind::Decommission,
        body,
        content_type: None,
        message_id: None,
    };
    let r = parse(&env, &policy()).unwrap_err();
    assert_eq!(r.reason, RejectReason::DuplicateKey);
    assert_eq!(fields(&r), ["region_id"]);
    assert_eq!(r.command_id.unwrap().as_str(), "c");
    assert!(r.region_id.is_none());
}

#[test]
fn round_trip_through_to_json() {
    let c = run(
        CommandKind::LeakAlert,
        &json!({"command_id": "c", "region_id": "cn-shanghai", "activation_id": UUID, "account_id": "1234567890123456",
                "detected_at": "2024-05-01T12:00:00.123456789-03:30", "quarantine": "all", "requested_by": "bob"}),
    )
    .unwrap();
    let text = c.to_json().unwrap();
    let env = Envelope {
        kind: CommandKind::LeakAlert,
        body: text.as_bytes(),
        content_type: None,
        message_id: None,
    };
    assert_eq!(parse(&env, &policy()).unwrap(), c);
}

#[test]
fn client_tokens() {
    let c = CommandId::parse("cmd-1").unwrap();
    let a = InstanceId::parse("mi-a").unwrap();
    let b = InstanceId::parse("mi-b").unwrap();
    let t = client_token(&c, &a);
    assert_eq!(t.len(), 64);
    assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(t, client_token(&c, &a));
    assert_ne!(t, client_token(&c, &b));
    // Fixed value: the token must never change between releases.
    assert_eq!(
        t,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"cmd-1/mi-a"))
    );
}
