//! Signed commands on a live broker (CONTRACT section 6, issue 19): the MAC
//! covers `<timestamp>.<body>`, commands older or newer than
//! `security.max_command_age_s` are `signature_expired`, keys are limited by
//! `security.key_scopes` (`key_scope_denied`), commands the worker holds in its
//! retry stages never go stale, and captured commands or retry copies replayed
//! late are refused however they are dressed up.
//!
//! Clocks: the tests sign with timestamps in the past or the future instead of
//! waiting, except where a worker-made deadline has to pass.

use crate::support::*;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(30);
/// The age limit of these tests' workers: small, so held commands outlive it.
const MAX_AGE: i64 = 2;
const MAX_AGE_S: &str = "2";
const ACCOUNT: &str = "1111111111";
const OTHER_ACCOUNT: &str = "2222222222";
const ACTIVATION: &str = "4ECEEE12-DE25-4BB4-A8F0-09F8F0DE7B5D";

const KEYS: &str = "k1:secret-k1, soc:secret-soc, off:secret-off, off2:secret-off2, \
                    acct:secret-acct, ops:secret-ops";
const SCOPES: &str = "soc=leak-alert:*:*, \
    off=decommission:cn-hangzhou:own|decommission:cn-hangzhou:1111111111, \
    off2=decommission:cn-hangzhou:own|decommission:cn-hangzhou:1111111111, \
    acct=decommission:*:1111111111, ops=decommission:cn-hangzhou:*";
const SECRETS: [&str; 6] = [
    "secret-k1",
    "secret-soc",
    "secret-off",
    "secret-off2",
    "secret-acct",
    "secret-ops",
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .try_into()
        .expect("seconds")
}

fn secret(key_id: &str) -> String {
    format!("secret-{key_id}")
}

/// Lower-case hex HMAC-SHA256 of `message` under `secret`.
fn mac(secret: &str, message: &[u8]) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    m.update(message);
    hex::encode(m.finalize().into_bytes())
}

/// The contract's MAC input: `<timestamp>.<body>`.
fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut input = format!("{timestamp}.").into_bytes();
    input.extend_from_slice(body);
    mac(secret, &input)
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Headers of a command: key id, timestamp (any AMQP value), signature.
fn headers(key_id: &str, timestamp: Option<AMQPValue>, sig: &str) -> FieldTable {
    let mut h = FieldTable::default();
    h.insert("x-lifecycle-key-id".into(), long(key_id));
    if let Some(ts) = timestamp {
        h.insert("x-lifecycle-timestamp".into(), ts);
    }
    h.insert("x-lifecycle-signature".into(), long(sig));
    h
}

/// Properties of a command signed by `key_id` at `ts` (a string header).
fn signed_at(key_id: &str, ts: i64, body: &[u8]) -> BasicProperties {
    let text = ts.to_string();
    let sig = signature(&secret(key_id), &text, body);
    json_props().with_headers(headers(key_id, Some(long(&text)), &sig))
}

fn json_props() -> BasicProperties {
    BasicProperties::default().with_content_type("application/json".into())
}

fn body(fields: Value) -> Vec<u8> {
    serde_json::to_vec(&fields).expect("json")
}

fn decommission_in(id: &str, i: usize, region: &str, account: Option<&str>) -> Vec<u8> {
    let mut v = json!({"command_id": id, "region_id": region, "instance_id": inst(i)});
    if let Some(a) = account {
        v["account_id"] = json!(a);
    }
    body(v)
}

fn role(account: &str) -> String {
    format!("acs:ram::{account}:role/lifecycle-worker")
}

const SIGNED: [(&str, &str); 3] = [
    ("LIFECYCLE__SECURITY__REQUIRE_SIGNED_COMMANDS", "true"),
    ("LIFECYCLE__SECURITY__COMMAND_KEYS", KEYS),
    ("LIFECYCLE__SECURITY__MAX_COMMAND_AGE_S", MAX_AGE_S),
];

/// Starts a worker that requires signed commands with these tests' keys.
async fn signed_worker(env: &Env, extra: &[(&str, &str)]) -> Worker {
    let mut vars = SIGNED.to_vec();
    vars.extend_from_slice(extra);
    env.start_worker(&vars).await
}

/// As [`signed_worker`], a process logging at debug level (its log is read).
async fn signed_process(env: &Env, extra: &[(&str, &str)]) -> Worker {
    let mut vars = SIGNED.to_vec();
    vars.push(("RUST_LOG", "debug"));
    vars.extend_from_slice(extra);
    env.start_process(&vars).await
}

