//! No secret in any log line (even at `RUST_LOG=trace`), event, reply or dead
//! letter, across every path: success, immediate retries, a permanent failure,
//! a rejection, and a credential failure that parks and then recovers.

use crate::support::*;
use hmac::{Hmac, Mac};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "sts-token-do-not-print-6f1e";
const KEY1: &str = "command-key-do-not-print-1";
const KEY2: &str = "command-key-do-not-print-2";

fn signed(body: &[u8], label: &str) -> BasicProperties {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY1.as_bytes()).expect("key");
    mac.update(format!("{now}.").as_bytes());
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut headers = FieldTable::default();
    headers.insert(
        "x-lifecycle-key-id".into(),
        AMQPValue::LongString(LongString::from("k1")),
    );
    headers.insert(
        "x-lifecycle-timestamp".into(),
        AMQPValue::LongString(LongString::from(now)),
    );
    headers.insert(
        "x-lifecycle-signature".into(),
        AMQPValue::LongString(LongString::from(sig)),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(label.into())
        .with_headers(headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_the_process() {
    let env = Env::new(seed_instances(5)).await;
    let keys = format!("k1:{KEY1},k2:{KEY2}");
    let w = env
        .start_process(&[
            ("RUST_LOG", "trace"),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN),
            ("LIFECYCLE__SECURITY__REQUIRE_SIGNED_COMMANDS", "true"),
            ("LIFECYCLE__SECURITY__COMMAND_KEYS", keys.as_str()),
        ])
        .await;

    // Success, then immediate retries, then a permanent failure (dead letter).
    let ok = new_id("ok");
    let body = decommission(&ok, &inst(0));
    env.publish("decommission", &body, signed(&body, "ok"))
        .await;
    env.wait_for("success", T, |e| completed(e, &ok, "succeeded"))
        .await;

    env.set_faults(json!({"fail_next": [{"action": "DeregisterManagedInstance", "count": 2, "code": "InternalError.Dispatch", "status": 500}]}))
        .await;
    let retried = new_id("retried");
    let body = decommission(&retried, &inst(1));
    env.publish("decommission", &body, signed(&body, "retried"))
        .await;
    env.wait_for("retried success", T, |e| {
        completed(e, &retried, "succeeded")
    })
    .await;

    env.set_faults(json!({"fail_next": [{"action": "DeregisterManagedInstance", "count": 1, "code": "Operation.Forbidden", "status": 403}]}))
        .await;
    let failed = new_id("failed");
    let body = decommission(&failed, &inst(2));
    env.publish("decommission", &body, signed(&body, "failed"))
        .await;
    env.wait_for("failure", T, |e| completed(e, &failed, "failed"))
        .await;

    // A rejection (bad signature).
    let bad = new_id("bad");
    let body = decommission(&bad, &inst(3));
    env.publish("decommission", &body, signed(b"other body", "bad"))
        .await;
    env.wait_for("rejection", T, |e| count(e, &bad, "command.rejected") == 1)
        .await;

    // A credential failure: the key is revoked, the command waits; then it returns.
    env.sim_send(reqwest::Method::DELETE, "/_sim/keys/testid", None)
        .await;
    let parked = new_id("parked");
    let body = decommission(&parked, &inst(4));
    env.publish("decommission", &body, signed(&body, "parked"))
        .await;
    w.wait_readyz(503, T).await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/keys",
        Some(json!({"AccessKeyId": "testid", "AccessKeySecret": "testsecret"})),
    )
    .await;
    env.wait_for("recovery", T, |e| completed(e, &parked, "succeeded"))
        .await;
    w.wait_readyz(200, T).await;

    // The key the worker derives from KEY1 to seal its retry copies (auth::seal).
    let mut derive = Hmac::<sha2::Sha256>::new_from_slice(KEY1.as_bytes()).expect("key");
    derive.update(b"lifecycle-worker seal key, v1");
    let seal_key = hex::encode(derive.finalize().into_bytes());
    let secrets = ["testsecret", TOKEN, KEY1, KEY2, seal_key.as_str()];
    let log = w.stderr();
    assert!(log.contains("TRACE"), "the log runs at trace level");
    let events: String = env
        .events()
        .iter()
        .map(|e| e.body.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let dead: Vec<String> = env
        .drain_queue("lifecycle.dead-letter")
        .await
        .iter()
        .map(|d| format!("{} {:?}", String::from_utf8_lossy(&d.data), d.properties))
        .collect();
    assert!(
        dead.len() >= 2,
        "the failure and the rejection are dead-lettered"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", w.http_port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let readyz = w.readyz().await.map(|r| r.1).unwrap_or_default();
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!events.contains(secret), "{secret} in an event");
        assert!(
            !dead.iter().any(|d| d.contains(secret)),
            "{secret} in a dead letter"
        );
        assert!(!metrics.contains(secret), "{secret} in /metrics");
        assert!(!readyz.contains(secret), "{secret} in /readyz");
    }
}
