//! The hostile corpus (`tests/fixtures/hostile/corpus.json`) replayed against a
//! live worker, and signed-command authentication end to end (CONTRACT
//! sections 3, 5 and 6). See `tests/e2e/support/mod.rs`.

use crate::corpus::load;

use crate::support::*;
use hmac::{Hmac, Mac};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

async fn wait_queue_len(env: &Env, queue: &str, n: u32) {
    let deadline = std::time::Instant::now() + T;
    loop {
        let len = env.queue_len(queue).await;
        if len == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{queue} holds {len}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn correlation(d: &lapin::message::Delivery) -> String {
    d.properties
        .correlation_id()
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default()
}

/// How the corpus is sent to the worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signing {
    /// Signatures not required; no signature headers.
    NotRequired,
    /// Signatures required, none given: every case is `unauthenticated`.
    Unsigned,
    /// Signatures required and given (k1): each case keeps its own reason.
    SignedK1,
}

/// Publishes every corpus case and checks: exactly one `command.rejected` each,
/// with the expected reason, no API call, one dead letter each (drained).
async fn replay_corpus(env: &Env, signing: Signing) {
    let cases = load();
    let n = cases.len();
    assert!(n >= 60, "corpus has {n} cases");
    let base = env.events().len();
    let (reply_to, replies) = reply_queue(env).await;
    // Each case is labelled by its correlation id (its name) and asks for a
    // reply, so its terminal event can be matched without touching message_id
    // (which would change the missing_command_id cases).
    for case in &cases {
        let body = case.body();
        let mut props = BasicProperties::default()
            .with_reply_to(reply_to.as_str().into())
            .with_correlation_id(case.name.as_str().into());
        if signing == Signing::SignedK1 {
            props = props.with_headers(sig_headers(Some("k1"), Some(&hmac_hex("secret1", &body))));
        }
        if let Some(ct) = &case.content_type {
            props = props.with_content_type(ct.as_str().into());
        }
        if let Some(id) = &case.message_id {
            props = props.with_message_id(id.as_str().into());
        }
        env.publish(&case.kind, &body, props).await;
    }
    let got = wait_events(&replies, "one reply per case", T, |r| r.len() >= n).await;
    let evs = env
        .wait_for("one command.rejected per case", T, |e| {
            e[base..]
                .iter()
                .filter(|e| e.ty() == "command.rejected")
                .count()
                >= n
        })
        .await;
    // Every case settled (acknowledged after its rejection was confirmed):
    // a duplicate would have been published by now.
    until_settled(env, T).await;
    let got_now = replies.lock().expect("lock").clone();
    assert_eq!(got_now.len(), n, "exactly one reply per case");
    let evs_now = env.events().split_off(base);
    assert_eq!(
        evs_now.len(),
        evs.len() - base,
        "no event after the rejections"
    );
    assert!(
        evs_now.iter().all(|e| e.ty() == "command.rejected"),
        "only rejections: {:#?}",
        evs_now
            .iter()
            .filter(|e| e.ty() != "command.rejected")
            .collect::<Vec<_>>()
    );
    let by_case: BTreeMap<&str, Vec<&Ev>> = got.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.correlation_id.as_deref().unwrap_or(""))
            .or_default()
            .push(r);
        m
    });
    let mut failures = Vec::new();
    for case in &cases {
        let Some(rs) = by_case.get(case.name.as_str()) else {
            failures.push(format!("{}: no terminal event", case.name));
            continue;
        };
        if rs.len() != 1 {
            failures.push(format!("{}: {} terminal events", case.name, rs.len()));
            continue;
        }
        let r = rs[0];
        if r.ty() != "command.rejected" || r.outcome() != "rejected" {
            failures.push(format!("{}: {} {}", case.name, r.ty(), r.outcome()));
        }
        let reason = match signing {
            Signing::Unsigned => "unauthenticated",
            _ => case.reason.as_str(),
        };
        if r.body["reason"] != reason {
            failures.push(format!(
                "{}: reason {} (expected {reason})",
                case.name, r.body["reason"]
            ));
        }
        if r.body["command_kind"] != case.kind.as_str() {
            failures.push(format!("{}: kind {}", case.name, r.body["command_kind"]));
        }
        // The same event went to the event exchange, once.
        let same = evs_now
            .iter()
            .filter(|e| e.body["event_id"] == r.body["event_id"])
            .count();
        if same != 1 {
            failures.push(format!("{}: on the event exchange {same} times", case.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Not one API call.
    let reqs = env.requests().await;
    assert!(
        reqs.is_empty(),
        "hostile commands reached the API: {reqs:#?}"
    );

    // One dead letter per case, byte for byte, with the rejection headers.
    wait_queue_len(env, "lifecycle.dead-letter", u32::try_from(n).expect("n")).await;
    let dls = env.drain_queue("lifecycle.dead-letter").await;
    let mut dl_failures = Vec::new();
    let dl_by_case: BTreeMap<String, Vec<&lapin::message::Delivery>> =
        dls.iter().fold(BTreeMap::new(), |mut m, d| {
            m.entry(correlation(d)).or_default().push(d);
            m
        });
    assert_eq!(dls.len(), n, "one dead letter per case");
    for case in &cases {
        let Some(ds) = dl_by_case.get(&case.name) else {
            dl_failures.push(format!("{}: no dead letter", case.name));
            continue;
        };
        if ds.len() != 1 {
            dl_failures.push(format!("{}: {} dead letters", case.name, ds.len()));
            continue;
        }
        let d = ds[0];
        let props = format!("{:?}", d.properties);
        if let Some(secret) = SECRETS.iter().find(|s| props.contains(*s)) {
            dl_failures.push(format!("{}: dead letter leaks {secret}", case.name));
        }
        if d.data != case.body() {
            dl_failures.push(format!("{}: body changed", case.name));
        }
        let want = [
            ("x-lifecycle-dead-letter-reason", "rejected".to_owned()),
            (
                "x-lifecycle-error-code",
                match signing {
                    Signing::Unsigned => "unauthenticated".to_owned(),
                    _ => case.reason.clone(),
                },
            ),
            (
                "x-lifecycle-source-queue",
                format!("lifecycle.{}", case.kind),
            ),
        ];
        for (h, v) in want {
            if header_str(d, h).as_deref() != Some(v.as_str()) {
                dl_failures.push(format!("{}: {h} = {:?}", case.name, header_str(d, h)));
            }
        }
        if d.properties.message_id().as_ref().map(|m| m.to_string()) != case.message_id {
            dl_failures.push(format!("{}: message_id not kept", case.name));
        }
    }
    assert!(dl_failures.is_empty(), "{dl_failures:#?}");
}

/// The corpus's timestamp cases, signed with k1 over the header's text: one
/// rejection each with its reason, one dead letter each (drained), no API
/// call, and the worker goes on.
async fn replay_timestamp_cases(env: &Env) {
    let cases = crate::corpus::load_timestamp_cases();
    let n = cases.len();
    let calls = env.requests().await.len();
    let (reply_to, replies) = reply_queue(env).await;
    for case in &cases {
        let body = case.body.as_bytes();
        let mut headers = FieldTable::default();
        headers.insert(
            "x-lifecycle-key-id".into(),
            AMQPValue::LongString(LongString::from("k1")),
        );
        headers.insert("x-lifecycle-timestamp".into(), case.value());
        let sig = sign_at("secret1", &case.signing_text(), body);
        headers.insert(
            "x-lifecycle-signature".into(),
            AMQPValue::LongString(LongString::from(sig)),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(reply_to.as_str().into())
            .with_correlation_id(case.name.as_str().into())
            .with_headers(headers);
        env.publish(&case.kind, body, props).await;
    }
    let got = wait_events(&replies, "one reply per timestamp case", T, |r| {
        r.len() >= n
    })
    .await;
    let mut failures = Vec::new();
    for case in &cases {
        let mine: Vec<&Ev> = got
            .iter()
            .filter(|r| r.correlation_id.as_deref() == Some(case.name.as_str()))
            .collect();
        match mine.as_slice() {
            [r] if r.ty() == "command.rejected" && r.body["reason"] == case.reason.as_str() => {}
            other => failures.push(format!("{}: {other:#?}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(env.requests().await.len(), calls, "no API call");
    wait_queue_len(env, "lifecycle.dead-letter", u32::try_from(n).expect("n")).await;
    let dls = env.drain_queue("lifecycle.dead-letter").await;
    assert_eq!(dls.len(), n, "one dead letter per timestamp case");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_is_rejected_live_without_any_api_call() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_worker(&[]).await;
    replay_corpus(&env, Signing::NotRequired).await;

    // Still alive and working.
    assert!(matches!(w.readyz().await, Some((200, _))));
    let good = new_id("after-hostile");
    env.send_json("decommission", &decommission(&good, &inst(0)))
        .await;
    env.wait_for("a good command after the corpus", T, |e| {
        completed(e, &good, "succeeded")
    })
    .await;
    assert_eq!(env.requests().await.len(), 1);
}

/// When this run's commands were signed (decimal Unix seconds): once, so a
/// signature and its timestamp header always agree; the default age limit
/// (five minutes) outlasts the test.
fn signed_at() -> &'static str {
    static AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            .to_string()
    })
}

/// The contract's signature: HMAC-SHA256 of `<timestamp>.<body>`.
fn sign_at(key: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("hmac key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The signature of `body` at [`signed_at`].
fn hmac_hex(key: &str, body: &[u8]) -> String {
    sign_at(key, signed_at(), body)
}

fn signed_props(key_id: Option<&str>, signature: Option<&str>, label: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id(label.into())
        .with_headers(sig_headers(key_id, signature))
}

fn sig_headers(key_id: Option<&str>, signature: Option<&str>) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(k) = key_id {
        headers.insert(
            "x-lifecycle-key-id".into(),
            AMQPValue::LongString(LongString::from(k)),
        );
    }
    if key_id.is_some() || signature.is_some() {
        headers.insert(
            "x-lifecycle-timestamp".into(),
            AMQPValue::LongString(LongString::from(signed_at())),
        );
    }
    if let Some(s) = signature {
        headers.insert(
            "x-lifecycle-signature".into(),
            AMQPValue::LongString(LongString::from(s)),
        );
    }
    headers
}

/// (label, body, key id, signature) of a command that must be refused.
type Unauthentic = (&'static str, Vec<u8>, Option<&'static str>, Option<String>);

const SECRETS: [&str; 3] = ["secret1", "secret2", KEY_SECRET];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_are_required_and_no_secret_leaks() {
    let env = Env::new(seed_instances(8)).await;
    let w = env
        .start_process(&[
            ("LIFECYCLE__SECURITY__REQUIRE_SIGNED_COMMANDS", "true"),
            (
                "LIFECYCLE__SECURITY__COMMAND_KEYS",
                "k1:secret1, k2:secret2",
            ),
            ("RUST_LOG", "trace"),
        ])
        .await;
    // The corpus: unsigned, all unauthenticated; signed, each its own reason.
    replay_corpus(&env, Signing::Unsigned).await;
    replay_corpus(&env, Signing::SignedK1).await;
    replay_timestamp_cases(&env).await;
    let base = env.events().len();
    let body = |label: &str, i: usize| decommission(&format!("signed-{label}"), &inst(i));
    let mut bad: Vec<Unauthentic> = Vec::new();
    let b = body("unsigned", 0);
    bad.push(("unsigned", b, None, None));
    let b = body("no-key-id", 1);
    let sig = hmac_hex("secret1", &b);
    bad.push(("no-key-id", b, None, Some(sig)));
    let b = body("no-signature", 1);
    bad.push(("no-signature", b, Some("k1"), None));
    let b = body("unknown-key", 2);
    let sig = hmac_hex("secret1", &b);
    bad.push(("unknown-key", b, Some("k3"), Some(sig)));
    let b = body("bad-signature", 3);
    let sig = hmac_hex("secret2", &b); // k2's secret under k1's id
    bad.push(("bad-signature", b, Some("k1"), Some(sig)));
    let b = body("upper-case-hex", 3);
    let sig = hmac_hex("secret1", &b).to_uppercase();
    bad.push(("upper-case-hex", b, Some("k1"), Some(sig)));
    let signed = body("modified", 4);
    let sig = hmac_hex("secret1", &signed);
    let modified = body("modified", 5); // same command id, another target
    assert_ne!(signed, modified);
    bad.push(("modified", modified, Some("k1"), Some(sig)));

    for (label, b, key, sig) in &bad {
        env.publish("decommission", b, signed_props(*key, sig.as_deref(), label))
            .await;
    }
    let ok1 = body("good-k1", 6);
    let ok2 = body("good-k2", 7);
    env.publish(
        "decommission",
        &ok1,
        signed_props(Some("k1"), Some(&hmac_hex("secret1", &ok1)), "good-k1"),
    )
    .await;
    env.publish(
        "decommission",
        &ok2,
        signed_props(Some("k2"), Some(&hmac_hex("secret2", &ok2)), "good-k2"),
    )
    .await;

    let evs = env
        .wait_for("every command's terminal event", T, |e| {
            completed(e, "signed-good-k1", "succeeded")
                && completed(e, "signed-good-k2", "succeeded")
                && e[base..]
                    .iter()
                    .filter(|e| e.ty() == "command.rejected")
                    .count()
                    >= bad.len()
        })
        .await;
    let rejected: Vec<&Ev> = evs[base..]
        .iter()
        .filter(|e| e.ty() == "command.rejected")
        .collect();
    assert_eq!(rejected.len(), bad.len(), "{rejected:#?}");
    for (label, ..) in &bad {
        let id = format!("signed-{label}");
        let mine: Vec<&&Ev> = rejected.iter().filter(|e| e.command_id() == id).collect();
        assert_eq!(mine.len(), 1, "{label}: {rejected:#?}");
        assert_eq!(mine[0].body["reason"], "unauthenticated", "{label}");
        assert_eq!(mine[0].outcome(), "rejected", "{label}");
        assert_eq!(count(&evs, &id, "command.completed"), 0, "{label}");
    }

    // Only the two authentic commands reached the API.
    let reqs = env.requests().await;
    let targets: Vec<&Value> = reqs.iter().map(|r| &r["params"]["InstanceId"]).collect();
    assert_eq!(
        reqs.len(),
        2,
        "only authentic commands are executed: {reqs:#?}"
    );
    assert!(targets.contains(&&json!(inst(6))) && targets.contains(&&json!(inst(7))));
    let d = env.deregistrations().await;
    assert_eq!(d.len(), 2, "{d:?}");

    // Dead letters: one per unauthentic command, body byte for byte.
    wait_queue_len(
        &env,
        "lifecycle.dead-letter",
        u32::try_from(bad.len()).expect("len"),
    )
    .await;
    let dls = env.drain_queue("lifecycle.dead-letter").await;
    assert_eq!(dls.len(), bad.len());
    let mut leaks = Vec::new();
    for (label, b, ..) in &bad {
        let d = dls
            .iter()
            .find(|d| correlation(d) == *label)
            .unwrap_or_else(|| panic!("{label}: no dead letter"));
        assert_eq!(&d.data, b, "{label}: body kept byte for byte");
        assert_eq!(
            header_str(d, "x-lifecycle-dead-letter-reason").as_deref(),
            Some("rejected"),
            "{label}"
        );
        assert_eq!(
            header_str(d, "x-lifecycle-error-code").as_deref(),
            Some("unauthenticated"),
            "{label}"
        );
        let headers = format!("{:?}", d.properties);
        for s in SECRETS {
            if headers.contains(s) {
                leaks.push(format!("dead letter {label}: {s} in {headers}"));
            }
        }
    }

    // No secret in any event or log line, at trace level.
    let stderr = w.kill_and_log();
    assert!(
        stderr.contains("TRACE"),
        "trace logging is on: {} bytes",
        stderr.len()
    );
    for e in env.events() {
        let text = e.body.to_string();
        for s in SECRETS {
            if text.contains(s) {
                leaks.push(format!("event {}: {s}", e.ty()));
            }
        }
    }
    for line in stderr.lines() {
        for s in SECRETS {
            if line.contains(s) {
                leaks.push(format!("log line: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
}
