//! `/metrics` after a scripted run (issue 5, item 2): exact counter values,
//! and no id anywhere among the label values.
//!
//! The script, one command at a time so the simulator's one-shot faults hit
//! the intended command:
//!
//! 1. three decommissions that succeed at the first attempt;
//! 2. one rejected (region not allowed);
//! 3. one that fails for good (a permanent API error);
//! 4. one that succeeds after two transient errors (two immediate retries);
//! 5. one throttled with a `retry-after` longer than the immediate-retry
//!    budget: one delayed redelivery, then it succeeds.

use crate::support::*;
use serde_json::json;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// The sample value of the series written exactly as `series` (name + labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn expect(text: &str, series: &str, expected: f64) {
    assert_eq!(value(text, series), Some(expected), "{series} in:\n{text}");
}

/// Every label value of every sample line.
fn label_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(start) = line.find('{') else {
            continue;
        };
        let Some(end) = line.rfind('}') else {
            continue;
        };
        let mut rest = &line[start + 1..end];
        while let Some(q) = rest.find("=\"") {
            let after = &rest[q + 2..];
            let close = after.find('"').expect("closing quote");
            out.push(after[..close].to_owned());
            rest = &after[close + 1..];
        }
    }
    out
}

/// True for anything that looks like an id: an instance id, or a run of 12+
/// hex digits (UUIDs, with or without dashes, command ids of this test).
fn looks_like_id(v: &str) -> bool {
    if v.contains("mi-") {
        return true;
    }
    let mut run = 0;
    for c in v.chars() {
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= 12 {
                return true;
            }
        } else if c != '-' {
            run = 0;
        }
    }
    false
}

async fn scrape(w: &Worker) -> String {
    reqwest::get(format!("http://127.0.0.1:{}/metrics", w.http_port))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body")
}

