//! The replay verdicts: as it is while in time; left with a reason when
//! stale, unless the operator allows re-signing and a worker vouched for it.

use super::*;
use crate::auth::{KEY_ID_HEADER, SIGNATURE_HEADER, authentic, sign};
use lapin::types::FieldTable;

const NOW: i64 = 1_800_000_000;
const BODY: &[u8] = br#"{"command_id":"c1"}"#;

fn keys() -> Vec<(String, Secret)> {
    vec![("ops".into(), Secret::new("ops-secret"))]
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A dead letter signed by `ops` at `ts`, sealed by a worker when `sealed`.
fn dead_letter(ts: i64, sealed: bool) -> BasicProperties {
    let t = ts.to_string();
    let mut h = FieldTable::default();
    h.insert(KEY_ID_HEADER.into(), text("ops"));
    h.insert(TIMESTAMP_HEADER.into(), text(&t));
    h.insert(
        SIGNATURE_HEADER.into(),
        text(&sign(&Secret::new("ops-secret"), &t, BODY)),
    );
    let p = BasicProperties::default().with_headers(h.clone());
    if sealed {
        let (s, _) = authentic(&keys(), &p, BODY, 300).expect("authentic");
        h.insert(
            DEAD_LETTER_SEAL_HEADER.into(),
            text(&s.sealer.dead_letter(BODY)),
        );
    }
    p.with_headers(h)
}

fn policy(keys: &[(String, Secret)], within: Option<u64>) -> Policy<'_> {
    Policy {
        keys,
        max_age_s: 300,
        re_sign_within: within.map(Duration::from_secs),
    }
}

#[test]
fn in_time_or_unsigned_replays_as_it_is() {
    let k = keys();
    let p = policy(&k, None);
    assert_eq!(
        judge(&p, &dead_letter(NOW - 300, false), BODY, NOW),
        Replay::AsIs
    );
    assert_eq!(
        judge(&p, &BasicProperties::default(), BODY, NOW),
        Replay::AsIs
    );
}

#[test]
fn stale_is_left_unless_re_signing_is_asked_for() {
    let k = keys();
    let stale = dead_letter(NOW - 7200, true);
    let Replay::Left(why) = judge(&policy(&k, None), &stale, BODY, NOW) else {
        panic!("left");
    };
    assert!(
        why.contains("signed 7200 s ago") && why.contains("--re-sign-within"),
        "{why}"
    );
    let Replay::Left(why) = judge(&policy(&k, Some(3600)), &stale, BODY, NOW) else {
        panic!("too old for the window");
    };
    assert!(why.contains("longer ago than --re-sign-within"), "{why}");
    let verdict = judge(&policy(&k, Some(7200)), &stale, BODY, NOW);
    let Replay::ReSigned {
        timestamp,
        signature,
    } = &verdict
    else {
        panic!("re-signed: {verdict:?}");
    };
    assert_eq!(timestamp, &NOW.to_string());
    assert_eq!(
        signature,
        &sign(&Secret::new("ops-secret"), timestamp, BODY)
    );
    // The new headers verify now, under the same key id.
    let props = verdict.properties(stale.clone());
    let fresh = crate::auth::verify(&k, &props, BODY, 300, NOW).expect("fresh again");
    assert_eq!(fresh.key_id, "ops");
}

#[test]
fn only_what_a_worker_vouched_for_is_signed_again() {
    let k = keys();
    let unsealed = dead_letter(NOW - 7200, false);
    let Replay::Left(why) = judge(&policy(&k, Some(86_400)), &unsealed, BODY, NOW) else {
        panic!("left");
    };
    assert!(why.contains("no worker vouched"), "{why}");
    // A seal moved onto another body.
    let other = br#"{"command_id":"c2"}"#;
    let sealed = dead_letter(NOW - 7200, true);
    assert!(matches!(
        judge(&policy(&k, Some(86_400)), &sealed, other, NOW),
        Replay::Left(_)
    ));
    // A key this tool does not hold.
    let none: Vec<(String, Secret)> = Vec::new();
    let Replay::Left(why) = judge(&policy(&none, Some(86_400)), &sealed, BODY, NOW) else {
        panic!("left");
    };
    assert!(
        why.contains("unknown_key") && !why.contains("ops-secret"),
        "{why}"
    );
}
