//! Signature checks, the age limit and its boundary, held copies; property
//! tests for the MAC input.

use super::*;
use crate::decision::Counters;
use lapin::types::{AMQPValue, FieldTable, LongString};
use proptest::prelude::*;
use std::time::Duration;

const NOW: i64 = 1_800_000_000;
const MAX_AGE: u64 = 300;

fn keys() -> Vec<(String, Secret)> {
    vec![
        ("old".into(), Secret::new("old-secret")),
        ("new".into(), Secret::new("new-secret")),
    ]
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Properties with these headers (`None`: left out).
fn props(key_id: Option<&str>, ts: Option<AMQPValue>, sig: Option<&str>) -> BasicProperties {
    let mut h = FieldTable::default();
    if let Some(k) = key_id {
        h.insert(KEY_ID_HEADER.into(), text(k));
    }
    if let Some(t) = ts {
        h.insert(TIMESTAMP_HEADER.into(), t);
    }
    if let Some(s) = sig {
        h.insert(SIGNATURE_HEADER.into(), text(s));
    }
    BasicProperties::default().with_headers(h)
}

fn signed_at(key_id: &str, secret: &str, ts: i64, body: &[u8]) -> BasicProperties {
    let t = ts.to_string();
    let sig = sign(&Secret::new(secret), &t, body);
    props(Some(key_id), Some(text(&t)), Some(&sig))
}

fn check(p: &BasicProperties, body: &[u8]) -> Result<Signed, AuthError> {
    verify(&keys(), p, body, MAX_AGE, NOW)
}

const BODY: &[u8] = br#"{"command_id":"c1"}"#;

#[test]
fn known_vector() {
    // printf %s '1700000000.{"a":1}' | openssl dgst -sha256 -hmac k -r
    assert_eq!(
        sign(&Secret::new("k"), "1700000000", br#"{"a":1}"#),
        "1b6ad1bc9bf48c52ce01939866d5877c6cc4e87ddad27e16673cb8c4964394a3"
    );
}

#[test]
fn accepts_any_configured_key_and_rejects_the_rest() {
    for (id, secret) in [("old", "old-secret"), ("new", "new-secret")] {
        let s = check(&signed_at(id, secret, NOW, BODY), BODY).expect("accepted");
        assert_eq!(s.key_id, id);
        assert!(!s.held);
    }
    let t = NOW.to_string();
    let sig = sign(&Secret::new("new-secret"), &t, BODY);
    let cases = [
        (
            props(Some("old"), Some(text(&t)), Some(&sig)),
            AuthError::BadSignature,
        ),
        (
            props(Some("nope"), Some(text(&t)), Some(&sig)),
            AuthError::UnknownKey,
        ),
        (props(None, Some(text(&t)), Some(&sig)), AuthError::Unsigned),
        (
            props(Some("new"), Some(text(&t)), None),
            AuthError::Unsigned,
        ),
        (
            props(Some("new"), None, Some(&sig)),
            AuthError::MissingTimestamp,
        ),
        (
            props(Some("new"), Some(text(&t)), Some(&sig.to_uppercase())),
            AuthError::BadSignature,
        ),
        (
            props(Some("new"), Some(text("")), Some(&sig)),
            AuthError::BadTimestamp(TimestampError::NotDigits),
        ),
        (
            props(Some("new"), Some(AMQPValue::Double(1.8e9)), Some(&sig)),
            AuthError::BadTimestamp(TimestampError::WrongType),
        ),
    ];
    for (p, want) in cases {
        assert_eq!(
            check(&p, BODY).map(|s| s.key_id),
            Err(want.clone()),
            "{p:?}"
        );
        assert_eq!(want.reason(), RejectReason::Unauthenticated);
    }
    let tampered = br#"{"command_id":"c2"}"#;
    let p = props(Some("new"), Some(text(&t)), Some(&sig));
    assert_eq!(
        check(&p, tampered).map(|_| ()),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn the_body_only_scheme_is_refused() {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"new-secret").expect("key");
    mac.update(BODY);
    let old = hex::encode(mac.finalize().into_bytes());
    let without = props(Some("new"), None, Some(&old));
    assert_eq!(
        check(&without, BODY).map(|_| ()),
        Err(AuthError::MissingTimestamp)
    );
    let with = props(Some("new"), Some(text(&NOW.to_string())), Some(&old));
    assert_eq!(check(&with, BODY).map(|_| ()), Err(AuthError::BadSignature));
}

#[test]
fn an_integer_timestamp_is_signed_in_its_decimal_form() {
    let sig = sign(&Secret::new("old-secret"), &NOW.to_string(), BODY);
    for v in [
        AMQPValue::LongLongInt(NOW),
        AMQPValue::LongUInt(1_800_000_000),
    ] {
        let p = props(Some("old"), Some(v), Some(&sig));
        assert!(check(&p, BODY).is_ok());
    }
    // A string keeps its leading zeros: they are part of what is signed.
    let padded = format!("00{NOW}");
    let p = props(Some("old"), Some(text(&padded)), Some(&sig));
    assert_eq!(check(&p, BODY).map(|_| ()), Err(AuthError::BadSignature));
    let sig = sign(&Secret::new("old-secret"), &padded, BODY);
    let p = props(Some("old"), Some(text(&padded)), Some(&sig));
    assert!(check(&p, BODY).is_ok());
}

#[test]
fn exactly_the_limit_either_way_is_accepted_one_more_second_is_not() {
    let max = i64::try_from(MAX_AGE).expect("small");
    for offset in [-max, -max + 1, -1, 0, 1, max - 1, max] {
        let p = signed_at("old", "old-secret", NOW + offset, BODY);
        assert!(check(&p, BODY).is_ok(), "offset {offset}");
    }
    for offset in [-max - 1, max + 1, -86_400, 86_400] {
        let p = signed_at("old", "old-secret", NOW + offset, BODY);
        let e = check(&p, BODY).map(|_| ()).expect_err("expired");
        assert_eq!(e.reason(), RejectReason::SignatureExpired);
        assert_eq!(
            e,
            AuthError::Expired(Skew {
                offset,
                max_age_s: MAX_AGE,
                seal: Hold::Absent
            })
        );
    }
}

#[test]
fn the_skew_is_told_with_its_sign_and_nothing_secret() {
    let behind = AuthError::Expired(Skew {
        offset: -412,
        max_age_s: 300,
        seal: Hold::Absent,
    });
    assert_eq!(
        behind.to_string(),
        "x-lifecycle-timestamp is 412 s behind the worker's clock (offset -412 s; at most 300 s either way is accepted)"
    );
    assert_eq!(behind.field(), "timestamp");
    let ahead = AuthError::Expired(Skew {
        offset: 3600,
        max_age_s: 300,
        seal: Hold::Expired,
    });
    assert_eq!(
        ahead.to_string(),
        "x-lifecycle-timestamp is 3600 s ahead of the worker's clock (offset +3600 s; at most 300 s either way is accepted); the worker's hold on this retry copy has ended"
    );
}

/// A retry copy of a command signed at `signed`, sealed at `sealed` for a
/// stage of `delay`, with its bookkeeping headers.
fn copy(signed: i64, sealed: i64, delay: Duration) -> BasicProperties {
    let p = signed_at("old", "old-secret", signed, BODY);
    let (s, _) = authentic(&keys(), &p, BODY, MAX_AGE).expect("authentic");
    let counters = Counters {
        redeliveries: 0,
        parks: 4,
    };
    let seal = s
        .sealer
        .retry_at(BODY, counters, "{\"d\":5}", delay, sealed);
    let mut h = p.headers().clone().unwrap_or_default();
    h.insert(seal::SEAL_HEADER.into(), text(&seal));
    h.insert("x-lifecycle-parks".into(), AMQPValue::LongLongInt(4));
    h.insert(ATTEMPTS.into(), text("{\"d\":5}"));
    p.with_headers(h)
}

#[test]
fn a_held_copy_is_never_stale_until_its_deadline() {
    // Signed a day ago, sealed 10 s ago for a 30 s stage: held.
    let p = copy(NOW - 86_400, NOW - 10, Duration::from_secs(30));
    let s = check(&p, BODY).expect("held");
    assert!(s.held);
    // Sealed 330 s ago for a 30 s stage: the deadline is now, still held.
    let p = copy(NOW - 86_400, NOW - 330, Duration::from_secs(30));
    assert!(check(&p, BODY).expect("held").held);
    // One second later: judged by its age, and told why.
    let p = copy(NOW - 86_400, NOW - 331, Duration::from_secs(30));
    let e = check(&p, BODY).map(|_| ()).expect_err("stale");
    assert!(
        matches!(
            e,
            AuthError::Expired(Skew {
                seal: Hold::Expired,
                offset: -86_400,
                ..
            })
        ),
        "{e:?}"
    );
    // An expired seal on a command still in time is fine: it is fresh.
    let p = copy(NOW - 5, NOW - 4000, Duration::from_secs(30));
    assert!(!check(&p, BODY).expect("fresh").held);
}

#[test]
fn copied_bookkeeping_does_not_make_a_copy() {
    let held = copy(NOW - 86_400, NOW - 10, Duration::from_secs(30));
    // Its headers on another command signed as long ago.
    let other = br#"{"command_id":"c9"}"#;
    let theirs = signed_at("old", "old-secret", NOW - 86_400, other);
    let mut h = held.headers().clone().unwrap_or_default();
    for name in [TIMESTAMP_HEADER, SIGNATURE_HEADER] {
        let v = theirs
            .headers()
            .as_ref()
            .and_then(|t| t.inner().get(name))
            .cloned();
        h.insert(name.into(), v.expect("header"));
    }
    let moved = held.clone().with_headers(h);
    let e = check(&moved, other).map(|_| ()).expect_err("stale");
    assert!(
        matches!(
            e,
            AuthError::Expired(Skew {
                seal: Hold::Invalid,
                ..
            })
        ),
        "{e:?}"
    );
    // Its counters changed.
    let mut h = held.headers().clone().unwrap_or_default();
    h.insert("x-lifecycle-parks".into(), AMQPValue::LongLongInt(0));
    let e = check(&held.clone().with_headers(h), BODY)
        .map(|_| ())
        .expect_err("stale");
    assert!(
        matches!(
            e,
            AuthError::Expired(Skew {
                seal: Hold::Invalid,
                ..
            })
        ),
        "{e:?}"
    );
    // The same copy under the other key id (whose secret signed nothing here).
    let mut h = held.headers().clone().unwrap_or_default();
    h.insert(KEY_ID_HEADER.into(), text("new"));
    assert_eq!(
        check(&held.clone().with_headers(h), BODY).map(|_| ()),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn bookkeeping_is_believed_only_on_held_copies() {
    let fresh = check(&signed_at("old", "old-secret", NOW, BODY), BODY).expect("fresh");
    assert!(!Verified::Signed(fresh).trusts_bookkeeping());
    let held = check(&copy(NOW - 900, NOW, Duration::from_secs(1)), BODY).expect("held");
    let v = Verified::Signed(held);
    assert!(v.trusts_bookkeeping());
    assert_eq!(v.key_id(), Some("old"));
    assert!(v.sealer().is_some());
    assert!(Verified::Unchecked.trusts_bookkeeping());
    assert!(!Verified::Refused.trusts_bookkeeping());
    assert!(Verified::Refused.sealer().is_none());
}

/// Timestamp texts as a publisher may send them: digits, with leading zeros.
fn digits() -> impl Strategy<Value = String> {
    "[0-9]{1,24}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The MAC input is the timestamp, one full stop, the body: for any text.
    #[test]
    fn mac_input_is_timestamp_dot_body(ts in any::<String>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let input = mac_input(&ts, &body);
        prop_assert_eq!(input.len(), ts.len() + 1 + body.len());
        prop_assert_eq!(&input[..ts.len()], ts.as_bytes());
        prop_assert_eq!(input[ts.len()], b'.');
        prop_assert_eq!(&input[ts.len() + 1..], &body[..]);
    }

    /// With digit-only timestamps, the input splits one way only: two
    /// different (timestamp, body) pairs never share a MAC input, so never a
    /// signature (a body cannot lend its bytes to the timestamp or back).
    #[test]
    fn no_two_pairs_share_an_input(
        t1 in digits(), b1 in proptest::collection::vec(any::<u8>(), 0..64),
        t2 in digits(), b2 in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (i1, i2) = (mac_input(&t1, &b1), mac_input(&t2, &b2));
        prop_assert_eq!(i1 == i2, t1 == t2 && b1 == b2);
        // And the first full stop gives the pair back.
        let dot = i1.iter().position(|b| *b == b'.').expect("a full stop");
        prop_assert_eq!(&i1[..dot], t1.as_bytes());
        prop_assert_eq!(&i1[dot + 1..], &b1[..]);
    }

    /// A body that moves its leading digits into the timestamp (or a
    /// timestamp that moves a digit into the body) is a different input.
    #[test]
    fn shifting_bytes_across_the_dot_changes_the_input(t in digits(), body in "[0-9]{1,8}\\.[ -~]{0,32}") {
        let moved_ts = format!("{t}{}", &body[..1]);
        let moved_body = &body.as_bytes()[1..];
        prop_assert_ne!(mac_input(&t, body.as_bytes()), mac_input(&moved_ts, moved_body));
    }

    /// Any header text either is a timestamp (digits, kept exactly) or is
    /// refused; never a panic.
    #[test]
    fn any_header_text_is_judged(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
        match Timestamp::from_text(&raw) {
            Ok(t) => {
                prop_assert!(!raw.is_empty() && raw.iter().all(u8::is_ascii_digit));
                prop_assert_eq!(t.text.as_bytes(), &raw[..]);
                prop_assert_eq!(t.text.parse::<u64>().ok(), Some(t.seconds));
            }
            Err(_) => prop_assert!(
                raw.is_empty()
                    || !raw.iter().all(u8::is_ascii_digit)
                    || std::str::from_utf8(&raw).ok().and_then(|s| s.parse::<u64>().ok()).is_none()
                    || raw.len() > 24
            ),
        }
    }

    /// Signed in time with any timestamp text and body: accepted; with the
    /// timestamp text or the body changed in any way: refused.
    #[test]
    fn signatures_bind_the_exact_text_and_bytes(
        offset in -300i64..=300,
        zeros in 0usize..3,
        body in proptest::collection::vec(any::<u8>(), 0..128),
        flip in any::<prop::sample::Index>(),
    ) {
        let ts = format!("{}{}", "0".repeat(zeros), NOW + offset);
        let sig = sign(&Secret::new("old-secret"), &ts, &body);
        let p = props(Some("old"), Some(text(&ts)), Some(&sig));
        prop_assert!(check(&p, &body).is_ok());
        let other_ts = format!("0{ts}");
        let p2 = props(Some("old"), Some(text(&other_ts)), Some(&sig));
        prop_assert_eq!(check(&p2, &body).map(|_| ()), Err(AuthError::BadSignature));
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x01;
            prop_assert_eq!(check(&p, &changed).map(|_| ()), Err(AuthError::BadSignature));
        }
    }

    /// Any AMQP value as the timestamp header: judged, never a panic, and a
    /// command is only accepted with a well-formed one.
    #[test]
    fn any_timestamp_value_is_judged(v in timestamp_values()) {
        let ts = Timestamp::from_header(&v);
        let textual = match &ts { Ok(t) => t.text.clone(), Err(_) => NOW.to_string() };
        let sig = sign(&Secret::new("old-secret"), &textual, BODY);
        let result = check(&props(Some("old"), Some(v), Some(&sig)), BODY);
        if ts.is_err() {
            prop_assert!(matches!(result, Err(AuthError::BadTimestamp(_))));
        }
    }
}

fn timestamp_values() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<f64>().prop_map(AMQPValue::Double),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<String>().prop_map(|s| text(&s)),
        "[0-9]{0,30}".prop_map(|s| text(&s)),
        Just(AMQPValue::Void),
    ]
}
