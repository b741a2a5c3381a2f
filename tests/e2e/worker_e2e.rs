//! End-to-end tests: the worker binary against RabbitMQ (a private vhost per
//! test) and the in-process ECS simulator. See `tests/e2e/support/mod.rs`.

use crate::support::*;
use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn dereg_calls(reqs: &[Value]) -> Vec<&Value> {
    reqs.iter()
        .filter(|r| r["action"] == "DeregisterManagedInstance")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_by_instance_id() {
    let env = Env::new(seed_instances(2)).await;
    let _w = env.start_worker(&[]).await;
    let id = new_id("c1");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    let evs = env
        .wait_for("command.completed", T, |e| completed(e, &id, "succeeded"))
        .await;
    let mine: Vec<&Ev> = evs.iter().filter(|e| e.command_id() == id).collect();
    let types: Vec<&str> = mine.iter().map(|e| e.ty()).collect();
    assert_eq!(
        types,
        ["instance.deregistered", "command.completed"],
        "{mine:#?}"
    );
    for e in &mine {
        assert_eq!(e.routing_key, e.ty(), "routing key = type");
        assert_eq!(e.outcome(), "succeeded");
        assert_eq!(e.body["command_kind"], "decommission");
        assert_eq!(e.body["region_id"], REGION);
    }
    assert_eq!(mine[0].body["attempts"], 1);
    // The command was acknowledged: nothing left on the queue, ready or
    // unacknowledged, while the worker lives, and still nothing once it is gone.
    until("the command is acknowledged", T, || async {
        let rows = env
            .list(
                "queues",
                &["name", "messages_ready", "messages_unacknowledged"],
            )
            .await;
        rows.iter()
            .any(|r| r[0] == "lifecycle.decommission" && r[1] == "0" && r[2] == "0")
            .then_some(())
    })
    .await;
    drop(_w);
    assert_eq!(env.queue_len("lifecycle.decommission").await, 0);
    let reqs = env.requests().await;
    let calls = dereg_calls(&reqs);
    assert_eq!(calls.len(), 1, "{reqs:#?}");
    assert_eq!(calls[0]["params"]["ClientToken"], id.as_str());
    assert_eq!(calls[0]["params"]["InstanceId"], inst(0).as_str());
    let d = env.deregistrations().await;
    assert_eq!(d.get(&inst(0)), Some(&json!(1)), "{d:?}");
    assert_eq!(d.len(), 1, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_commands_are_dead_lettered_and_never_executed() {
    let env = Env::new(seed_instances(2)).await;
    let w = env.start_worker(&[]).await;
    let garbage: &[u8] = b"\xff\xfenot json at all {";
    let wrong_ct = decommission(&new_id("ct"), &inst(0));
    let dup = format!(
        r#"{{"command_id":"{}","region_id":"{REGION}","instance_id":"{}","instance_id":"{}"}}"#,
        new_id("dup"),
        inst(0),
        inst(1)
    )
    .into_bytes();
    let json_props = || BasicProperties::default().with_content_type("application/json".into());
    env.publish(
        "decommission",
        garbage,
        json_props().with_message_id("garbage-1".into()),
    )
    .await;
    env.publish(
        "decommission",
        &wrong_ct,
        BasicProperties::default().with_content_type("text/plain".into()),
    )
    .await;
    env.publish("decommission", &dup, json_props()).await;
    let rejected = |e: &[Ev]| e.iter().filter(|e| e.ty() == "command.rejected").count();
    env.wait_for("3 rejections", T, |e| rejected(e) >= 3).await;
    // Then a good command still works (and proves the worker is alive).
    let good = new_id("good");
    env.send_json("decommission", &decommission(&good, &inst(1)))
        .await;
    let evs = env
        .wait_for("good command", T, |e| completed(e, &good, "succeeded"))
        .await;
    assert_eq!(rejected(&evs), 3, "exactly one rejection each: {evs:#?}");
    for e in evs.iter().filter(|e| e.ty() == "command.rejected") {
        assert_eq!(e.routing_key, "command.rejected");
        assert_eq!(e.outcome(), "rejected");
        assert!(e.body["reason"].is_string(), "{e:?}");
    }
    // Dead letters: byte-for-byte bodies, reason header.
    let dls = env.drain_queue("lifecycle.dead-letter").await;
    assert_eq!(dls.len(), 3, "three dead letters");
    let mut bodies: Vec<Vec<u8>> = dls.iter().map(|d| d.data.clone()).collect();
    bodies.sort();
    let mut expected = vec![garbage.to_vec(), wrong_ct.clone(), dup.clone()];
    expected.sort();
    assert_eq!(bodies, expected);
    for d in &dls {
        assert_eq!(
            header_str(d, "x-lifecycle-dead-letter-reason").as_deref(),
            Some("rejected")
        );
        assert_eq!(
            header_str(d, "x-lifecycle-source-queue").as_deref(),
            Some("lifecycle.decommission")
        );
    }
    // Only the good command reached the API.
    let reqs = env.requests().await;
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0]["params"]["ClientToken"], good.as_str());
    assert!(matches!(w.readyz().await, Some((200, _))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_gets_terminal_event_with_correlation_id() {
    let env = Env::new(seed_instances(1)).await;
    let _w = env.start_worker(&[]).await;
    let (q, replies) = reply_queue(&env).await;
    let id = new_id("reply");
    env.publish(
        "decommission",
        &decommission(&id, &inst(0)),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(q.as_str().into())
            .with_correlation_id("corr-42".into())
            .with_message_id("msg-7".into()),
    )
    .await;
    env.wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    let deadline = std::time::Instant::now() + T;
    loop {
        let got = replies.lock().expect("lock").clone();
        if let Some(r) = got.first() {
            assert_eq!(got.len(), 1, "only the terminal event: {got:#?}");
            assert_eq!(r.ty(), "command.completed");
            assert_eq!(r.command_id(), id);
            assert_eq!(r.correlation_id.as_deref(), Some("corr-42"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failure_goes_through_delayed_retry_then_completes() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_worker(&[]).await;
    // Fail every call until the command has been parked in the first retry queue,
    // i.e. its immediate retries are exhausted.
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 100000,
        "code": "InternalError.Dispatch", "status": 500
    }]}))
    .await;
    let id = new_id("transient");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    until("a delayed-retry copy", T, || async {
        (env.queue_len("lifecycle.retry.1s").await > 0).then_some(())
    })
    .await;
    env.sim_send(reqwest::Method::DELETE, "/_sim/faults", None)
        .await;
    let evs = env
        .wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    assert_eq!(count(&evs, &id, "command.completed"), 1, "{evs:#?}");
    let reqs = env.requests().await;
    let calls = dereg_calls(&reqs);
    let failed = calls.iter().filter(|c| c["http_status"] == 500).count();
    assert!(failed >= 2, "immediate retries happened: {calls:#?}");
    assert_eq!(calls.last().map(|c| c["code"].clone()), Some(json!("OK")));
    let dereg = evs
        .iter()
        .find(|e| e.command_id() == id && e.ty() == "instance.deregistered")
        .expect("instance.deregistered");
    assert_eq!(dereg.outcome(), "succeeded");
    assert_eq!(
        dereg.body["attempts"],
        json!(calls.len()),
        "attempts must count every API attempt across redeliveries ({} calls)",
        calls.len()
    );
    assert!(
        calls
            .iter()
            .all(|c| c["params"]["ClientToken"] == id.as_str())
    );
    let d = env.deregistrations().await;
    assert_eq!(d.get(&inst(0)), Some(&json!(1)), "{d:?}");
    assert!(env.drain_queue("lifecycle.dead-letter").await.is_empty());
    drop(w);
}

const ACT: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234ABCD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_dead_letter_then_replay_completes() {
    let env = Env::new(seed_instances(1)).await;
    let _w = env.start_worker(&[]).await;
    let id = new_id("leak");
    let body = serde_json::to_vec(&json!({
        "command_id": id, "region_id": REGION, "activation_id": ACT
    }))
    .expect("json");
    env.send_json("leak-alert", &body).await;
    let evs = env
        .wait_for("failed completion", T, |e| {
            e.iter()
                .any(|e| e.command_id() == id && e.ty() == "command.completed")
        })
        .await;
    let done = evs
        .iter()
        .find(|e| e.command_id() == id && e.ty() == "command.completed")
        .expect("completed");
    assert!(
        matches!(done.outcome(), "failed" | "partially_failed"),
        "{done:?}"
    );
    // The dead letter is there with the original body (list leaves it in place).
    let dl = until("a dead letter", T, || async {
        (env.queue_len("lifecycle.dead-letter").await == 1).then_some(())
    });
    dl.await;
    let (code, out, err) = env.run_cli(&["dead-letters", "list"]).await;
    assert_eq!(code, Some(0), "list failed: {err}");
    assert!(out.contains(&id), "list shows the command: {out}");
    // Fix the cause: the activation code now exists (never used).
    let mut seed = seed_instances(1);
    seed["Activations"] = json!([activation_json(ACT, 0)]);
    env.sim_send(reqwest::Method::PUT, "/_sim/state", Some(seed))
        .await;
    let (code, _, err) = env.run_cli(&["dead-letters", "replay"]).await;
    assert_eq!(code, Some(0), "replay failed: {err}");
    let evs = env
        .wait_for("second completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    assert_eq!(count(&evs, &id, "command.completed"), 2, "{evs:#?}");
    assert!(
        evs.iter()
            .any(|e| e.command_id() == id && e.ty() == "activation.disabled"),
        "{evs:#?}"
    );
    assert_eq!(env.queue_len("lifecycle.dead-letter").await, 0);
}

/// A wrong secret: the command waits, and the operator reads the service's
/// own answer, string-to-sign included, in `/readyz` and the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_explained_in_readyz_and_the_log() {
    let env = Env::new(seed_instances(1)).await;
    let wrong = "not-the-secret-9c1e";
    let w = env
        .start_process(&[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", wrong)])
        .await;
    let id = new_id("wrong-secret");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    let body = w.wait_readyz(503, T).await;
    let readyz: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    let problem = &readyz["credentials"];
    assert_eq!(problem["code"], "SignatureDoesNotMatch", "{body}");
    assert!(
        problem["message"]
            .as_str()
            .is_some_and(|m| m.contains("server string to sign is:ACS3-HMAC-SHA256\n")),
        "{body}"
    );
    assert_eq!(problem["action"], "DeregisterManagedInstance", "{body}");
    assert_eq!(problem["region"], "cn-hangzhou", "{body}");
    assert_eq!(problem["source"], "environment", "{body}");
    let log = w.stderr();
    assert!(
        log.contains("SignatureDoesNotMatch") && log.contains("server string to sign is:"),
        "{log}"
    );
    assert!(
        !log.contains(wrong) && !body.contains(wrong),
        "the secret leaked"
    );
    assert!(
        env.events_of(&id).is_empty(),
        "the command waits, nothing is published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_credentials_wait_and_unready_then_recover() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_process(&[]).await;
    env.sim_send(
        reqwest::Method::DELETE,
        &format!("/_sim/keys/{KEY_ID}"),
        None,
    )
    .await;
    let id = new_id("cred");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    let body = w.wait_readyz(503, T).await;
    // 503 says why, in the service's words and with where it happened.
    for part in [
        "InvalidAccessKeyId.NotFound",
        "action DeregisterManagedInstance",
        "region cn-hangzhou",
        "credentials from environment",
    ] {
        assert!(body.contains(part), "/readyz lacks {part:?}: {body}");
    }
    let log = w.stderr();
    assert!(
        log.contains("code=InvalidAccessKeyId.NotFound")
            && log.contains("action=DeregisterManagedInstance")
            && log.contains("source=environment"),
        "the log line names code, action and source: {log}"
    );
    // Let it go through at least one delayed redelivery while still refused.
    until("a retried refused call", T, || async {
        let reqs = env.requests().await;
        let refused = reqs
            .iter()
            .filter(|r| r["http_status"].as_u64().is_some_and(|s| s >= 400))
            .count();
        (refused >= 2).then_some(())
    })
    .await;
    let evs = env.events_of(&id);
    assert!(
        evs.iter().all(|e| e.ty() != "command.completed"),
        "a credential failure must not fail the command: {evs:#?}"
    );
    assert!(env.drain_queue("lifecycle.dead-letter").await.is_empty());
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/keys",
        Some(json!({"AccessKeyId": KEY_ID, "AccessKeySecret": KEY_SECRET})),
    )
    .await;
    let evs = env
        .wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    assert_eq!(count(&evs, &id, "command.completed"), 1, "{evs:#?}");
    w.wait_readyz(200, T).await;
    let d = env.deregistrations().await;
    assert_eq!(d.get(&inst(0)), Some(&json!(1)), "{d:?}");
}

fn all_completed(evs: &[Ev], ids: &[String]) -> bool {
    ids.iter().all(|id| {
        evs.iter()
            .any(|e| e.command_id() == id && e.ty() == "command.completed")
    })
}

fn assert_succeeded_once_each(evs: &[Ev], ids: &[String]) {
    for id in ids {
        let outcomes: Vec<&str> = evs
            .iter()
            .filter(|e| e.command_id() == id && e.ty() == "command.completed")
            .map(Ev::outcome)
            .collect();
        assert!(
            !outcomes.is_empty() && outcomes.iter().all(|o| *o == "succeeded"),
            "{id}: {outcomes:?}"
        );
    }
}

async fn assert_each_deregistered_once(env: &Env, n: usize) {
    let d = env.deregistrations().await;
    for i in 0..n {
        assert_eq!(d.get(&inst(i)), Some(&json!(1)), "{}: {d:?}", inst(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_api_call_then_restart_completes_once() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_process(&[]).await;
    env.set_faults(json!({"hold": true})).await;
    let id = new_id("crash");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    // The worker has taken the command; its API call is now in flight.
    until("the command to be taken", T, || async {
        (env.queue_len("lifecycle.decommission").await == 0).then_some(())
    })
    .await;
    until("the API call in flight", T, || async {
        (env.sim_in_flight().await >= 1).then_some(())
    })
    .await;
    assert!(
        env.events_of(&id).is_empty(),
        "killed too late: the call finished already"
    );
    drop(w); // SIGKILL
    env.set_faults(json!({})).await;
    let _w2 = env.start_worker(&[]).await;
    let evs = env
        .wait_for("completion after restart", T, |e| {
            e.iter()
                .any(|e| e.command_id() == id && e.ty() == "command.completed")
        })
        .await;
    let done = evs
        .iter()
        .find(|e| e.command_id() == id && e.ty() == "command.completed")
        .expect("completed");
    assert!(
        matches!(done.outcome(), "succeeded" | "already_done"),
        "{done:?}"
    );
    assert_each_deregistered_once(&env, 1).await;
}

/// The broker force-closes the worker's publishing connection mid-batch, then
/// (after it reconnected) its consuming one: either loss ends the session,
/// and nothing is lost or done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_connection_closed_mid_batch_loses_nothing() {
    const N: usize = 40;
    let env = Env::new(seed_instances(N)).await;
    let w = env
        .start_worker(&[("LIFECYCLE__WORKER__CONCURRENCY", "2")])
        .await;
    // 4 s of calls; the simulator holds them around each close (below), so
    // the batch outlasts both closes however slow rabbitmqctl is.
    env.set_faults(json!({"latency_ms": 200})).await;
    let ids: Vec<String> = (0..N).map(|i| new_id(&format!("batch{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        env.send_json("decommission", &decommission(id, &inst(i)))
            .await;
    }
    let completions = |e: &[Ev]| e.iter().filter(|e| e.ty() == "command.completed").count();
    env.wait_for("a few completions", T, |e| completions(e) > 0)
        .await;
    // Calls in flight stay unanswered until a connection is gone (below), so
    // each close lands mid-batch however slow rabbitmqctl is.
    env.set_faults(json!({"latency_ms": 200, "hold": true}))
        .await;
    assert_eq!(env.worker_connections().await.len(), 2, "two connections");
    for name in [PUBLISHING, CONSUMING] {
        env.set_faults(json!({"latency_ms": 200, "hold": true}))
            .await;
        let conns = env.connections_named(name).await;
        assert_eq!(conns.len(), 1, "one {name} connection: {conns:?}");
        let pid = conns[0].clone();
        let closed = pid.clone();
        // Calls in flight stay unanswered until the connection is gone, so
        // the close lands mid-batch however slow rabbitmqctl is.
        env.set_faults(json!({"latency_ms": 200, "hold": true}))
            .await;
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["-q", "close_connection", &closed, "test"]);
        })
        .await
        .expect("join");
        let before = completions(&env.events());
        assert!(before < N, "closed {name} too late: all done already");
        // The loss of either connection ends the session: a new one replaces it
        // and work goes on before the next connection is closed.
        until("a new session", T, || async {
            let now = env.connections_named(name).await;
            (now.len() == 1 && now[0] != pid).then_some(())
        })
        .await;
        env.set_faults(json!({"latency_ms": 200})).await;
        env.wait_for("completions after the reconnect", T, |e| {
            completions(e) > before
        })
        .await;
        w.wait_readyz(200, T).await;
    }
    let evs = env
        .wait_for("all completions", Duration::from_secs(60), |e| {
            all_completed(e, &ids)
        })
        .await;
    assert_succeeded_once_each(&evs, &ids);
    w.wait_readyz(200, T).await;
    assert_each_deregistered_once(&env, N).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_commands_and_exits_zero() {
    sigterm_scenario("3000", false).await;
}

/// SIGTERM must not wait out the whole `shutdown_grace_ms` once in-flight work
/// is done, and with concurrency 5 all 5 commands run at once (an idle queue's
/// consumer must not hold a permit), so the first worker finishes all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_promptly_once_in_flight_commands_finish() {
    sigterm_scenario("15000", true).await;
}

async fn sigterm_scenario(grace_ms: &str, check_prompt: bool) {
    const N: usize = 5;
    let env = Env::new(seed_instances(N)).await;
    let mut w = env
        .start_process(&[
            ("LIFECYCLE__WORKER__CONCURRENCY", "5"),
            ("LIFECYCLE__WORKER__SHUTDOWN_GRACE_MS", grace_ms),
        ])
        .await;
    env.set_faults(json!({"latency_ms": 1000})).await;
    let ids: Vec<String> = (0..N).map(|i| new_id(&format!("term{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        env.send_json("decommission", &decommission(id, &inst(i)))
            .await;
    }
    until("all commands taken", T, || async {
        (env.queue_len("lifecycle.decommission").await == 0).then_some(())
    })
    .await;
    until("every call in flight", T, || async {
        (env.sim_in_flight().await >= N as u64).then_some(())
    })
    .await;
    w.signal("-TERM");
    let started = std::time::Instant::now();
    let code = w.wait_exit(T).await;
    assert!(
        !check_prompt || started.elapsed() < Duration::from_secs(10),
        "SIGTERM: the worker hung until its shutdown grace ran out ({:?}); stderr: {}",
        started.elapsed(),
        w.stderr()
    );
    assert_eq!(code, Some(0), "exit code; stderr: {}", w.stderr());
    if check_prompt {
        assert!(
            all_completed(&env.events(), &ids),
            "all {N} in-flight commands finish before exit; stderr: {}",
            w.stderr()
        );
    }
    // Whatever was not finished must still be on the queue: a new worker ends it.
    let _w2 = env.start_worker(&[]).await;
    let evs = env
        .wait_for("all completions", T, |e| all_completed(e, &ids))
        .await;
    assert_succeeded_once_each(&evs, &ids);
    assert_each_deregistered_once(&env, N).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_compete_without_repeating_effects() {
    const N: usize = 40;
    let env = Env::new(seed_instances(N)).await;
    let extra = [("LIFECYCLE__AMQP__PREFETCH", "4")];
    let _a = env.start_worker(&extra).await;
    let _b = env.start_worker(&extra).await;
    env.set_faults(json!({"latency_ms": 20})).await;
    let ids: Vec<String> = (0..N).map(|i| new_id(&format!("pair{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        env.send_json("decommission", &decommission(id, &inst(i)))
            .await;
    }
    let evs = env
        .wait_for("all 40 completions", Duration::from_secs(60), |e| {
            all_completed(e, &ids)
        })
        .await;
    assert_succeeded_once_each(&evs, &ids);
    assert_each_deregistered_once(&env, N).await;
    let d = env.deregistrations().await;
    assert_eq!(d.len(), N);
    assert_eq!(env.worker_connections().await.len(), 4, "two per worker");
}

/// SIGTERM while a command on its *last* retry stage waits out a backoff: the
/// command goes back to its queue as it was (not failed, not dead-lettered,
/// no stage used up) and completes after a restart (CONTRACT section 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_last_stage_backoff_puts_the_command_back_unchanged() {
    let env = Env::new(seed_instances(1)).await;
    let extra = [
        ("LIFECYCLE__RETRY__REDELIVERY_DELAYS", "1s"),
        ("LIFECYCLE__RETRY__MAX_ELAPSED_MS", "60000"),
        ("LIFECYCLE__RETRY__INITIAL_INTERVAL_MS", "20000"),
        ("LIFECYCLE__RETRY__MAX_INTERVAL_MS", "20000"),
    ];
    let mut w = env.start_process(&extra).await;
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 1000,
        "code": "InternalError", "status": 500
    }]}))
    .await;
    let id = new_id("last-stage");
    // One delayed redelivery already behind it: with one stage, this is its last chance.
    let mut headers = FieldTable::default();
    headers.insert("x-lifecycle-redeliveries".into(), AMQPValue::LongLongInt(1));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers);
    env.publish("decommission", &decommission(&id, &inst(0)), props)
        .await;
    until("the first attempt (now backing off 20 s)", T, || async {
        (!dereg_calls(&env.requests().await).is_empty()).then_some(())
    })
    .await;
    w.signal("-TERM");
    assert_eq!(w.wait_exit(T).await, Some(0), "{}", w.stderr());
    assert!(
        env.events_of(&id).is_empty(),
        "shutdown published nothing for it: {:#?}",
        env.events_of(&id)
    );
    assert!(env.drain_queue("lifecycle.dead-letter").await.is_empty());
    assert_eq!(
        env.queue_len("lifecycle.retry.1s").await,
        0,
        "no stage used"
    );
    assert_eq!(
        env.queue_len("lifecycle.decommission").await,
        1,
        "back on its queue"
    );
    // The API recovers; a new worker finishes it.
    env.set_faults(json!({})).await;
    let _w2 = env.start_worker(&extra).await;
    let evs = env
        .wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    assert_eq!(count(&evs, &id, "command.completed"), 1, "{evs:#?}");
}

/// The broker refuses a command's outcome (a full queue bound to the event
/// exchange nacks every event): the worker reports not ready, publishes the
/// same outcome again with growing pauses, never repeats the API call, and
/// acknowledges once the broker takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_settlement_is_published_again_without_repeating_api_calls() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_process(&[]).await;
    let blocker = refuse_every_event(&env).await;
    let id = new_id("refused");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    let body = w.wait_readyz(503, T).await;
    assert!(body.contains("refuses command outcomes"), "{body}");
    until("three republish attempts", T, || async {
        (w.stderr().matches("publishing it again").count() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        dereg_calls(&env.requests().await).len(),
        1,
        "the API call is made once, however often its outcome is republished"
    );
    unblock(&env, &blocker).await;
    env.wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    w.wait_readyz(200, T).await;
    assert_eq!(dereg_calls(&env.requests().await).len(), 1);
}

/// A full queue bound to the event exchange, so the broker nacks every
/// event (`x-overflow: reject-publish`). Returns its name.
pub(crate) async fn refuse_every_event(env: &Env) -> String {
    let blocker = new_id("full");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    env.chan
        .queue_declare(
            blocker.as_str().into(),
            QueueDeclareOptions::default(),
            args,
        )
        .await
        .expect("blocker queue");
    env.chan
        .queue_bind(
            blocker.as_str().into(),
            "lifecycle.events".into(),
            "#".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    blocker
}

pub(crate) async fn unblock(env: &Env, blocker: &str) {
    env.chan
        .queue_delete(
            blocker.into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("unblock");
}

/// Dead letters of commands that fail for good (the API forbids the operation).
async fn failed_commands(env: &Env, n: usize) -> Vec<String> {
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 100_000,
        "code": "Operation.Forbidden", "status": 403
    }]}))
    .await;
    let ids: Vec<String> = (0..n).map(|i| new_id(&format!("dl{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        env.send_json("decommission", &decommission(id, &inst(i)))
            .await;
    }
    env.wait_for("failures", T, |e| {
        ids.iter().all(|id| completed(e, id, "failed"))
    })
    .await;
    until("all dead-lettered", T, || async {
        (env.queue_len("lifecycle.dead-letter").await as usize >= n).then_some(())
    })
    .await;
    ids
}

fn replayed_count(stderr: &str) -> Option<usize> {
    stderr
        .lines()
        .find_map(|l| l.strip_suffix(" dead letter(s) replayed"))
        .and_then(|n| n.trim().parse().ok())
}

/// `replay --limit N` replays at most N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_limit_limits_replays() {
    let env = Env::new(seed_instances(3)).await;
    let w = env.start_worker(&[]).await;
    failed_commands(&env, 3).await;
    w.stop(T).await;
    let (code, out, err) = env
        .run_cli(&["dead-letters", "replay", "--limit", "1"])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(replayed_count(&err), Some(1), "{err}");
    assert_eq!(env.queue_len("lifecycle.dead-letter").await, 2);
    assert_eq!(env.queue_len("lifecycle.decommission").await, 1);
}

/// Replaying while a worker runs and the cause is not fixed: each dead letter
/// is replayed once and the run ends; the failures come back to the
/// dead-letter queue for the next replay, not in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_fails_again_is_not_replayed_again_in_the_same_run() {
    const N: usize = 30;
    let env = Env::new(seed_instances(N)).await;
    let _w = env.start_worker(&[]).await;
    failed_commands(&env, N).await;
    let (code, out, err) = tokio::time::timeout(
        Duration::from_secs(60),
        env.run_cli(&["dead-letters", "replay"]),
    )
    .await
    .expect("the replay ends");
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(replayed_count(&err), Some(N), "each replayed once: {err}");
    until("the replays failed again", T, || async {
        (env.queue_len("lifecycle.dead-letter").await as usize == N).then_some(())
    })
    .await;
}

/// Someone deletes the event exchange by hand: the worker's next publish
/// closes its publishing channel (404). The session is replaced, the topology
/// declared again, and the command completes; nothing is stuck unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_exchange_deleted_by_hand_is_declared_again() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_worker(&[]).await;
    env.chan
        .exchange_delete(
            "lifecycle.events".into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .expect("delete the event exchange");
    let id = new_id("no-exchange");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    until("the exchange is declared again", T, || async {
        let rows = env.list("exchanges", &["name"]).await;
        rows.iter()
            .any(|r| r[0] == "lifecycle.events")
            .then_some(())
    })
    .await;
    until(
        "the command is deregistered and acknowledged",
        T,
        || async {
            let done = env.deregistrations().await.get(&inst(0)) == Some(&json!(1));
            let rows = env
                .list(
                    "queues",
                    &["name", "messages_ready", "messages_unacknowledged"],
                )
                .await;
            let empty = rows
                .iter()
                .any(|r| r[0] == "lifecycle.decommission" && r[1] == "0" && r[2] == "0");
            (done && empty).then_some(())
        },
    )
    .await;
    w.wait_readyz(200, T).await;
    let d = env.deregistrations().await;
    assert_eq!(d.get(&inst(0)), Some(&json!(1)), "{d:?}");
}

/// A leaked code's containment is announced when it happens: with a slow API,
/// `activation.disabled` arrives well before the exposure report and the
/// quarantine's deregistrations are done, not with them at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containment_is_announced_before_the_quarantine_finishes() {
    const CODE: &str = "4ECEEE12-56F1-4FBC-9AB1-890F1234C0DE";
    let seed = json!({
        "Instances": [instance_json(&inst(0), Some(CODE)), instance_json(&inst(1), Some(CODE))],
        "Activations": [activation_json(CODE, 2)],
    });
    let env = Env::new(seed).await;
    let _w = env.start_worker(&[]).await;
    env.set_faults(json!({"latency_ms": 500})).await;
    let id = new_id("contain");
    let body =
        json!({"command_id": id, "region_id": REGION, "activation_id": CODE, "quarantine": "all"});
    env.send_json("leak-alert", body.to_string().as_bytes())
        .await;
    let evs = env
        .wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    let at = |ty: &str| {
        evs.iter()
            .find(|e| e.command_id() == id && e.ty() == ty)
            .map(|e| e.received)
            .expect(ty)
    };
    let disabled = at("activation.disabled");
    let done = at("command.completed");
    // After the disable: a describe and two deregistrations of 500 ms each.
    assert!(
        done.duration_since(disabled) >= Duration::from_millis(1200),
        "activation.disabled arrived only {:?} before the end",
        done.duration_since(disabled)
    );
    assert!(at("activation.exposure_report") > disabled);
    assert_eq!(count(&evs, &id, "activation.disabled"), 1, "{evs:#?}");
}
