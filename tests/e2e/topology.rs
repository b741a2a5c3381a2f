//! Broker topology (CONTRACT section 2), the classic-queue option, publishing
//! through the default exchange, per-target serialization, and configuration
//! errors at start-up (CONTRACT section 7). See `tests/e2e/support/mod.rs`.

use crate::support::*;
use lapin::BasicProperties;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// Rows of `list_<what>` keyed by their first column.
fn by_name(rows: &[Vec<String>]) -> std::collections::BTreeMap<String, Vec<String>> {
    rows.iter()
        .filter_map(|r| Some((r.first()?.clone(), r[1..].to_vec())))
        .collect()
}

/// `[{"x-queue-type","quorum"},{"x-message-ttl",1000}]` as a map (quotes dropped).
fn parse_args(s: &str) -> std::collections::BTreeMap<String, String> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split("},{")
        .filter_map(|pair| {
            let pair = pair.trim_matches(|c| c == '{' || c == '}');
            let (k, v) = pair.split_once(',')?;
            Some((
                k.trim_matches('"').to_owned(),
                v.trim_matches('"').to_owned(),
            ))
        })
        .collect()
}

fn assert_queue(
    queues: &std::collections::BTreeMap<String, Vec<String>>,
    name: &str,
    queue_type: &str,
) -> std::collections::BTreeMap<String, String> {
    let row = queues
        .get(name)
        .unwrap_or_else(|| panic!("queue {name} missing: {queues:#?}"));
    assert_eq!(row[0], "true", "{name} durable: {row:?}");
    let args = parse_args(&row[1]);
    assert_eq!(
        args.get("x-queue-type").map(String::as_str),
        Some(queue_type),
        "{name} is {queue_type}: {row:?}"
    );
    args
}

fn has_binding(rows: &[Vec<String>], source: &str, dest: &str, key: &str) -> bool {
    // source_name source_kind destination_name destination_kind routing_key arguments
    rows.iter()
        .any(|r| r.len() >= 5 && r[0] == source && r[2] == dest && r[3] == "queue" && r[4] == key)
}

