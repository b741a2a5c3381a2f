//! `--scenario contain`: time to contain a leaked activation code behind an
//! offboarding backlog (issue 18).
//!
//! The worker runs with its defaults (concurrency, prefetch and the client-side
//! pace of 100 calls/s per region), the simulator answers after 50 ms. Two
//! phases in one run, each on a fresh vhost, simulator and worker:
//!
//! - **idle**: 20 leak-alerts (quarantine `all`, 3 instances each), one every
//!   100 ms, and nothing else;
//! - **backlog**: 10,000 decommissions published as fast as the broker takes
//!   them, and the same 20 leak-alerts published over the backlog's first
//!   seconds (starting once a quarter of it is queued).
//!
//! Per leak-alert: publish → `activation.disabled` and publish → its terminal
//! `command.completed`; p50 / p99 per phase, the backlog/idle p99 ratio (target
//! ≤ 1.2), and how many decommissions had completed meanwhile. The second
//! round has the simulator answer 30 % of calls `Throttling.User` with
//! `x-acs-retry-after: 100`, and also reports failures, API calls per command
//! and the adaptive rate sampled every 250 ms from `/metrics`.

use crate::args::System;
use crate::collector::{COMPLETED, tally};
use crate::publisher::{check_confirm, publish};
use crate::report::{median, percentile};
use crate::rig::Rig;
use crate::run::Bench;
use crate::sim::{Faults, REGION, Sim, seed_json};
use crate::system::Spec;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection};
use lifecycle_testkit::for_each_delivery;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ALERTS: usize = 20;
const PER_CODE: usize = 3;
const BACKLOG: usize = 10_000;
const LATENCY_MS: u64 = 50;
/// How long the throttled backlog run samples the adaptive rate.
const TRACE_FOR: Duration = Duration::from_secs(30);

fn activation_id(a: usize) -> String {
    format!("4ECEEE12-56F1-4FBC-9AB1-{a:012X}")
}

fn alert_instance(a: usize, k: usize) -> String {
    format!("mi-leak{a:03}x{k}")
}

/// `BACKLOG` plain instances (ids as the publisher numbers them) plus, per
/// leak-alert, a code with `PER_CODE` instances registered with it.
fn contain_seed() -> String {
    let base = seed_json(BACKLOG);
    let mut extra_instances = String::new();
    let mut activations = String::new();
    for a in 0..ALERTS {
        let code = activation_id(a);
        for k in 0..PER_CODE {
            let id = alert_instance(a, k);
            let _ = write!(
                extra_instances,
                ",{{\"RegionId\":\"{REGION}\",\"InstanceId\":\"{id}\",\"Hostname\":\"{id}.leak\",\
                 \"ActivationId\":\"{code}\",\"RegistrationTime\":\"2026-11-10T00:00:00Z\"}}"
            );
        }
        if a > 0 {
            activations.push(',');
        }
        let _ = write!(
            activations,
            "{{\"RegionId\":\"{REGION}\",\"ActivationId\":\"{code}\",\"InstanceCount\":10,\
             \"RegisteredCount\":{PER_CODE},\"Disabled\":false}}"
        );
    }
    base.replacen(
        "],\"Activations\":[]}",
        &format!("{extra_instances}],\"Activations\":[{activations}]}}"),
        1,
    )
}

/// Arrival instants of the events the scenario watches.
#[derive(Default)]
struct Seen {
    disabled: BTreeMap<String, Instant>,
    terminal: BTreeMap<String, Instant>,
    decommissions_done: usize,
    failed: usize,
}

type SeenShared = Arc<Mutex<Seen>>;

async fn collect(conn: &Connection, queue: &str, seen: SeenShared) {
    for_each_delivery(conn, queue, "contain-collector", move |d| {
        let now = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&d.data).unwrap_or_default();
        let id = v["command_id"].as_str().unwrap_or_default().to_owned();
        let mut s = seen.lock().expect("seen");
        match d.routing_key.as_str() {
            "activation.disabled" => {
                s.disabled.entry(id).or_insert(now);
            }
            COMPLETED => {
                if v["outcome"] == "failed" || v["outcome"] == "partially_failed" {
                    s.failed += 1;
                }
                if v["command_kind"] == "leak-alert" {
                    s.terminal.entry(id).or_insert(now);
                } else {
                    s.decommissions_done += 1;
                }
            }
            _ => {}
        }
    })
    .await;
}

/// One published leak-alert: when it was handed to the broker and when the
/// broker confirmed it (a quorum queue confirms once the message is
/// committed, which is also when it can first be delivered: the time between
/// the two is the broker's, whatever the worker does).
struct Alert {
    id: String,
    published: Instant,
    confirmed: Instant,
}

