//! Commands with `account_id` act through the mapped role (STS AssumeRole,
//! against the simulator's STS), sessions are reused, a failing role parks only
//! that account's commands while the worker stays ready.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const GOOD: &str = "1234567890";
const BAD: &str = "2222222222";

fn role(account: &str) -> String {
    format!("acs:ram::{account}:role/lifecycle-worker")
}

fn decommission_in(command_id: &str, instance: &str, account: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "command_id": command_id,
        "region_id": "cn-hangzhou",
        "instance_id": instance,
        "account_id": account,
        "reason": "offboarding",
    }))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_commands_use_the_mapped_role_and_a_bad_role_parks_only_its_account() {
    let env = Env::new(seed_instances(4)).await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(GOOD)})),
    )
    .await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(BAD), "Denied": true})),
    )
    .await;
    let roles = format!("{GOOD}={}, {BAD}={}", role(GOOD), role(BAD));
    let sts = env.sim.endpoint();
    let w = env
        .start_worker(&[
            ("LIFECYCLE__ACCOUNTS__ROLES", roles.as_str()),
            ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
        ])
        .await;

    let a = new_id("acct-a");
    let b = new_id("acct-b");
    let own = new_id("own");
    let denied = new_id("denied");
    env.send_json("decommission", &decommission_in(&a, &inst(0), GOOD))
        .await;
    env.send_json("decommission", &decommission_in(&b, &inst(1), GOOD))
        .await;
    env.send_json("decommission", &decommission(&own, &inst(2)))
        .await;
    env.send_json("decommission", &decommission_in(&denied, &inst(3), BAD))
        .await;
    let evs = env
        .wait_for("the three good commands", T, |e| {
            [&a, &b, &own]
                .iter()
                .all(|id| completed(e, id, "succeeded"))
        })
        .await;

    // account_id is echoed in every event of the command, with the audit.
    for ev in evs.iter().filter(|e| e.command_id() == a) {
        assert_eq!(ev.body["account_id"], GOOD, "{}", ev.body);
        assert_eq!(ev.body["audit"]["reason"], "offboarding");
    }
    assert!(
        evs.iter()
            .filter(|e| e.command_id() == own)
            .all(|e| e.body.get("account_id").is_none())
    );

    let reqs = env.requests().await;
    let dereg = |instance: &str| -> Value {
        reqs.iter()
            .find(|r| {
                r["action"] == "DeregisterManagedInstance" && r["params"]["InstanceId"] == instance
            })
            .cloned()
            .unwrap_or(Value::Null)
    };
    // The account's calls were signed by the role session, the others by our own key.
    for i in [0, 1] {
        let r = dereg(&inst(i));
        assert_eq!(r["role_arn"], role(GOOD), "{r}");
        assert!(
            r["access_key_id"]
                .as_str()
                .is_some_and(|k| k.starts_with("STS.")),
            "{r}"
        );
    }
    let r = dereg(&inst(2));
    assert_eq!(r["access_key_id"], "testid", "{r}");
    assert!(r.get("role_arn").is_none_or(Value::is_null), "{r}");
    // One session served both commands of the account (cached, not one AssumeRole each).
    let assumed: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["action"] == "AssumeRole" && r["params"]["RoleArn"] == role(GOOD))
        .collect();
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!(assumed[0]["access_key_id"], "testid");

    // The denied account's command waits (no terminal event, no dead letter, no
    // ECS call for it) and the worker stays ready, naming the account.
    let body = w.wait_readyz(200, T).await;
    let deadline = tokio::time::Instant::now() + T;
    while !body_names(&w, BAD).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never named the degraded account"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(body.contains("ready"));
    assert_eq!(count(&env.events(), &denied, "command.completed"), 0);
    assert!(dereg(&inst(3)).is_null());
    assert_eq!(env.queue_len("lifecycle.dead-letter").await, 0);

    // Once the role may be assumed, the parked command completes through the retry queues.
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(BAD)})),
    )
    .await;
    env.wait_for("the parked command", T, |e| {
        completed(e, &denied, "succeeded")
    })
    .await;
    let deregs = env.deregistrations().await;
    for i in 0..4 {
        assert_eq!(
            deregs.get(&inst(i)).and_then(Value::as_u64),
            Some(1),
            "{deregs:?}"
        );
    }
}

async fn body_names(w: &Worker, account: &str) -> bool {
    w.readyz()
        .await
        .is_some_and(|(status, body)| status == 200 && body.contains(account))
}

/// One account's STS hangs: that account's commands wait without holding
/// concurrency slots, so another account's and the worker's own commands are
/// carried out meanwhile (with concurrency 2 and more hung commands than slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sts_for_one_account_does_not_hold_up_the_others() {
    const SLOW: &str = "3333333333";
    let env = Env::new(seed_instances(12)).await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(GOOD)})),
    )
    .await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(SLOW), "DelayMs": 60_000})),
    )
    .await;
    let roles = format!("{GOOD}={}, {SLOW}={}", role(GOOD), role(SLOW));
    let sts = env.sim.endpoint();
    let w = env
        .start_worker(&[
            ("LIFECYCLE__ACCOUNTS__ROLES", roles.as_str()),
            ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
            ("LIFECYCLE__WORKER__CONCURRENCY", "2"),
            ("LIFECYCLE__ECS__REQUEST_TIMEOUT_MS", "60000"),
        ])
        .await;
    for i in 0..6 {
        env.send_json(
            "decommission",
            &decommission_in(&new_id("slow"), &inst(i), SLOW),
        )
        .await;
    }
    // The hung account's commands have started (their STS call is under way)
    // before the others arrive.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", w.http_port))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        let in_flight = metrics
            .lines()
            .find_map(|l| l.strip_prefix("lifecycle_commands_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if in_flight >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow commands never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut others = Vec::new();
    for i in 6..12 {
        let id = new_id("other");
        let body = if i % 2 == 0 {
            decommission_in(&id, &inst(i), GOOD)
        } else {
            decommission(&id, &inst(i))
        };
        env.send_json("decommission", &body).await;
        others.push(id);
    }
    // Well before the hung STS call could end (60 s), the others are done.
    env.wait_for("the other commands", Duration::from_secs(20), |e| {
        others.iter().all(|id| completed(e, id, "succeeded"))
    })
    .await;
}