async fn decommission_succeeds(env: &Env, instance: &str) {
    let id = new_id("ok");
    env.send_json("decommission", &decommission(&id, instance))
        .await;
    env.wait_for("a successful decommission", T, |e| {
        completed(e, &id, "succeeded")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_is_declared_as_the_contract_says_and_redeclared_idempotently() {
    let env = Env::new(seed_instances(2)).await;
    let delays = [("LIFECYCLE__RETRY__REDELIVERY_DELAYS", "1s, 2500ms,1m")];
    let w = env.start_worker(&delays).await;

    let snapshot = || async {
        (
            env.list("exchanges", &["name", "type", "durable"]).await,
            env.list("queues", &["name", "durable", "arguments"]).await,
            env.list(
                "bindings",
                &[
                    "source_name",
                    "source_kind",
                    "destination_name",
                    "destination_kind",
                    "routing_key",
                ],
            )
            .await,
        )
    };
    let (exchanges, queues, bindings) = snapshot().await;
    let ex = by_name(&exchanges);
    for name in [
        "lifecycle.commands",
        "lifecycle.events",
        "lifecycle.dead-letter",
    ] {
        assert_eq!(
            ex.get(name),
            Some(&vec!["topic".to_owned(), "true".to_owned()]),
            "{name} topic durable: {exchanges:#?}"
        );
    }
    let q = by_name(&queues);
    for name in ["lifecycle.decommission", "lifecycle.leak-alert"] {
        let args = assert_queue(&q, name, "quorum");
        assert_eq!(
            args.get("x-dead-letter-exchange").map(String::as_str),
            Some("lifecycle.dead-letter"),
            "{name} safety net: {args:?}"
        );
        // RabbitMQ 4's defaults said out loud, and dead-lettering that cannot lose.
        assert_eq!(args.get("x-delivery-limit").map(String::as_str), Some("20"));
        assert_eq!(
            args.get("x-dead-letter-strategy").map(String::as_str),
            Some("at-least-once")
        );
        assert_eq!(
            args.get("x-overflow").map(String::as_str),
            Some("reject-publish")
        );
    }
    assert_queue(&q, "lifecycle.dead-letter", "quorum");
    assert!(has_binding(
        &bindings,
        "lifecycle.commands",
        "lifecycle.decommission",
        "decommission"
    ));
    assert!(has_binding(
        &bindings,
        "lifecycle.commands",
        "lifecycle.leak-alert",
        "leak-alert"
    ));
    assert!(
        bindings
            .iter()
            .any(|r| r[0] == "lifecycle.dead-letter" && r[2] == "lifecycle.dead-letter"),
        "dead-letter queue bound to its exchange: {bindings:#?}"
    );
    // One retry queue per configured delay, with its TTL and dead-lettering back.
    let retry: Vec<&String> = q
        .keys()
        .filter(|n| n.starts_with("lifecycle.retry."))
        .collect();
    assert_eq!(retry.len(), 3, "one retry queue per delay: {queues:#?}");
    for (name, ttl) in [
        ("lifecycle.retry.1s", 1000),
        ("lifecycle.retry.2500ms", 2500),
        ("lifecycle.retry.1m", 60_000),
    ] {
        let args = assert_queue(&q, name, "quorum");
        assert_eq!(
            args.get("x-message-ttl"),
            Some(&ttl.to_string()),
            "{name} ttl: {args:?}"
        );
        // Dead-lettering back (to the default exchange, under the command queue's name).
        assert!(
            args.contains_key("x-dead-letter-exchange"),
            "{name}: {args:?}"
        );
        assert_eq!(
            args.get("x-dead-letter-strategy").map(String::as_str),
            Some("at-least-once"),
            "{name}: quorum dead-lettering must not lose a retry copy: {args:?}"
        );
        // Something routes copies into it.
        assert!(
            bindings.iter().any(|r| r[2] == name),
            "{name} bound: {bindings:#?}"
        );
    }
    // The event exchange has no queue of the worker's own (only the test's).
    decommission_succeeds(&env, &inst(0)).await;

    // A second worker, against the existing topology, while the first runs.
    let w2 = env.start_worker(&delays).await;
    w.stop(Duration::from_secs(30)).await;
    let again = snapshot().await;
    let sorted = |mut v: Vec<Vec<String>>| {
        v.sort();
        v
    };
    assert_eq!(sorted(again.0), sorted(exchanges));
    // Queue arguments are unchanged (message counts are not listed).
    assert_eq!(sorted(again.1), sorted(queues));
    decommission_succeeds(&env, &inst(1)).await;
    // And a restart of the only worker re-declares fine as well.
    w2.stop(Duration::from_secs(30)).await;
    let _w3 = env.start_worker(&delays).await;
    assert!(
        env.events()
            .iter()
            .all(|e| e.ty() != "command.rejected" && e.outcome() != "failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_queue_type_gives_classic_queues_and_works() {
    let env = Env::new(seed_instances(1)).await;
    let _w = env
        .start_worker(&[("LIFECYCLE__AMQP__QUEUE_TYPE", "classic")])
        .await;
    let queues = env.list("queues", &["name", "durable", "arguments"]).await;
    let q = by_name(&queues);
    for name in [
        "lifecycle.decommission",
        "lifecycle.leak-alert",
        "lifecycle.dead-letter",
        "lifecycle.retry.1s",
        "lifecycle.retry.2s",
    ] {
        assert_queue(&q, name, "classic");
    }
    assert!(
        queues.iter().all(|r| !r[2].contains("quorum")),
        "no quorum queue: {queues:#?}"
    );
    decommission_succeeds(&env, &inst(0)).await;
    let d = env.deregistrations().await;
    assert_eq!(d.get(&inst(0)), Some(&json!(1)), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_sent_through_the_default_exchange_is_processed() {
    let env = Env::new(seed_instances(2)).await;
    let _w = env.start_worker(&[]).await;
    let id = new_id("default-ex");
    env.publish_to(
        "",
        "lifecycle.decommission",
        &decommission(&id, &inst(1)),
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await;
    let evs = env
        .wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    assert_eq!(count(&evs, &id, "command.completed"), 1);
    let leak = new_id("default-ex-leak");
    let act = "4ECEEE12-56F1-4FBC-9AB1-890F1234ABCD";
    let mut seed = seed_instances(2);
    seed["Activations"] = json!([activation_json(act, 0)]);
    env.sim_send(reqwest::Method::PUT, "/_sim/state", Some(seed))
        .await;
    env.publish_to(
        "",
        "lifecycle.leak-alert",
        &serde_json::to_vec(
            &json!({"command_id": leak, "region_id": REGION, "activation_id": act}),
        )
        .expect("json"),
        BasicProperties::default(),
    )
    .await;
    env.wait_for("leak-alert completion", T, |e| {
        completed(e, &leak, "succeeded")
    })
    .await;
    let evs = env.events_of(&leak);
    assert!(
        evs.iter()
            .all(|e| e.body["command_kind"] == "leak-alert" && e.ty() != "command.rejected"),
        "{evs:#?}"
    );
}

fn occurred_at(e: &Ev) -> time::OffsetDateTime {
    let s = e.body["occurred_at"].as_str().expect("occurred_at");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|err| panic!("occurred_at {s}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_the_same_target_run_one_after_another() {
    const LATENCY_MS: i64 = 300;
    let env = Env::new(seed_instances(5)).await;
    let _w = env
        .start_worker(&[("LIFECYCLE__WORKER__CONCURRENCY", "8")])
        .await;
    env.set_faults(json!({ "latency_ms": LATENCY_MS })).await;
    let same: Vec<String> = (0..4).map(|i| new_id(&format!("same{i}"))).collect();
    let others: Vec<String> = (1..5).map(|i| new_id(&format!("other{i}"))).collect();
    // Interleaved, so the worker has all of them at once.
    let started = Instant::now();
    for i in 0..4 {
        env.send_json("decommission", &decommission(&same[i], &inst(0)))
            .await;
        env.send_json("decommission", &decommission(&others[i], &inst(i + 1)))
            .await;
    }
    let all: Vec<String> = same.iter().chain(&others).cloned().collect();
    let evs = env
        .wait_for("8 completions", T, |e| {
            all.iter().all(|id| {
                e.iter()
                    .any(|e| e.command_id() == id && e.ty() == "command.completed")
            })
        })
        .await;
    let elapsed = started.elapsed();
    for id in &all {
        assert_eq!(count(&evs, id, "command.completed"), 1, "{id}: {evs:#?}");
        let done = evs
            .iter()
            .find(|e| e.command_id() == id && e.ty() == "command.completed")
            .expect("completed");
        assert_eq!(done.outcome(), "succeeded", "{done:?}");
    }
    // Same target: one effective deregistration, the other three already done.
    let mut outcomes: Vec<&str> = same
        .iter()
        .map(|id| {
            evs.iter()
                .find(|e| e.command_id() == id && e.ty() == "instance.deregistered")
                .map(Ev::outcome)
                .unwrap_or("missing")
        })
        .collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        ["already_done", "already_done", "already_done", "succeeded"]
    );
    let d = env.deregistrations().await;
    for i in 0..5 {
        assert_eq!(d.get(&inst(i)), Some(&json!(1)), "{d:?}");
    }
    // No overlap: each same-target command needs one API call of LATENCY_MS, so
    // run one after another their completions are at least that far apart.
    let mut times: Vec<time::OffsetDateTime> = same
        .iter()
        .map(|id| {
            occurred_at(
                evs.iter()
                    .find(|e| e.command_id() == id && e.ty() == "command.completed")
                    .expect("completed"),
            )
        })
        .collect();
    times.sort();
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).whole_milliseconds();
        assert!(
            gap >= i128::from(LATENCY_MS) - 50,
            "same-target commands overlapped: completions {gap} ms apart ({times:?})"
        );
    }
    // Each same-target call is in the log once, and their API calls were made in
    // turn: four calls on inst(0), never two in flight (seq of arrival).
    let reqs = env.requests().await;
    let on_target: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["params"]["InstanceId"] == inst(0).as_str())
        .collect();
    assert_eq!(on_target.len(), 4, "{reqs:#?}");
    // The other targets were not held up behind the serialized ones.
    let other_times: Vec<time::OffsetDateTime> = others
        .iter()
        .map(|id| {
            occurred_at(
                evs.iter()
                    .find(|e| e.command_id() == id && e.ty() == "command.completed")
                    .expect("completed"),
            )
        })
        .collect();
    let last_other = other_times.iter().max().expect("some");
    assert!(
        *last_other < times[3],
        "other targets ran alongside, not after: others {other_times:?}, same {times:?} ({elapsed:?})"
    );
}

/// One host named four ways (instance id, hostname, machine id, IP) is one
/// target: the four commands act on it one after another, each after the
/// previous one's outcome is settled, not at once because their selectors differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_named_four_ways_is_one_target() {
    const LATENCY_MS: i64 = 300;
    let mut seed = seed_instances(1);
    seed["Instances"][0]["IntranetIp"] = json!("10.7.0.1");
    let env = Env::new(seed).await;
    let _w = env
        .start_worker(&[("LIFECYCLE__WORKER__CONCURRENCY", "8")])
        .await;
    // The three lookups are held until all three are asked, then answered
    // (after the latency) before the fourth command is even published: each
    // finds the host, whatever the machine's load.
    env.set_faults(json!({ "latency_ms": LATENCY_MS, "hold": true }))
        .await;
    let id = inst(0);
    let selectors = [
        json!({"hostname": format!("{id}.example.internal")}),
        json!({"machine_id": format!("m{}", id.trim_start_matches("mi-"))}),
        json!({"ip": "10.7.0.1"}),
        json!({"instance_id": id}),
    ];
    let mut ids = Vec::new();
    for (i, selector) in selectors.iter().enumerate() {
        if i == 3 {
            until("the three lookups are asked", T, || async {
                (env.sim_in_flight().await == 3).then_some(())
            })
            .await;
            env.set_faults(json!({ "latency_ms": LATENCY_MS })).await;
            until("the three lookups are answered", T, || async {
                let answered = env
                    .requests()
                    .await
                    .iter()
                    .filter(|r| r["action"] == "DescribeManagedInstances")
                    .count();
                (answered == 3).then_some(())
            })
            .await;
        }
        let cid = new_id(&format!("named{i}"));
        let mut body = json!({"command_id": cid, "region_id": REGION});
        for (k, v) in selector.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        env.send_json("decommission", body.to_string().as_bytes())
            .await;
        ids.push(cid);
    }
    let evs = env
        .wait_for("4 completions", T, |e| {
            ids.iter().all(|id| {
                e.iter()
                    .any(|e| e.command_id() == id && e.ty() == "command.completed")
            })
        })
        .await;
    let d = env.deregistrations().await;
    assert_eq!(d.get(&id), Some(&json!(1)), "{d:?}");
    // Every command that called DeregisterManagedInstance did so holding the
    // instance's lock until its outcome was settled: their completions are at
    // least one API call apart, never at once.
    let mut times: Vec<time::OffsetDateTime> = ids
        .iter()
        .filter(|cid| {
            evs.iter()
                .any(|e| e.command_id() == cid.as_str() && e.ty() == "instance.deregistered")
        })
        .map(|cid| {
            occurred_at(
                evs.iter()
                    .find(|e| e.command_id() == cid && e.ty() == "command.completed")
                    .expect("completed"),
            )
        })
        .collect();
    assert!(
        times.len() >= 3,
        "the host was found by each lookup: {evs:#?}"
    );
    times.sort();
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).whole_milliseconds();
        assert!(
            gap >= i128::from(LATENCY_MS) - 50,
            "commands for one instance overlapped: completions {gap} ms apart ({times:?})"
        );
    }
}

/// Starts `run` with a bad configuration: it must exit 2 promptly, name the
/// culprit on stderr, and never answer on its health port.
async fn bad_config(env: &Env, extra: &[(&str, &str)], args: &[&str], culprit: &str) {
    let mut w = env.spawn_process_with(extra, args);
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        assert!(
            w.readyz().await.is_none(),
            "{culprit}: the health port answered"
        );
        if let Some(code) = w.try_exit() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "{culprit}: still running after 5 s: {}",
            w.stderr()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let err = w.stderr();
    assert_eq!(code, Some(2), "{culprit}: exit code; stderr: {err}");
    assert!(
        err.to_lowercase().contains(&culprit.to_lowercase()),
        "stderr names {culprit}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_exit_2_naming_the_key_and_never_get_ready() {
    let env = Env::new(seed_instances(0)).await;
    bad_config(
        &env,
        &[("LIFECYCLE__AMQP__PREFETCH", "abc")],
        &[],
        "prefetch",
    )
    .await;
    bad_config(&env, &[("LIFECYCLE__AMQP__NOPE", "1")], &[], "nope").await;
    bad_config(
        &env,
        &[],
        &["--config", "/nonexistent.toml"],
        "/nonexistent.toml",
    )
    .await;
    // Nothing was declared in the vhost by any of them.
    let queues = env.list("queues", &["name"]).await;
    assert!(
        queues.iter().all(|r| !r[0].starts_with("lifecycle.")),
        "{queues:#?}"
    );
}

/// A command the broker hands out more than the delivery limit (a command
/// that crashes every worker taking it) lands in the dead-letter queue: the
/// broker dead-letters it on its own, and it is not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_the_delivery_limit_lands_in_the_dead_letter_queue() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let env = Env::new(seed_instances(1)).await;
    // The worker declares the topology, then leaves the queue to the test.
    env.start_worker(&[]).await.stop(T).await;
    let id = new_id("poison");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    let mut deliveries = 0;
    while let Some(m) = env
        .chan
        .basic_get("lifecycle.decommission".into(), BasicGetOptions::default())
        .await
        .expect("get")
    {
        deliveries += 1;
        m.delivery.acker.nack(requeue).await.expect("nack");
        assert!(deliveries <= 30, "the delivery limit is enforced");
    }
    assert_eq!(deliveries, 21, "delivered the limit (20) and once more");
    let dead = until("the command is dead-lettered", T, || async {
        let d = env.drain_queue("lifecycle.dead-letter").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    let body: Value = serde_json::from_slice(&dead[0].data).expect("json");
    assert_eq!(body["command_id"], json!(id));
}

/// Queues that exist with other arguments (an older version, or declared by
/// hand) cannot be redeclared with new ones: the worker uses them as they
/// are, and `check` says so, instead of never getting ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_queues_declared_before_with_other_arguments_are_used_as_they_are() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable};
    let env = Env::new(seed_instances(1)).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    env.chan
        .queue_declare("lifecycle.decommission".into(), durable, args)
        .await
        .expect("declared the old way");
    let _w = env.start_worker(&[]).await;
    decommission_succeeds(&env, &inst(0)).await;
    let (code, out, _) = env
        .run_cli_with(
            &["check"],
            &[("LIFECYCLE__SECURITY__ALLOWED_REGIONS", REGION)],
        )
        .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("lifecycle.decommission already exist with other arguments"),
        "{out}"
    );
}

/// A consumer the broker cancels (its queue deleted and declared again) is
/// consumed again: commands published afterwards are carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_the_broker_cancels_is_consumed_again() {
    use lapin::options::QueueDeleteOptions;
    let env = Env::new(seed_instances(1)).await;
    let _w = env.start_worker(&[]).await;
    env.chan
        .queue_delete(
            "lifecycle.decommission".into(),
            QueueDeleteOptions::default(),
        )
        .await
        .expect("deleted");
    until("the queue is back with a consumer", T, || async {
        let rows = env.list("queues", &["name", "consumers"]).await;
        rows.iter()
            .any(|r| r[0] == "lifecycle.decommission" && r[1] == "1")
            .then_some(())
    })
    .await;
    decommission_succeeds(&env, &inst(0)).await;
}