/// The offset a `signature_expired` rejection reports, from its errors.
fn reported_offset(rejected: &Ev) -> i64 {
    let problem = rejected.body["errors"][0]["problem"]
        .as_str()
        .unwrap_or_default();
    let after = problem
        .split("offset ")
        .nth(1)
        .unwrap_or_else(|| panic!("no offset in {problem:?}"));
    after
        .split(' ')
        .next()
        .and_then(|n| n.trim_start_matches('+').parse().ok())
        .unwrap_or_else(|| panic!("no number in {problem:?}"))
}

fn terminal<'a>(evs: &'a [Ev], id: &str) -> Vec<&'a Ev> {
    evs.iter()
        .filter(|e| {
            e.command_id() == id && matches!(e.ty(), "command.completed" | "command.rejected")
        })
        .collect()
}

/// A message as captured: when it arrived, its body and its properties.
#[derive(Clone)]
struct Captured {
    at: Instant,
    data: Vec<u8>,
    properties: BasicProperties,
}

/// Raw deliveries of a queue (headers included), collected as they come.
type Raw = Arc<Mutex<Vec<Captured>>>;

async fn capture(env: &Env, exchanges: &[&str], routing_key: &str) -> Raw {
    let chan = env.conn.create_channel().await.expect("channel");
    let q = lifecycle_testkit::declare_private_queue(&chan).await;
    for exchange in exchanges {
        chan.queue_bind(
            q.as_str().into(),
            (*exchange).into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind capture queue");
    }
    let mut consumer = chan
        .basic_consume(
            q.as_str().into(),
            "capture".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let raw: Raw = Arc::default();
    let sink = raw.clone();
    tokio::spawn(async move {
        let _chan = chan;
        while let Some(Ok(d)) = consumer.next().await {
            sink.lock().expect("lock").push(Captured {
                at: Instant::now(),
                data: d.data,
                properties: d.properties,
            });
        }
    });
    raw
}

async fn wait_raw(raw: &Raw, what: &str, n: usize) -> Vec<Captured> {
    let deadline = Instant::now() + T;
    loop {
        let got = raw.lock().expect("lock").clone();
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(d: &'a Captured, name: &str) -> Option<&'a AMQPValue> {
    d.properties.headers().as_ref()?.inner().get(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_scheme_and_scopes() {
    let mut seed = seed_instances(30);
    seed["Activations"] = json!([activation_json(ACTIVATION, 0)]);
    let env = Env::new(seed).await;
    for account in [ACCOUNT, OTHER_ACCOUNT] {
        env.sim_send(
            reqwest::Method::POST,
            "/_sim/roles",
            Some(json!({"RoleArn": role(account)})),
        )
        .await;
    }
    let roles = format!(
        "{ACCOUNT}={}, {OTHER_ACCOUNT}={}",
        role(ACCOUNT),
        role(OTHER_ACCOUNT)
    );
    let sts = env.sim.endpoint();
    let w = signed_process(
        &env,
        &[
            ("LIFECYCLE__SECURITY__KEY_SCOPES", SCOPES),
            ("LIFECYCLE__ACCOUNTS__ROLES", roles.as_str()),
            ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
        ],
    )
    .await;
    let hz = "cn-hangzhou";
    let t = now();

    // Accepted: (label, routing key, body, properties).
    let mut good: Vec<(&str, &str, Vec<u8>, BasicProperties)> = Vec::new();
    let b = decommission_in("sig-fresh-string", 0, hz, None);
    good.push((
        "fresh-string",
        "decommission",
        b.clone(),
        signed_at("k1", t, &b),
    ));
    let b = decommission_in("sig-fresh-integer", 1, hz, None);
    let sig = signature("secret-k1", &t.to_string(), &b);
    let p = json_props().with_headers(headers("k1", Some(AMQPValue::LongLongInt(t)), &sig));
    good.push(("fresh-integer", "decommission", b, p));
    // Exactly the limit ahead: the worker's clock only moves towards it.
    let b = decommission_in("sig-limit-ahead", 2, hz, None);
    good.push((
        "limit-ahead",
        "decommission",
        b.clone(),
        signed_at("k1", t + MAX_AGE, &b),
    ));
    let b = decommission_in("sig-scope-own", 3, hz, None);
    good.push((
        "scope-own",
        "decommission",
        b.clone(),
        signed_at("off", t, &b),
    ));
    // Rotation: a second key with the same scopes.
    let b = decommission_in("sig-scope-rotated", 4, hz, None);
    good.push((
        "scope-rotated",
        "decommission",
        b.clone(),
        signed_at("off2", t, &b),
    ));
    let b = decommission_in("sig-scope-account", 5, hz, Some(ACCOUNT));
    good.push((
        "scope-account",
        "decommission",
        b.clone(),
        signed_at("off", t, &b),
    ));
    let b =
        body(json!({"command_id": "sig-scope-leak", "region_id": hz, "activation_id": ACTIVATION}));
    good.push((
        "scope-leak",
        "leak-alert",
        b.clone(),
        signed_at("soc", t, &b),
    ));
    // A key without an entry may ask for anything.
    let b = decommission_in("sig-unscoped", 6, hz, Some(OTHER_ACCOUNT));
    good.push((
        "unscoped",
        "decommission",
        b.clone(),
        signed_at("k1", t, &b),
    ));
    // `*` as the account covers `own`.
    let b = decommission_in("sig-star-own", 7, hz, None);
    good.push((
        "star-own",
        "decommission",
        b.clone(),
        signed_at("ops", t, &b),
    ));

    // Refused: (label, routing key, body, properties, reason).
    let mut bad: Vec<(&str, &str, Vec<u8>, BasicProperties, &str)> = Vec::new();
    let b = decommission_in("sig-too-old", 10, hz, None);
    bad.push((
        "too-old",
        "decommission",
        b.clone(),
        signed_at("k1", t - MAX_AGE - 1, &b),
        "signature_expired",
    ));
    let b = decommission_in("sig-too-new", 11, hz, None);
    bad.push((
        "too-new",
        "decommission",
        b.clone(),
        signed_at("k1", t + 3600, &b),
        "signature_expired",
    ));
    let b = decommission_in("sig-no-timestamp", 12, hz, None);
    let p = json_props().with_headers(headers(
        "k1",
        None,
        &signature("secret-k1", &t.to_string(), &b),
    ));
    bad.push(("no-timestamp", "decommission", b, p, "unauthenticated"));
    // The old scheme: the MAC of the body alone, with or without a timestamp header.
    let b = decommission_in("sig-old-scheme", 13, hz, None);
    let p = json_props().with_headers(headers("k1", None, &mac("secret-k1", &b)));
    bad.push(("old-scheme", "decommission", b, p, "unauthenticated"));
    let b = decommission_in("sig-old-scheme-ts", 14, hz, None);
    let p = json_props().with_headers(headers(
        "k1",
        Some(long(&t.to_string())),
        &mac("secret-k1", &b),
    ));
    bad.push(("old-scheme-ts", "decommission", b, p, "unauthenticated"));
    // The header says another time than the one signed.
    let b = decommission_in("sig-other-time", 15, hz, None);
    let sig = signature("secret-k1", &(t - 600).to_string(), &b);
    let p = json_props().with_headers(headers("k1", Some(long(&t.to_string())), &sig));
    bad.push(("other-time", "decommission", b, p, "unauthenticated"));
    // A captured command replayed late, dressed up as one of the worker's retry copies.
    let b = decommission_in("sig-dressed-up", 16, hz, None);
    let p = signed_at("k1", t - 600, &b);
    let mut h = p.headers().clone().unwrap_or_default();
    h.insert("x-lifecycle-redeliveries".into(), AMQPValue::LongLongInt(1));
    h.insert("x-lifecycle-parks".into(), AMQPValue::LongLongInt(3));
    h.insert("x-lifecycle-attempts".into(), long(r#"{"deregister":1}"#));
    h.insert(
        "x-lifecycle-seal".into(),
        long(&format!("v1:{}:{}", t + 3600, "0".repeat(64))),
    );
    h.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
    bad.push((
        "dressed-up",
        "decommission",
        b,
        p.with_headers(h),
        "signature_expired",
    ));
    // Scopes: kind, region, account, own.
    let b = decommission_in("sig-scope-kind", 17, hz, None);
    bad.push((
        "scope-kind",
        "decommission",
        b.clone(),
        signed_at("soc", t, &b),
        "key_scope_denied",
    ));
    let b = decommission_in("sig-scope-region", 18, "cn-beijing", None);
    bad.push((
        "scope-region",
        "decommission",
        b.clone(),
        signed_at("off", t, &b),
        "key_scope_denied",
    ));
    let b = decommission_in("sig-scope-account-denied", 19, hz, Some(OTHER_ACCOUNT));
    bad.push((
        "scope-account",
        "decommission",
        b.clone(),
        signed_at("off", t, &b),
        "key_scope_denied",
    ));
    let b = decommission_in("sig-scope-not-own", 20, hz, None);
    bad.push((
        "scope-not-own",
        "decommission",
        b.clone(),
        signed_at("acct", t, &b),
        "key_scope_denied",
    ));
    // The scope is judged even when the account has no role mapped.
    let b = decommission_in("sig-scope-unmapped", 21, hz, Some("3333333333"));
    bad.push((
        "scope-unmapped",
        "decommission",
        b.clone(),
        signed_at("off", t, &b),
        "key_scope_denied",
    ));

    for (label, key, b, p) in &good {
        env.publish(key, b, p.clone().with_correlation_id((*label).into()))
            .await;
    }
    for (label, key, b, p, _) in &bad {
        env.publish(key, b, p.clone().with_correlation_id((*label).into()))
            .await;
    }
    let ids = |v: &[Vec<u8>]| -> Vec<String> {
        v.iter()
            .map(|b| {
                serde_json::from_slice::<Value>(b).expect("json")["command_id"]
                    .as_str()
                    .expect("id")
                    .to_owned()
            })
            .collect()
    };
    let good_ids = ids(&good.iter().map(|g| g.2.clone()).collect::<Vec<_>>());
    let bad_ids = ids(&bad.iter().map(|g| g.2.clone()).collect::<Vec<_>>());
    let evs = env
        .wait_for("every terminal event", T, |e| {
            good_ids
                .iter()
                .chain(&bad_ids)
                .all(|id| !terminal(e, id).is_empty())
        })
        .await;
    for (id, (label, ..)) in good_ids.iter().zip(&good) {
        let t = terminal(&evs, id);
        assert_eq!(t.len(), 1, "{label}: {t:#?}");
        assert_eq!(t[0].ty(), "command.completed", "{label}: {:#}", t[0].body);
        assert_eq!(t[0].outcome(), "succeeded", "{label}: {:#}", t[0].body);
    }
    for (id, (label, _, _, _, reason)) in bad_ids.iter().zip(&bad) {
        let t = terminal(&evs, id);
        assert_eq!(t.len(), 1, "{label}: {t:#?}");
        assert_eq!(t[0].ty(), "command.rejected", "{label}: {:#}", t[0].body);
        assert_eq!(t[0].body["reason"], *reason, "{label}: {:#}", t[0].body);
        let text = t[0].body.to_string();
        for s in SECRETS {
            assert!(!text.contains(s), "{label}: {s} in {text}");
        }
        // Neither its own nor another key's scopes.
        for scope in ["leak-alert:", "decommission:", ACCOUNT, "|"] {
            assert!(!text.contains(scope), "{label}: {scope:?} in {text}");
        }
    }
    // The clock skew is told with its sign.
    let old = terminal(&evs, "sig-too-old")[0];
    assert!(reported_offset(old) <= -(MAX_AGE + 1), "{:#}", old.body);
    assert!(old.body.to_string().contains("behind"), "{:#}", old.body);
    let new = terminal(&evs, "sig-too-new")[0];
    let ahead = reported_offset(new);
    assert!((3600 - 60..=3600).contains(&ahead), "{:#}", new.body);
    assert!(new.body.to_string().contains("ahead"), "{:#}", new.body);

    // Only the accepted commands reached the API.
    let d = env.deregistrations().await;
    for i in [0, 1, 2, 3, 4, 5, 6, 7] {
        assert!(d.contains_key(&inst(i)), "{} deregistered: {d:?}", inst(i));
    }
    for i in 10..=21 {
        assert!(
            !d.contains_key(&inst(i)),
            "{} must not be touched: {d:?}",
            inst(i)
        );
    }
    let touched: Vec<Value> = env
        .requests()
        .await
        .into_iter()
        .filter_map(|r| r["params"]["InstanceId"].as_str().map(|s| json!(s)))
        .collect();
    for i in 10..=21 {
        assert!(
            !touched.contains(&json!(inst(i))),
            "{} reached the API",
            inst(i)
        );
    }

    // Exactly the limit behind is accepted. Sent at the start of a second so
    // the worker most likely reads the same second; when it reads a later one,
    // the rejection must say so (an offset beyond the limit) and we try again.
    let mut accepted = false;
    for attempt in 0..4 {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .subsec_millis();
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - millis) + 20)).await;
        let id = format!("sig-limit-behind-{attempt}");
        let b = decommission_in(&id, 25 + attempt, hz, None);
        env.publish("decommission", &b, signed_at("k1", now() - MAX_AGE, &b))
            .await;
        let evs = env
            .wait_for("the command at the limit", T, |e| {
                !terminal(e, &id).is_empty()
            })
            .await;
        let t = terminal(&evs, &id)[0];
        if t.ty() == "command.completed" {
            assert_eq!(t.outcome(), "succeeded", "{:#}", t.body);
            accepted = true;
            break;
        }
        assert_eq!(t.body["reason"], "signature_expired", "{:#}", t.body);
        assert!(
            reported_offset(t) < -MAX_AGE,
            "exactly the limit behind must be accepted: {:#}",
            t.body
        );
    }
    assert!(accepted, "never handled within the second it was signed in");

    // No secret in the log.
    let log = w.stderr();
    for s in SECRETS {
        assert!(!log.contains(s), "{s} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_commands_never_go_stale_but_captured_retry_copies_do() {
    let env = Env::new(seed_instances(4)).await;
    let _w = signed_worker(&env, &[]).await;
    let copies = capture(&env, &["lifecycle.retry.1s", "lifecycle.retry.2s"], "").await;
    let (reply_to, replies) = reply_queue(&env).await;

    // Parked for credentials three times: back after 1 s, 2 s and 2 s, older
    // than the age limit from the second return on; it still completes.
    env.set_faults(
        json!({"fail_next": [{"action": "DeregisterManagedInstance", "count": 3,
        "code": "InvalidAccessKeyId.NotFound", "status": 404}]}),
    )
    .await;
    let id = new_id("held");
    let b = decommission(&id, &inst(0));
    let signed = now();
    env.publish("decommission", &b, signed_at("k1", signed, &b))
        .await;
    let evs = env
        .wait_for("the parked command completes", T, |e| {
            !terminal(e, &id).is_empty()
        })
        .await;
    let t = terminal(&evs, &id);
    assert_eq!(t.len(), 1, "{t:#?}");
    assert_eq!(t[0].ty(), "command.completed", "{:#}", t[0].body);
    assert_eq!(t[0].outcome(), "succeeded", "{:#}", t[0].body);
    assert!(
        now() - signed > MAX_AGE,
        "held for longer than the age limit"
    );
    let got = wait_raw(&copies, "three retry copies", 3).await;
    assert_eq!(got.len(), 3, "one retry copy per park");
    for copy in &got {
        assert_eq!(copy.data, b, "the body byte for byte");
        assert!(
            header(copy, "x-lifecycle-seal").is_some(),
            "sealed: {:?}",
            copy.properties
        );
        let text = format!("{:?}", copy.properties);
        assert!(!SECRETS.iter().any(|s| text.contains(s)), "{text}");
    }
    let calls = env.requests().await.len();

    // Replays, each with its own correlation id and reply queue.
    let replay = |copy: &Captured, label: &str| {
        copy.properties
            .clone()
            .with_reply_to(reply_to.as_str().into())
            .with_correlation_id(label.into())
    };
    let last = got.last().expect("a copy").clone();
    // The seal's deadline moved: the seal no longer verifies.
    let mut forged = last.properties.headers().clone().unwrap_or_default();
    let seal = match forged.inner().get("x-lifecycle-seal") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("seal header: {other:?}"),
    };
    let mut parts: Vec<String> = seal.split(':').map(str::to_owned).collect();
    parts[1] = (now() + 86_400).to_string();
    forged.insert("x-lifecycle-seal".into(), long(&parts.join(":")));
    let forged_props = replay(&last, "forged-deadline").with_headers(forged);
    env.publish_to("", "lifecycle.decommission", &last.data, forged_props)
        .await;
    // The copy's headers on another captured command.
    let other = decommission(&new_id("other"), &inst(1));
    let mut moved = last.properties.headers().clone().unwrap_or_default();
    let theirs = signed_at("k1", signed, &other);
    for h in ["x-lifecycle-timestamp", "x-lifecycle-signature"] {
        let v = theirs
            .headers()
            .as_ref()
            .and_then(|t| t.inner().get(h))
            .cloned()
            .expect(h);
        moved.insert(h.into(), v);
    }
    let moved_props = replay(&last, "moved-seal").with_headers(moved);
    env.publish_to("", "lifecycle.decommission", &other, moved_props)
        .await;

    // The genuine copy, once its deadline (its stage's delay plus the age
    // limit after it was made) has passed.
    let past = last.at + Duration::from_secs(2 + 2) + Duration::from_millis(1500);
    tokio::time::sleep(past.saturating_duration_since(Instant::now())).await;
    env.publish_to(
        "",
        "lifecycle.decommission",
        &last.data,
        replay(&last, "late-copy"),
    )
    .await;

    let got = wait_events(&replies, "three replies", T, |r| r.len() >= 3).await;
    for label in ["forged-deadline", "moved-seal", "late-copy"] {
        let r: Vec<&Ev> = got
            .iter()
            .filter(|r| r.correlation_id.as_deref() == Some(label))
            .collect();
        assert_eq!(r.len(), 1, "{label}: {got:#?}");
        assert_eq!(r[0].ty(), "command.rejected", "{label}: {:#}", r[0].body);
        assert_eq!(
            r[0].body["reason"], "signature_expired",
            "{label}: {:#}",
            r[0].body
        );
    }
    assert_eq!(
        env.requests().await.len(),
        calls,
        "no replay reached the API"
    );
    assert_eq!(count(&env.events(), &id, "command.completed"), 1);
}

/// The environment variables `send` and `dead-letters` need to sign like the
/// worker's publishers.
const CLI_SIGNING: [(&str, &str); 3] = [
    ("LIFECYCLE__SECURITY__REQUIRE_SIGNED_COMMANDS", "true"),
    ("LIFECYCLE__SECURITY__COMMAND_KEYS", KEYS),
    ("LIFECYCLE__SECURITY__MAX_COMMAND_AGE_S", MAX_AGE_S),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_the_current_time_and_the_body() {
    let env = Env::new(seed_instances(2)).await;
    let _w = signed_worker(&env, &[]).await;
    let sent = capture(&env, &["lifecycle.commands"], "#").await;
    let before = now();
    let instance = inst(0);
    let (code, stdout, stderr) = env
        .run_cli_with(
            &[
                "send",
                "decommission",
                "--region",
                "cn-hangzhou",
                "--instance-id",
                &instance,
                "--key-id",
                "k1",
                "--wait",
                "20",
                "--output",
                "json",
            ],
            &CLI_SIGNING,
        )
        .await;
    let after = now();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("\"command.completed\"") && stdout.contains("\"succeeded\""),
        "{stdout}"
    );
    let got = wait_raw(&sent, "the published command", 1).await;
    let command = &got[0];
    let ts = match header(command, "x-lifecycle-timestamp") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("x-lifecycle-timestamp: {other:?}"),
    };
    assert!(ts.bytes().all(|b| b.is_ascii_digit()), "{ts}");
    let seconds: i64 = ts.parse().expect("seconds");
    assert!(
        (before..=after).contains(&seconds),
        "{before} <= {seconds} <= {after}"
    );
    let sig = match header(command, "x-lifecycle-signature") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("x-lifecycle-signature: {other:?}"),
    };
    assert_eq!(sig, signature("secret-k1", &ts, &command.data));
    assert!(!format!("{stdout}{stderr}").contains("secret-k1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_dead_letters_stay_unless_re_signed_and_only_what_a_worker_vouched_for() {
    let env = Env::new(seed_instances(4)).await;
    let _w = signed_worker(&env, &[]).await;
    let t = now();
    // 1. Authentic and in time, fails: its dead letter is sealed.
    env.set_faults(
        json!({"fail_next": [{"action": "DeregisterManagedInstance", "count": 1,
        "code": "Operation.Forbidden", "status": 403}]}),
    )
    .await;
    let failed = new_id("dl-failed");
    let b = decommission(&failed, &inst(0));
    env.publish("decommission", &b, signed_at("k1", t, &b))
        .await;
    // 2. A captured command replayed late: rejected, its dead letter unsealed.
    let expired = new_id("dl-expired");
    let b = decommission(&expired, &inst(1));
    env.publish("decommission", &b, signed_at("k1", t - 600, &b))
        .await;
    // 3. Signed with a key the worker does not know.
    let forged = new_id("dl-unknown-key");
    let b = decommission(&forged, &inst(2));
    let p = json_props().with_headers(headers(
        "k9",
        Some(long(&t.to_string())),
        &signature("guess", &t.to_string(), &b),
    ));
    env.publish("decommission", &b, p).await;
    env.wait_for("three terminal events", T, |e| {
        [&failed, &expired, &forged]
            .iter()
            .all(|id| !terminal(e, id).is_empty())
    })
    .await;
    assert!(completed(&env.events(), &failed, "failed"));
    wait_dead_letters(&env, 3).await;
    // 4. A dead letter published straight to the dead-letter exchange, with
    // the failed one's seal on a stale command of its own.
    let planted = new_id("dl-planted");
    let b = decommission(&planted, &inst(3));
    let mut h = signed_at("k1", t - 60, &b)
        .headers()
        .clone()
        .unwrap_or_default();
    for (k, v) in [
        ("x-lifecycle-dead-letter-reason", "failed"),
        ("x-lifecycle-error-code", "Operation.Forbidden"),
        ("x-lifecycle-error-message", "forbidden"),
        ("x-lifecycle-source-queue", "lifecycle.decommission"),
    ] {
        h.insert(k.into(), long(v));
    }
    h.insert(
        "x-lifecycle-dead-letter-seal".into(),
        long(&dead_letter_seal(&env, &failed).await),
    );
    env.publish_to(
        "lifecycle.dead-letter",
        "lifecycle.decommission",
        &b,
        json_props().with_headers(h),
    )
    .await;
    // Every one of them stale now.
    while now() <= t + MAX_AGE {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = env.requests().await.len();

    // Plain replay leaves stale signed dead letters where they are, saying why.
    let (code, stdout, stderr) = env
        .run_cli_with(&["dead-letters", "replay"], &CLI_SIGNING)
        .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for id in [&failed, &expired, &planted] {
        assert!(
            stderr.contains(&format!("left {id} in the dead-letter queue: signed")),
            "{id}: {stderr}"
        );
    }
    assert!(stderr.contains("0 dead letter(s) replayed"), "{stderr}");
    assert_eq!(env.queue_len("lifecycle.dead-letter").await, 4);

    // With --re-sign-within: only the one a worker vouched for is signed again.
    let (code, stdout, stderr) = env
        .run_cli_with(
            &["dead-letters", "replay", "--re-sign-within", "1h"],
            &CLI_SIGNING,
        )
        .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "replayed {failed} to lifecycle.decommission (signed again now)"
        )),
        "{stdout}\n{stderr}"
    );
    for id in [&expired, &planted] {
        assert!(
            stderr.contains(&format!(
                "left {id} in the dead-letter queue: not signed again: no worker vouched"
            )),
            "{id}: {stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("left {forged} in the dead-letter queue: not signed again: the command names an unknown publisher key")),
        "{stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("secret-k1"));
    env.wait_for("the re-signed command completes", T, |e| {
        completed(e, &failed, "succeeded")
    })
    .await;
    assert_eq!(env.queue_len("lifecycle.dead-letter").await, 3);
    let reqs = env.requests().await;
    assert_eq!(reqs.len(), calls + 1, "one call, the re-signed command's");
    let d = env.deregistrations().await;
    assert!(d.contains_key(&inst(0)), "{d:?}");
    for i in 1..=3 {
        assert!(!d.contains_key(&inst(i)), "{d:?}");
    }
}

/// Waits until the dead-letter queue holds `n` messages.
async fn wait_dead_letters(env: &Env, n: u32) {
    let deadline = Instant::now() + T;
    while env.queue_len("lifecycle.dead-letter").await < n {
        assert!(Instant::now() < deadline, "{n} dead letters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dead-letter seal the worker put on `command_id`'s dead letter, read
/// by taking the queue's messages and putting them back.
async fn dead_letter_seal(env: &Env, command_id: &str) -> String {
    let chan = env.conn.create_channel().await.expect("channel");
    let mut seal = None;
    let mut taken = Vec::new();
    while let Some(m) = chan
        .basic_get(
            "lifecycle.dead-letter".into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .expect("get")
    {
        if String::from_utf8_lossy(&m.delivery.data).contains(command_id)
            && let Some(AMQPValue::LongString(s)) = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-lifecycle-dead-letter-seal"))
        {
            seal = Some(String::from_utf8_lossy(s.as_bytes()).into_owned());
        }
        taken.push(m.delivery);
    }
    for d in taken {
        d.acker
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("requeue");
    }
    let _ = chan.close(200, "done".into()).await;
    seal.unwrap_or_else(|| panic!("{command_id}'s dead letter is sealed"))
}

/// A fenced block of the README that starts with `first_line`.
fn readme_block(first_line: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = readme
        .find(&format!("\n{first_line}\n"))
        .unwrap_or_else(|| panic!("the README has a block starting {first_line:?}"));
    let rest = &readme[start + 1..];
    rest[..rest.find("\n```").expect("the block ends")].to_owned() + "\n"
}

/// Runs `program` with `args` and `envs`; its stdout (it must succeed).
fn run_tool(program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README's publisher examples, run for real: the Python one with a
/// stand-in `pika` that records what it would publish, the shell one with a
/// stand-in `rabbitmqadmin`; what they would publish is then published, and
/// the worker must carry both out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_publisher_examples_are_accepted() {
    let mut seed = seed_instances(0);
    let mut hosts = Vec::new();
    for (i, host) in ["web-1", "web-2"].iter().enumerate() {
        let mut instance = instance_json(&inst(i), None);
        instance["Hostname"] = json!(host);
        hosts.push(instance);
    }
    seed["Instances"] = json!(hosts);
    let env = Env::new(seed).await;
    let _w = signed_worker(&env, &[]).await;
    let dir = env.tmp.path();
    let envs = [
        ("KEY_ID", "k1"),
        ("KEY_SECRET", "secret-k1"),
        ("AMQP_URL", "amqp://stand-in"),
    ];

    // Python: the block as it is, `pika` replaced by a recorder.
    let python =
        readme_block("# publish_signed.py: sign and publish one command (pip install pika)");
    std::fs::write(dir.join("publish_signed.py"), python).expect("write");
    std::fs::create_dir_all(dir.join("stub")).expect("stub dir");
    std::fs::write(
        dir.join("stub/pika.py"),
        r#"import base64, json, os
class URLParameters:
    def __init__(self, url): self.url = url
class BasicProperties:
    def __init__(self, **kw): self.kw = kw
class _Channel:
    def confirm_delivery(self): pass
    def basic_publish(self, exchange, routing_key, body, properties, mandatory=False):
        with open(os.environ["PUBLISHED"], "w") as f:
            json.dump({"exchange": exchange, "routing_key": routing_key,
                       "body": base64.b64encode(body).decode(), "props": properties.kw}, f)
class BlockingConnection:
    def __init__(self, params): pass
    def channel(self): return _Channel()
    def close(self): pass
"#,
    )
    .expect("stub");
    let published = dir.join("python.json");
    let stub = dir.join("stub");
    let mut python_env = envs.to_vec();
    python_env.push(("PYTHONPATH", stub.to_str().expect("utf-8")));
    python_env.push(("PUBLISHED", published.to_str().expect("utf-8")));
    let script = dir.join("publish_signed.py");
    run_tool("python3", &[script.to_str().expect("utf-8")], &python_env);
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&published).expect("recorded"))
        .expect("json");
    let body = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        p["body"].as_str().expect("body"),
    )
    .expect("base64");
    let mut h = FieldTable::default();
    for (k, v) in p["props"]["headers"].as_object().expect("headers") {
        h.insert(
            k.as_str().into(),
            long(v.as_str().expect("a string header")),
        );
    }
    let props = BasicProperties::default()
        .with_content_type(p["props"]["content_type"].as_str().expect("ct").into())
        .with_headers(h);
    env.publish_to(
        p["exchange"].as_str().expect("exchange"),
        p["routing_key"].as_str().expect("key"),
        &body,
        props,
    )
    .await;

    // Shell: the block as it is, after a stand-in rabbitmqadmin.
    let shell = readme_block("# publish_signed.sh: sign with openssl, publish with rabbitmqadmin");
    let args_file = dir.join("rabbitmqadmin.args");
    let script =
        format!("set -eu\nrabbitmqadmin() {{ printf '%s\\n' \"$@\" > \"$ARGS\"; }}\n{shell}");
    let mut shell_env = envs.to_vec();
    shell_env.push(("ARGS", args_file.to_str().expect("utf-8")));
    run_tool("bash", &["-c", &script], &shell_env);
    let args = std::fs::read_to_string(&args_file).expect("recorded");
    let arg = |name: &str| -> String {
        args.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}= in {args}"))
            .to_owned()
    };
    let props: Value = serde_json::from_str(&arg("properties")).expect("properties json");
    let mut h = FieldTable::default();
    for (k, v) in props["headers"].as_object().expect("headers") {
        h.insert(
            k.as_str().into(),
            long(v.as_str().expect("a string header")),
        );
    }
    let sh_props = BasicProperties::default()
        .with_content_type(props["content_type"].as_str().expect("ct").into())
        .with_headers(h);
    env.publish_to(
        &arg("exchange"),
        &arg("routing_key"),
        arg("payload").as_bytes(),
        sh_props,
    )
    .await;

    env.wait_for("both examples' commands", T, |e| {
        completed(e, "offboard-web-1", "succeeded") && completed(e, "offboard-web-2", "succeeded")
    })
    .await;
    let d = env.deregistrations().await;
    assert!(
        d.contains_key(&inst(0)) && d.contains_key(&inst(1)),
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scopes_stop_start_up_naming_the_key_and_the_part() {
    let env = Env::new(seed_instances(0)).await;
    let mut vars = CLI_SIGNING.to_vec();
    vars.push((
        "LIFECYCLE__SECURITY__KEY_SCOPES",
        "soc=leak-alert:*:*, off=decommission:cn-hangzhou",
    ));
    let (code, _, stderr) = env.run_cli_with(&["run"], &vars).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("security.key_scopes")
            && stderr.contains("key \"off\"")
            && stderr.contains("\"decommission:cn-hangzhou\""),
        "{stderr}"
    );
    assert!(!SECRETS.iter().any(|s| stderr.contains(s)), "{stderr}");
}
