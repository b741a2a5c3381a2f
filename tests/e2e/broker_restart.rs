//! The worker survives a broker restart (CONTRACT section 6): its own test
//! binary with a single test, because `rabbitmqctl stop_app` stops the broker
//! for every vhost. See `tests/e2e/support/mod.rs`.

use crate::support::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const EVENTS_QUEUE: &str = "e2e.events.durable";

/// The broker application is stopped while this lives; dropping it (also on
/// a panic) starts it again and waits for it.
struct BrokerStopped;

impl BrokerStopped {
    fn stop() -> BrokerStopped {
        let guard = BrokerStopped;
        rabbitmqctl(&["-q", "stop_app"]);
        guard
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        for args in [&["-q", "start_app"][..], &["-q", "await_startup"][..]] {
            let _ = Command::new("rabbitmqctl")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn completions(evs: &[Ev], ids: &[String]) -> usize {
    ids.iter()
        .filter(|id| {
            evs.iter()
                .any(|e| e.command_id() == id.as_str() && e.ty() == "command.completed")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_survives_a_broker_restart_and_loses_nothing() {
    const BEFORE: usize = 8;
    const AFTER: usize = 4;
    let mut env = Env::new_exclusive(seed_instances(BEFORE + AFTER)).await;
    // Events must outlive the test's own connection: a durable queue, read by
    // a collector that is started again after the restart.
    env.declare_durable_events_queue(EVENTS_QUEUE).await;
    let events: Events = Arc::default();
    collect_into(&env.conn, EVENTS_QUEUE, events.clone()).await;
    let w = env
        .start_worker(&[
            ("LIFECYCLE__WORKER__CONCURRENCY", "2"),
            ("LIFECYCLE__AMQP__RECONNECT_INITIAL_MS", "100"),
            ("LIFECYCLE__AMQP__RECONNECT_MAX_MS", "1000"),
        ])
        .await;
    env.set_faults(json!({"latency_ms": 500})).await;
    let before: Vec<String> = (0..BEFORE).map(|i| new_id(&format!("pre{i}"))).collect();
    for (i, id) in before.iter().enumerate() {
        env.send_json("decommission", &decommission(id, &inst(i)))
            .await;
    }
    // Some done, the rest queued or in flight (2 at a time, 500 ms each).
    wait_events(&events, "a first completion", T, |e| {
        completions(e, &before) >= 1
    })
    .await;

    // The calls in flight stay unanswered until the broker is back, so it
    // stops mid-batch however long stopping it takes.
    env.set_faults(json!({"latency_ms": 500, "hold": true}))
        .await;
    let guard = tokio::task::spawn_blocking(BrokerStopped::stop)
        .await
        .expect("join");
    let done_before = completions(&events.lock().expect("lock"), &before);
    assert!(
        done_before < BEFORE,
        "stopped too late: every command was done already"
    );
    // Not ready while the broker is away.
    let body = w.wait_readyz(503, Duration::from_secs(10)).await;
    assert!(!body.is_empty(), "503 says why");
    // It keeps trying while the broker is away: a reconnect attempt failed.
    until("a failed reconnect attempt", T, || async {
        w.readyz()
            .await
            .filter(|(status, body)| *status == 503 && body.contains("broker unavailable"))
    })
    .await;
    // Still down, still not ready, still alive.
    assert!(
        matches!(w.readyz().await, Some((503, _))),
        "ready without a broker"
    );
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .expect("join");
    env.set_faults(json!({"latency_ms": 500})).await;

    // Back: ready again, and the test reconnects too.
    w.wait_readyz(200, T).await;
    env.reconnect().await;
    collect_into(&env.conn, EVENTS_QUEUE, events.clone()).await;
    let after: Vec<String> = (0..AFTER).map(|i| new_id(&format!("post{i}"))).collect();
    for (i, id) in after.iter().enumerate() {
        env.send_json("decommission", &decommission(id, &inst(BEFORE + i)))
            .await;
    }
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    let evs = wait_events(&events, "every command completed", T, |e| {
        completions(e, &all) == all.len()
    })
    .await;
    for id in &all {
        let outcomes: Vec<&str> = evs
            .iter()
            .filter(|e| e.command_id() == id.as_str() && e.ty() == "command.completed")
            .map(Ev::outcome)
            .collect();
        // At least once: a command whose ack was lost with the broker may be
        // completed twice, but never fails.
        assert!(
            !outcomes.is_empty() && outcomes.iter().all(|o| *o == "succeeded"),
            "{id}: {outcomes:?}"
        );
    }
    let d = env.deregistrations().await;
    for i in 0..BEFORE + AFTER {
        assert_eq!(d.get(&inst(i)), Some(&json!(1)), "{}: {d:?}", inst(i));
    }
    assert_eq!(d.len(), BEFORE + AFTER, "{d:?}");
    assert_eq!(env.queue_len("lifecycle.decommission").await, 0);
    assert_eq!(env.queue_len("lifecycle.dead-letter").await, 0);
    // The topology is still (or again) in place and quorum.
    let queues = env.list("queues", &["name", "arguments"]).await;
    assert!(
        queues
            .iter()
            .any(|r| r[0] == "lifecycle.decommission" && r[1].contains("quorum")),
        "{queues:#?}"
    );
    w.wait_readyz(200, T).await;
}