/// The 20 leak-alerts, one every 100 ms, each confirmed before the next.
async fn publish_alerts(conn: &Connection, tag: &str) -> Vec<Alert> {
    let chan = conn.create_channel().await.expect("channel");
    chan.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut sent = Vec::with_capacity(ALERTS);
    for a in 0..ALERTS {
        let id = format!("contain-{tag}-{a}");
        let body = format!(
            "{{\"command_id\":\"{id}\",\"region_id\":\"{REGION}\",\"activation_id\":\"{}\",\"quarantine\":\"all\"}}",
            activation_id(a)
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let at = Instant::now();
        let confirm = chan
            .basic_publish(
                "lifecycle.commands".into(),
                "leak-alert".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish");
        check_confirm(Some(confirm.await)).expect("confirmed");
        sent.push(Alert {
            id,
            published: at,
            confirmed: Instant::now(),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sent
}

/// One phase's numbers.
#[derive(Debug, Clone, Default)]
struct Phase {
    disabled_p50: f64,
    disabled_p99: f64,
    /// p99 of publish → the broker's confirm.
    confirm_p99: f64,
    /// p99 of the broker's confirm → `activation.disabled`.
    after_confirm_p99: f64,
    terminal_p50: f64,
    terminal_p99: f64,
    decommissions_done: usize,
    failed: usize,
    api_calls_per_cmd: f64,
    rate_trace: Vec<(f64, f64)>,
    ok: bool,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The pace's current rate, as the worker's `/metrics` says.
async fn allowed_rate(port: u16) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with("lifecycle_ecs_allowed_rate_per_second{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sorted milliseconds from each alert's publish (or, with `from_confirm`,
/// its confirm) to its event in `arrivals`.
fn since_publish(
    sent: &[Alert],
    arrivals: &BTreeMap<String, Instant>,
    from_confirm: bool,
) -> Vec<f64> {
    let mut v: Vec<f64> = sent
        .iter()
        .filter_map(|a| {
            let from = if from_confirm {
                a.confirmed
            } else {
                a.published
            };
            arrivals
                .get(&a.id)
                .map(|d| ms(d.saturating_duration_since(from)))
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

async fn phase(b: &Bench, backlog: bool, throttle: bool, tag: &str) -> Phase {
    let logdir = &b.launcher.logdir;
    let seed = logdir.join(format!("seed-contain-{tag}.json"));
    std::fs::write(&seed, contain_seed()).expect("seed");
    let faults = Faults {
        latency_ms: LATENCY_MS,
        error_rate: 0.0,
    };
    let sim = Sim::start_seeded(&b.launcher.worker, &seed, faults, logdir, tag).await;
    if throttle {
        sim.set_faults(&serde_json::json!({
            "latency_ms": LATENCY_MS, "throttle_rate": 0.3, "throttle_retry_after_ms": 100
        }))
        .await;
    }
    let rig = Rig::new(sim).await;
    let seen: SeenShared = Arc::default();
    collect(&rig.conn, &rig.events, seen.clone()).await;
    let mut sut = b.launcher.spawn(&Spec {
        system: System::Worker,
        concurrency: 64,
        prefetch: 256,
        url: &rig.url,
        endpoint: &rig.endpoint,
        tag,
        extra: &[
            // The worker's own defaults for the pace: this scenario measures them.
            ("LIFECYCLE__ECS__MAX_CALLS_PER_SECOND", "100"),
            ("LIFECYCLE__ECS__RATE_BURST", "50"),
        ],
    });
    let mut result = Phase::default();
    if let Err(e) = sut.wait_ready(Duration::from_secs(60)).await {
        eprintln!("contain: worker not ready: {e}");
        return result;
    }
    let port = sut.http_port.unwrap_or_default();
    let publishing = rig.connect("publisher").await;
    let started = Instant::now();
    let trace = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let trace = Arc::clone(&trace);
        tokio::spawn(async move {
            loop {
                if let Some(rate) = allowed_rate(port).await {
                    trace
                        .lock()
                        .expect("trace")
                        .push((started.elapsed().as_secs_f64(), rate));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let sent = if backlog {
        let shared = tally(BACKLOG);
        let alerts = async {
            // Over the backlog's first seconds: once a quarter of it is queued.
            loop {
                let queued = shared
                    .0
                    .lock()
                    .expect("tally")
                    .sent
                    .iter()
                    .flatten()
                    .count();
                if queued >= BACKLOG / 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            publish_alerts(&rig.conn, tag).await
        };
        let (p, sent) = tokio::join!(publish(&publishing, &shared, 0..BACKLOG, None), alerts);
        if let Err(e) = p {
            eprintln!("contain: backlog publish failed: {e}");
        }
        sent
    } else {
        publish_alerts(&rig.conn, tag).await
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let s = seen.lock().expect("seen");
            sent.iter().all(|a| s.terminal.contains_key(&a.id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if backlog && throttle {
        // Long enough a trace to see where the adaptive rate settles.
        tokio::time::sleep_until((started + TRACE_FOR).into()).await;
    }
    sampler.abort();
    let completed = {
        let s = seen.lock().expect("seen");
        let disabled = since_publish(&sent, &s.disabled, false);
        let terminal = since_publish(&sent, &s.terminal, false);
        let after_confirm = since_publish(&sent, &s.disabled, true);
        let mut confirms: Vec<f64> = sent
            .iter()
            .map(|a| ms(a.confirmed.duration_since(a.published)))
            .collect();
        confirms.sort_by(f64::total_cmp);
        result.confirm_p99 = percentile(&confirms, 99.0);
        result.after_confirm_p99 = percentile(&after_confirm, 99.0);
        result.ok = disabled.len() == ALERTS && terminal.len() == ALERTS;
        result.disabled_p50 = percentile(&disabled, 50.0);
        result.disabled_p99 = percentile(&disabled, 99.0);
        result.terminal_p50 = percentile(&terminal, 50.0);
        result.terminal_p99 = percentile(&terminal, 99.0);
        result.decommissions_done = s.decommissions_done;
        result.failed = s.failed;
        s.decommissions_done + s.terminal.len()
    };
    // Leak-alerts make 1 + 1 + PER_CODE calls each; decommissions one.
    let expected = completed + ALERTS * (1 + PER_CODE);
    result.api_calls_per_cmd = rig.sim.request_count().await as f64 / expected.max(1) as f64;
    result.rate_trace = trace.lock().expect("trace").clone();
    sut.stop().await;
    let _ = publishing.close(200, "done".into()).await;
    rig.close().await;
    result
}

/// Runs the scenario `b.runs` times, without and with throttling, and
/// reports each run and the medians.
pub async fn contain(b: &Bench) {
    let report = &b.report;
    for throttle in [false, true] {
        let title = if throttle {
            "with 30 % Throttling.User (x-acs-retry-after 100 ms)"
        } else {
            "no faults"
        };
        report.line(&format!(
            "\n#### Time to contain: 20 leak-alerts idle vs behind {BACKLOG} decommissions, API latency {LATENCY_MS} ms, {title}\n"
        ));
        report.line("| run | phase | disabled p50 ms | disabled p99 ms | broker confirm p99 ms | confirm → disabled p99 ms | terminal p50 ms | terminal p99 ms | decommissions done meanwhile | failed | API calls / cmd | ok |");
        report.line("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        let mut ratios = Vec::new();
        let mut idle_p99s = Vec::new();
        let mut backlog_p99s = Vec::new();
        let mut after_confirm_ratios = Vec::new();
        let mut calls = Vec::new();
        let mut failed = 0;
        let mut last_trace = Vec::new();
        for run in 0..b.runs {
            let idle = phase(b, false, throttle, &format!("idle{run}{throttle}")).await;
            let busy = phase(b, true, throttle, &format!("busy{run}{throttle}")).await;
            for (name, p) in [("idle", &idle), ("backlog", &busy)] {
                report.line(&format!(
                    "| {run} | {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {} |",
                    p.disabled_p50,
                    p.disabled_p99,
                    p.confirm_p99,
                    p.after_confirm_p99,
                    p.terminal_p50,
                    p.terminal_p99,
                    p.decommissions_done,
                    p.failed,
                    p.api_calls_per_cmd,
                    p.ok
                ));
            }
            ratios.push(busy.disabled_p99 / idle.disabled_p99);
            after_confirm_ratios.push(busy.after_confirm_p99 / idle.after_confirm_p99);
            idle_p99s.push(idle.disabled_p99);
            backlog_p99s.push(busy.disabled_p99);
            calls.push(busy.api_calls_per_cmd);
            failed += idle.failed + busy.failed;
            last_trace = busy.rate_trace;
        }
        let ratio = median(ratios);
        report.line(&format!(
            "\nMedians of {} runs: publish → activation.disabled p99 idle **{:.0} ms**, behind the backlog **{:.0} ms**; ratio **{ratio:.2}** (target ≤ 1.2): {}",
            b.runs,
            median(idle_p99s),
            median(backlog_p99s),
            if ratio <= 1.2 { "met" } else { "NOT met" }
        ));
        report.line(&format!(
            "From the broker's confirm of the leak-alert on (the part after the broker has it), the backlog/idle p99 ratio is **{:.2}**.",
            median(after_confirm_ratios)
        ));
        if throttle {
            let per_cmd = median(calls);
            report.line(&format!(
                "Under throttling: {failed} commands failed (target 0), API calls per command {per_cmd:.2} (target ≤ 1.5)."
            ));
            report.line("\nAdaptive rate in the last backlog run (`lifecycle_ecs_allowed_rate_per_second`, seconds since the first publish → calls/s):\n");
            let samples: Vec<String> = last_trace
                .iter()
                .step_by(8)
                .map(|(t, r)| format!("{t:.0}s {r:.0}"))
                .collect();
            report.line(&format!("`{}`", samples.join(" · ")));
        }
    }
}
