//! Replays the hostile-input corpus (`tests/fixtures/hostile/corpus.json`)
//! through `command::parse`: every case must be rejected, with the expected
//! reason, without a panic, and with problems that are safe to echo.

use crate::corpus::load;
use lifecycle_worker::command::{CommandKind, Envelope, Policy, parse};
use std::collections::BTreeSet;

/// What the contract's operator would see: no raw control or bidi characters.
fn safe_to_echo(s: &str) -> bool {
    s.chars().all(|c| {
        !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{061c}')
    })
}

#[test]
fn every_hostile_case_is_rejected_with_its_reason() {
    let cases = load();
    assert!(cases.len() >= 60, "corpus has {} cases", cases.len());
    let names: BTreeSet<_> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    let policy = Policy::default();
    let mut failures = Vec::new();
    for case in &cases {
        let kind =
            CommandKind::from_name(&case.kind).unwrap_or_else(|| panic!("{}: bad kind", case.name));
        let body = case.body();
        let envelope = Envelope {
            kind,
            body: &body,
            content_type: case.content_type.as_deref(),
            message_id: case.message_id.as_deref(),
        };
        match parse(&envelope, &policy) {
            Ok(command) => failures.push(format!("{}: accepted as {command:?}", case.name)),
            Err(rejection) => {
                if rejection.reason.as_str() != case.reason {
                    failures.push(format!(
                        "{}: reason {} (expected {}): {}",
                        case.name,
                        rejection.reason,
                        case.reason,
                        rejection.message()
                    ));
                }
                if rejection.errors.is_empty() {
                    failures.push(format!("{}: no field errors", case.name));
                }
                for error in &rejection.errors {
                    let ok = safe_to_echo(&error.field)
                        && safe_to_echo(&error.problem)
                        && error.field.chars().count() <= 256
                        && error.problem.chars().count() <= 512;
                    if !ok {
                        failures.push(format!("{}: unsafe or long error {error:?}", case.name));
                    }
                }
                let echoed = [
                    rejection.command_id.as_ref().map(|v| v.to_string()),
                    rejection.region_id.as_ref().map(|v| v.to_string()),
                    rejection.account_id.as_ref().map(|v| v.to_string()),
                ];
                for value in echoed.into_iter().flatten() {
                    if !safe_to_echo(&value) {
                        failures.push(format!("{}: echoed unsafe context {value:?}", case.name));
                    }
                }
                if serde_json::to_string(&rejection).is_err() {
                    failures.push(format!("{}: rejection does not serialize", case.name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_covers_every_parse_reason() {
    let cases = load();
    let covered: BTreeSet<_> = cases.iter().map(|c| c.reason.as_str()).collect();
    for reason in lifecycle_worker::command::RejectReason::ALL {
        if !lifecycle_worker::command::RejectReason::WORKER.contains(&reason) {
            assert!(covered.contains(reason.as_str()), "no case for {reason}");
        }
    }
}

/// The timestamp cases: valid commands whose only fault is the
/// `x-lifecycle-timestamp` header, signed as a publisher would sign them;
/// `auth::verify` refuses each with its reason and the problem names no key.
#[test]
fn every_timestamp_case_is_refused_by_the_signature_check() {
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use lifecycle_worker::auth;
    use lifecycle_worker::secret::Secret;

    let cases = crate::corpus::load_timestamp_cases();
    assert!(cases.len() >= 20, "{} timestamp cases", cases.len());
    let mut names: BTreeSet<String> = load().into_iter().map(|c| c.name).collect();
    let secret = Secret::new("corpus-secret");
    let keys = [("k1".to_owned(), secret.clone())];
    let now = auth::unix_now();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            names.insert(case.name.clone()),
            "{}: name not unique",
            case.name
        );
        let kind = CommandKind::from_name(&case.kind).expect("kind");
        let envelope = Envelope {
            kind,
            body: case.body.as_bytes(),
            content_type: Some("application/json"),
            message_id: None,
        };
        if let Err(r) = parse(&envelope, &Policy::default()) {
            failures.push(format!(
                "{}: the body itself is refused: {}",
                case.name,
                r.message()
            ));
        }
        let long = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut h = FieldTable::default();
        h.insert(auth::KEY_ID_HEADER.into(), long("k1"));
        h.insert(auth::TIMESTAMP_HEADER.into(), case.value());
        let sig = auth::sign(&secret, &case.signing_text(), case.body.as_bytes());
        h.insert(auth::SIGNATURE_HEADER.into(), long(&sig));
        let props = BasicProperties::default().with_headers(h);
        match auth::verify(&keys, &props, case.body.as_bytes(), 300, now) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(e) => {
                if e.reason().as_str() != case.reason {
                    failures.push(format!("{}: {} ({e})", case.name, e.reason()));
                }
                let text = e.to_string();
                if !safe_to_echo(&text) || text.contains("corpus-secret") {
                    failures.push(format!("{}: unsafe problem {text:?}", case.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
