//! `loadtest soak`: the endurance run of issue 6.
//!
//! N commands (default 50,000) paced over ~M minutes (default 10) with 30 %
//! injected `InternalError.Dispatch`, a burst of `Throttling.User` answers
//! every 45 s, the worker's broker connections force-closed every minute
//! (`rabbitmqctl close_connection`), and the worker SIGKILLed and restarted at
//! one third and two thirds of the run. At the end it checks that every command
//! has a terminal `command.completed` (and counts the duplicates the dedupe rule
//! on (`command_id`, `type`) removes), that the simulator deregistered no
//! instance twice, that RSS stayed flat, and prints a summary table.

use crate::args::{SoakArgs, System};
use crate::collector::{latencies_ms, spawn_collector, tally};
use crate::procstat::{clk_tck, cpu_seconds, loadavg, status_mib, time_now};
use crate::publisher::publish;
use crate::report::{Report, percentile};
use crate::rig::Rig;
use crate::scenarios::wrap_words;
use crate::sim::{Faults, Sim};
use crate::system::{Launcher, Spec, Sut};
use lifecycle_testkit::connections_named;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLOSE_EVERY: Duration = Duration::from_secs(60);
const THROTTLE_EVERY: Duration = Duration::from_secs(45);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// 30 % dispatch errors, and with `throttle_burst` the next 300 calls
/// answered `Throttling.User` with a 250 ms retry-after.
fn soak_faults(throttle_burst: bool) -> serde_json::Value {
    let mut v = serde_json::json!({ "dispatch_error_rate": 0.3 });
    if throttle_burst {
        v["fail_next"] = serde_json::json!([{
            "count": 300,
            "code": "Throttling.User",
            "status": 400,
            "retry_after_ms": 250
        }]);
    }
    v
}

/// The broker's ids of the worker's two connections on `vhost`.
async fn worker_connections(vhost: &str) -> Vec<String> {
    let mut all = connections_named(vhost, "lifecycle-worker").await;
    all.extend(connections_named(vhost, "lifecycle-worker-publisher").await);
    all
}