async fn decommission_until(env: &Env, id: &str, instance: &str, outcome: &str) {
    env.send_json("decommission", &decommission(id, instance))
        .await;
    env.wait_for(outcome, T, |e| completed(e, id, outcome))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_hold_exact_values_after_a_scripted_run() {
    let env = Env::new(seed_instances(6)).await;
    let w = env.start_worker(&[]).await;
    let mut ids = Vec::new();

    // 1. Three plain successes.
    for i in 0..3 {
        let id = new_id("ok");
        decommission_until(&env, &id, &inst(i), "succeeded").await;
        ids.push(id);
    }

    // 2. Rejected: a region outside the allow-list.
    let id = new_id("rejected");
    let body = serde_json::to_vec(&json!({
        "command_id": id, "region_id": "us-east-1", "instance_id": inst(0),
    }))
    .expect("json");
    env.send_json("decommission", &body).await;
    env.wait_for("rejection", T, |e| count(e, &id, "command.rejected") == 1)
        .await;
    ids.push(id);

    // 3. A permanent API error: failed.
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 1,
        "code": "IncorrectInstanceStatus", "status": 403
    }]}))
    .await;
    let id = new_id("failed");
    decommission_until(&env, &id, &inst(3), "failed").await;
    ids.push(id);

    // 4. Two transient errors, two immediate retries, success.
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 2,
        "code": "InternalError.Dispatch", "status": 500
    }]}))
    .await;
    let id = new_id("retried");
    decommission_until(&env, &id, &inst(4), "succeeded").await;
    ids.push(id);

    // 5. Throttled for longer than the immediate budget (500 ms here): one
    //    delayed redelivery (1 s), then success.
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 1,
        "code": "Throttling.User", "status": 400, "retry_after_ms": 60000
    }]}))
    .await;
    let id = new_id("redelivered");
    decommission_until(&env, &id, &inst(5), "succeeded").await;
    ids.push(id);

    // Settlement (the ack, then the gauge) follows the events by a moment.
    let mut text = scrape(&w).await;
    for _ in 0..50 {
        if value(&text, "lifecycle_commands_in_flight") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = scrape(&w).await;
    }
    println!("/metrics:\n{text}");

    let d = r#"kind="decommission""#;
    expect(
        &text,
        &format!(r#"lifecycle_commands_total{{{d},outcome="succeeded"}}"#),
        5.0,
    );
    expect(
        &text,
        &format!(r#"lifecycle_commands_total{{{d},outcome="failed"}}"#),
        1.0,
    );
    expect(
        &text,
        &format!(r#"lifecycle_commands_total{{{d},outcome="rejected"}}"#),
        1.0,
    );
    let commands: f64 = text
        .lines()
        .filter(|l| l.starts_with("lifecycle_commands_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(commands, 7.0, "every command counted once:\n{text}");
    expect(
        &text,
        &format!(r#"lifecycle_rejections_total{{{d},reason="region_not_allowed"}}"#),
        1.0,
    );
    let a = r#"action="DeregisterManagedInstance""#;
    for (code, n) in [
        ("OK", 5.0),
        ("IncorrectInstanceStatus", 1.0),
        ("InternalError.Dispatch", 2.0),
        ("Throttling.User", 1.0),
    ] {
        expect(
            &text,
            &format!(r#"lifecycle_ecs_calls_total{{{a},code="{code}"}}"#),
            n,
        );
    }
    let calls = text
        .lines()
        .filter(|l| l.starts_with("lifecycle_ecs_calls_total{"))
        .count();
    assert_eq!(calls, 4, "no other action or code:\n{text}");
    expect(
        &text,
        &format!(r#"lifecycle_ecs_call_duration_seconds_count{{{a}}}"#),
        9.0,
    );
    expect(
        &text,
        &format!(r#"lifecycle_ecs_retries_total{{{a}}}"#),
        2.0,
    );
    expect(
        &text,
        &format!(r#"lifecycle_redeliveries_total{{{d},reason="transient"}}"#),
        1.0,
    );
    expect(&text, "lifecycle_commands_in_flight", 0.0);
    expect(&text, "lifecycle_ready", 1.0);
    expect(&text, "lifecycle_broker_reconnects_total", 0.0);
    expect(&text, "lifecycle_unroutable_events_total", 0.0);
    expect(&text, "lifecycle_degraded_accounts", 0.0);

    // Bounded labels only: no instance id, command id or UUID anywhere.
    let values = label_values(&text);
    assert!(!values.is_empty());
    for v in &values {
        assert!(!looks_like_id(v), "label value {v:?} looks like an id");
        assert!(!ids.iter().any(|id| v.contains(id.as_str())), "{v:?}");
    }
    for id in &ids {
        assert!(!text.contains(id.as_str()), "{id} in /metrics");
    }
    assert!(!text.contains("mi-test"), "an instance id in /metrics");

    // The dashboard only queries series this output has.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-dashboard.json"
        ))
        .expect("dashboard"),
    )
    .expect("dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("lifecycle_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                queried += 1;
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                    "the dashboard queries {name}, which /metrics does not have"
                );
            }
        }
    }
    assert!(queried > 10);

    // So do the alert rules (deploy/prometheus/alerts.yaml), where a name may also be
    // one of RabbitMQ's (rabbitmq_prometheus plugin, per-object metrics) listed here.
    let alerts = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yaml"
    ))
    .expect("alert rules");
    let exprs = expressions(&alerts);
    assert!(exprs.len() >= 6, "the rules' expressions: {exprs:#?}");
    let exprs = exprs.join("\n");
    let mut named = 0;
    for name in metric_names(&exprs, "lifecycle_") {
        named += 1;
        assert!(
            exported(&text, &name),
            "an alert rule uses {name}, which the worker does not export"
        );
    }
    assert!(named >= 7, "the rules name the worker's metrics");
    for name in metric_names(&exprs, "rabbitmq_") {
        assert!(
            RABBITMQ_PLUGIN_METRICS.contains(&name.as_str()),
            "an alert rule uses {name}, which is neither the worker's nor a known RabbitMQ plugin metric"
        );
    }
}

/// RabbitMQ's own metrics the alert rules may use (rabbitmq_prometheus, per-object).
const RABBITMQ_PLUGIN_METRICS: &[&str] = &["rabbitmq_queue_messages_ready"];

/// The `expr:` of every rule in a rules file: inline, or a `|` block (the lines
/// indented deeper than the key).
fn expressions(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        if value.trim() == "|" {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent)
                .copied()
                .collect();
            out.push(block.join("\n"));
        } else {
            out.push(value.trim().to_owned());
        }
    }
    out
}

/// Every identifier starting with `prefix` in `text`.
fn metric_names(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// True when `/metrics` has a sample of `name`, or declares its family (a labelled
/// family with no sample yet, such as a counter nothing has incremented, is still
/// exported: its `# TYPE` line is there).
fn exported(text: &str, name: &str) -> bool {
    let sampled = text
        .lines()
        .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
    let family = ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    sampled
        || text
            .lines()
            .any(|l| l.starts_with(&format!("# TYPE {family} ")))
}