/// Closes the connections; how many it closed (one may be gone already).
async fn close_connections(pids: Vec<String>) -> usize {
    tokio::task::spawn_blocking(move || {
        pids.iter()
            .filter(|p| {
                Command::new("rabbitmqctl")
                    .args(["-q", "close_connection", p, "soak: forced close"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .count()
    })
    .await
    .unwrap_or(0)
}

struct Sample {
    at: f64,
    incarnation: usize,
    rss_mib: f64,
}

/// Per incarnation, after 30 s of warm-up: (incarnation, mean RSS of the
/// first half of the samples, of the second half, the maximum).
fn rss_growth(samples: &[Sample], incarnations: usize) -> Vec<(usize, f64, f64, f64)> {
    let mut growth = Vec::new();
    for inc in 0..=incarnations {
        let first_at = samples
            .iter()
            .find(|s| s.incarnation == inc)
            .map_or(0.0, |s| s.at);
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.incarnation == inc && s.at >= first_at + 30.0 && s.rss_mib.is_finite())
            .map(|s| s.rss_mib)
            .collect();
        if v.len() >= 4 {
            let (a, b) = v.split_at(v.len() / 2);
            let ma = a.iter().sum::<f64>() / a.len() as f64;
            let mb = b.iter().sum::<f64>() / b.len() as f64;
            let max = v.iter().copied().fold(0.0, f64::max);
            growth.push((inc, ma, mb, max));
        }
    }
    growth
}

/// Second half within 10 % + 1 MiB of the first: no leak worth the name.
fn flat(first: f64, second: f64) -> bool {
    second <= first * 1.10 + 1.0
}

pub async fn soak(args: SoakArgs, worker: PathBuf) {
    let report = Report {
        out: args.common.out.clone(),
    };
    let n = args.n;
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let rate = n as f64 / duration.as_secs_f64();
    let logdir = std::env::temp_dir().join(format!("lw-soak-{}", std::process::id()));
    std::fs::create_dir_all(&logdir).expect("log dir");
    let load_start = loadavg();
    eprintln!(
        "soak: {n} commands at {rate:.1}/s over {:.1} min; logs in {}",
        args.minutes,
        logdir.display()
    );
    let launcher = Launcher {
        worker,
        wrap: wrap_words(args.common.worker_wrap.as_deref()),
        python: None,
        logdir: logdir.clone(),
    };

    let faults = Faults {
        latency_ms: 0,
        error_rate: 0.3,
    };
    let sim = Sim::start(&launcher.worker, n, faults, &logdir, "soak").await;
    let rig = Rig::new(sim).await;
    let shared = tally(n);
    spawn_collector(&rig.conn, &rig.events, shared.clone()).await;

    let spawn = |incarnation: usize| -> Sut {
        launcher.spawn(&Spec {
            system: System::Worker,
            concurrency: 64,
            prefetch: 256,
            url: &rig.url,
            endpoint: &rig.endpoint,
            tag: &incarnation.to_string(),
            extra: &[],
        })
    };
    let tck = clk_tck();
    let mut incarnation = 0usize;
    let mut sut = spawn(incarnation);
    sut.wait_ready(Duration::from_secs(60))
        .await
        .expect("worker ready");
    let mut cpu_total = 0.0;
    let mut cpu0 = cpu_seconds(sut.pid(), tck);
    let mut peaks: Vec<f64> = Vec::new();

    let started = Instant::now();
    let publisher = {
        let shared = shared.clone();
        let pconn = rig.connect("harness publisher").await;
        tokio::spawn(async move { publish(&pconn, &shared, 0..n, Some(rate)).await })
    };

    let kills = [duration / 3, duration * 2 / 3];
    let mut next_kill = 0;
    let mut next_close = CLOSE_EVERY;
    let mut next_throttle = THROTTLE_EVERY;
    let mut next_sample = Duration::ZERO;
    let mut closes = 0usize;
    let mut closed_conns = 0usize;
    let mut bursts = 0usize;
    let mut samples: Vec<Sample> = Vec::new();
    let deadline = duration + args.common.timeout();
    let mut all_done = false;
    while started.elapsed() < deadline {
        let now = started.elapsed();
        if now >= next_sample {
            samples.push(Sample {
                at: now.as_secs_f64(),
                incarnation,
                rss_mib: status_mib(sut.pid(), "VmRSS:"),
            });
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_close && now < duration {
            closes += 1;
            closed_conns += close_connections(worker_connections(&rig.vhost.name).await).await;
            next_close += CLOSE_EVERY;
        }
        if now >= next_throttle && now < duration {
            bursts += 1;
            rig.sim.set_faults(&soak_faults(true)).await;
            next_throttle += THROTTLE_EVERY;
        }
        if next_kill < kills.len() && now >= kills[next_kill] {
            next_kill += 1;
            peaks.push(status_mib(sut.pid(), "VmHWM:"));
            cpu_total += cpu_seconds(sut.pid(), tck) - cpu0;
            sut.signal("-KILL");
            let _ = sut.child.wait();
            incarnation += 1;
            eprintln!(
                "soak: worker SIGKILLed at {:.0} s; restarting",
                now.as_secs_f64()
            );
            sut = spawn(incarnation);
            if let Err(e) = sut.wait_ready(Duration::from_secs(60)).await {
                eprintln!("soak: restarted worker not ready: {e}");
            }
            cpu0 = cpu_seconds(sut.pid(), tck);
        }
        let (completed, total) = {
            let t = shared.0.lock().expect("tally");
            (t.completed, t.n)
        };
        if completed == total && publisher.is_finished() {
            all_done = true;
            break;
        }
        if let Ok(Some(st)) = sut.child.try_wait() {
            eprintln!(
                "soak: worker exited unexpectedly ({st}): {}",
                sut.log_tail()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed();
    let publish_result = if publisher.is_finished() {
        publisher.await.unwrap_or_else(|e| Err(e.to_string()))
    } else {
        publisher.abort();
        Err("publisher did not finish".into())
    };
    // Late duplicates (redeliveries after the kills) arrive here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    peaks.push(status_mib(sut.pid(), "VmHWM:"));
    cpu_total += cpu_seconds(sut.pid(), tck) - cpu0;
    let state = rig.sim.state().await;
    sut.stop().await;

    let deregs = state["Deregistrations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let twice = deregs
        .values()
        .filter(|v| v.as_u64().unwrap_or(0) > 1)
        .count();
    let deregistered = deregs.len();
    let (missing, with_dups, duplicates, outcomes, lat) = {
        let t = shared.0.lock().expect("tally");
        (
            t.completions.iter().filter(|c| **c == 0).count(),
            t.completions.iter().filter(|c| **c > 1).count(),
            t.duplicates,
            t.outcomes.clone(),
            latencies_ms(&t),
        )
    };
    let growth = rss_growth(&samples, incarnation);
    let rss_flat = growth.iter().all(|(_, a, b, _)| flat(*a, *b));

    let ok_completed = missing == 0;
    let ok_deregs = twice == 0 && deregistered == n;
    let ok_publish = publish_result.is_ok();
    report.line(&format!(
        "\n### soak — {n} commands, {:.1} min target, load {load_start} at start, {} at end, {}\n",
        args.minutes,
        loadavg(),
        time_now()
    ));
    report.line("| check | value | verdict |\n| --- | --- | --- |");
    let v = |ok: bool| if ok { "ok" } else { "FAILED" };
    report.line(&format!(
        "| commands published (paced {rate:.1}/s) | {} {} | {} |",
        n,
        publish_result
            .as_ref()
            .err()
            .map_or(String::new(), |e| format!("({e})")),
        v(ok_publish)
    ));
    report.line(&format!(
        "| wall time until the last terminal event | {:.0} s | {} |",
        elapsed.as_secs_f64(),
        v(all_done)
    ));
    report.line(&format!(
        "| commands with a terminal `command.completed` | {} of {n} (missing {missing}) | {} |",
        n - missing,
        v(ok_completed)
    ));
    report.line(&format!("| duplicate terminal events removed by the dedupe rule | {duplicates} (on {with_dups} commands) | counted |"));
    let outcome_list: Vec<String> = outcomes.iter().map(|(k, c)| format!("{k}: {c}")).collect();
    let all_succeeded = outcomes.keys().all(|k| k == "succeeded");
    report.line(&format!(
        "| terminal outcomes (with duplicates) | {} | {} |",
        outcome_list.join(", "),
        v(all_succeeded)
    ));
    report.line(&format!(
        "| instances deregistered (simulator) | {deregistered} of {n} | {} |",
        v(deregistered == n)
    ));
    report.line(&format!(
        "| instances deregistered more than once | {twice} | {} |",
        v(ok_deregs)
    ));
    report.line(&format!(
        "| forced connection closes | {closes} rounds, {closed_conns} connections | done |"
    ));
    report.line(&format!(
        "| throttling bursts (300 × Throttling.User, retry-after 250 ms) | {bursts} | done |"
    ));
    report.line(&format!(
        "| worker SIGKILLs + restarts | {incarnation} | done |"
    ));
    report.line(&format!(
        "| latency p50 / p99 publish → first terminal event | {:.0} / {:.0} ms | info |",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0)
    ));
    report.line(&format!(
        "| worker CPU per 1,000 commands (all incarnations) | {:.3} s | info |",
        cpu_total / n as f64 * 1000.0
    ));
    let peaks_s: Vec<String> = peaks.iter().map(|p| format!("{p:.1}")).collect();
    report.line(&format!(
        "| peak RSS per incarnation (VmHWM) | {} MiB | {} |",
        peaks_s.join(" / "),
        v(peaks.iter().all(|p| *p <= 40.0))
    ));
    for (inc, a, b, max) in &growth {
        report.line(&format!("| RSS incarnation {inc}: mean first half → second half (max) | {a:.1} → {b:.1} MiB ({max:.1}) | {} |", v(flat(*a, *b))));
    }
    report.line(&format!(
        "| RSS flat (second half ≤ first half + 10 % + 1 MiB) | {rss_flat} | {} |",
        v(rss_flat)
    ));
    let pass = ok_publish && all_done && ok_completed && ok_deregs && rss_flat && all_succeeded;
    report.line(&format!(
        "\nsoak verdict: {}",
        if pass { "PASS" } else { "FAIL" }
    ));
    rig.close().await;
    if pass {
        let _ = std::fs::remove_dir_all(&logdir);
    } else {
        eprintln!("worker logs kept in {}", logdir.display());
    }
}
