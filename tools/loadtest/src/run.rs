//! One benchmark run, and a configuration's runs summarized.
//!
//! A run gets a [`Rig`] (private vhost, fresh simulator, events queue) with
//! the collector on it, and one system under test. It measures
//! commands/s from the first publish to the last terminal event, latency per
//! command (publish → first terminal event, split at the event's
//! `occurred_at`), CPU seconds per 1,000 commands of the system, the broker,
//! the simulator and this tool, peak RSS (`VmHWM`), and API calls per command.

use crate::args::System;
use crate::collector::{Shared, latencies_ms, spawn_collector, tally, wait_all};
use crate::procstat::{broker_pid, clk_tck, cpu_seconds, loadavg, status_mib};
use crate::publisher::publish;
use crate::report::{Report, Summary, percentile};
use crate::rig::Rig;
use crate::sim::{Faults, Sim};
use crate::system::{Launcher, Spec, Sut, worker_env};
use lifecycle_worker::broker::topology::Topology;
use lifecycle_worker::settings::Settings;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Prefetch per unit of concurrency unless `--prefetch` says otherwise.
const PREFETCH_PER_SLOT: u32 = 4;

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunCfg {
    pub system: System,
    pub n: usize,
    pub concurrency: u32,
    pub prefetch: u16,
    pub latency_ms: u64,
    pub error_rate: f64,
    pub rate: Option<f64>,
    pub preload: bool,
}

impl RunCfg {
    /// A run at the system's own default prefetch, unpaced, not preloaded.
    pub fn new(
        system: System,
        n: usize,
        concurrency: u32,
        latency_ms: u64,
        error_rate: f64,
    ) -> RunCfg {
        RunCfg {
            system,
            n,
            concurrency,
            prefetch: default_prefetch(system, concurrency),
            latency_ms,
            error_rate,
            rate: None,
            preload: false,
        }
    }

    pub fn faults(&self) -> Faults {
        Faults {
            latency_ms: self.latency_ms,
            error_rate: self.error_rate,
        }
    }
}

/// Each system's own default prefetch for a concurrency: the worker's ratio
/// (256 for 64; a slot freed by a finished command finds the next delivery
/// already there) for the worker and the relay; the Python peer's default of
/// prefetch = concurrency, which is also its faster setting (it slows down with
/// more unacknowledged deliveries; see docs/benchmarks.md).
pub fn default_prefetch(system: System, concurrency: u32) -> u16 {
    let per_slot = match system {
        System::Worker | System::Relay => PREFETCH_PER_SLOT,
        System::Python => 1,
    };
    u16::try_from(concurrency.saturating_mul(per_slot))
        .unwrap_or(u16::MAX)
        .max(1)
}

/// What a run measures (a summary holds their medians).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Commands/s from the first publish to the last first terminal event.
    pub throughput: f64,
    /// Publish → first terminal event, ms.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// CPU seconds per 1,000 commands: the system's, the broker's, the
    /// simulator's, this tool's.
    pub cpu_per_1000: f64,
    pub broker_cpu_per_1000: f64,
    pub sim_cpu_per_1000: f64,
    pub harness_cpu_per_1000: f64,
    pub peak_rss_mib: f64,
    pub api_calls_per_cmd: f64,
}

#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub figures: Figures,
    pub duplicates: usize,
    pub outcomes: BTreeMap<String, usize>,
    /// p50 / p99 ms from publish to the terminal event's `occurred_at`, and
    /// from there to its arrival (NaN for the relay, whose events carry no time).
    pub to_event: (f64, f64),
    pub to_arrival: (f64, f64),
    pub ok: bool,
    pub note: String,
}

/// CPU seconds so far of the system, the simulator, the broker and this tool.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    system: f64,
    sim: f64,
    broker: f64,
    own: f64,
}

impl Cpu {
    fn now(sut: Option<&Sut>, sim: &Sim, broker: Option<u32>, tck: f64) -> Cpu {
        Cpu {
            system: sut.map_or(0.0, |s| cpu_seconds(s.pid(), tck)),
            sim: cpu_seconds(sim.pid(), tck),
            broker: broker.map_or(f64::NAN, |b| cpu_seconds(b, tck)),
            own: cpu_seconds(std::process::id(), tck),
        }
    }
}

/// What every run of a benchmark shares.
#[derive(Debug, Clone)]
pub struct Bench {
    pub launcher: Launcher,
    pub report: Report,
    pub runs: usize,
    pub timeout: Duration,
    pub dump_times: Option<String>,
}

impl Bench {
    /// `self.runs` runs of `cfg`; prints each run to stderr and the medians'
    /// row to the report.
    pub async fn measure(&self, cfg: RunCfg) -> Summary {
        let load = loadavg();
        let mut results = Vec::new();
        for r in 0..self.runs {
            let tag = format!(
                "c{}-l{}-e{}-{}",
                cfg.concurrency,
                cfg.latency_ms,
                (cfg.error_rate * 100.0) as u32,
                r
            );
            let res = self.run_once(&cfg, &tag).await;
            eprintln!(
                "  {} {tag}: {:.0}/s p50 {:.1} p99 {:.1} ms cpu/1k {:.3}s (broker {:.3}s, sim {:.3}s, harness {:.3}s) rss {:.1} MiB dups {} {:?} (to event p50/p99 {:.1}/{:.1} ms, event to arrival {:.1}/{:.1} ms) {}",
                cfg.system.name(),
                res.figures.throughput,
                res.figures.p50,
                res.figures.p99,
                res.figures.cpu_per_1000,
                res.figures.broker_cpu_per_1000,
                res.figures.sim_cpu_per_1000,
                res.figures.harness_cpu_per_1000,
                res.figures.peak_rss_mib,
                res.duplicates,
                res.outcomes,
                res.to_event.0,
                res.to_event.1,
                res.to_arrival.0,
                res.to_arrival.1,
                if res.ok { "" } else { &res.note }
            );
            results.push(res);
        }
        let s = Summary::of(cfg, &results, load);
        self.report.line(&s.row());
        s
    }

    async fn run_once(&self, cfg: &RunCfg, tag: &str) -> RunResult {
        let tck = clk_tck();
        let logdir = &self.launcher.logdir;
        let sim = Sim::start(&self.launcher.worker, cfg.n, cfg.faults(), logdir, tag).await;
        let rig = Rig::new(sim).await;
        let shared = tally(cfg.n);
        spawn_collector(&rig.conn, &rig.events, shared.clone()).await;
        let publishing = rig.connect("harness publisher").await;
        let spec = Spec {
            system: cfg.system,
            concurrency: cfg.concurrency,
            prefetch: cfg.prefetch,
            url: &rig.url,
            endpoint: &rig.endpoint,
            tag,
            extra: &[],
        };

        let mut result = RunResult::default();
        let broker = broker_pid();
        let started;
        let mut sut;
        let before;
        if cfg.preload {
            // Commands queued before the system starts: the tool declares the
            // worker's topology with the worker's own code and settings.
            let port = lifecycle_testkit::free_port();
            let env = worker_env(&rig.url, &rig.endpoint, cfg.concurrency, cfg.prefetch, port);
            let settings = Settings::load(&[], env).expect("settings");
            Topology::from_settings(&settings)
                .declare(&rig.conn)
                .await
                .expect("topology");
            if let Err(e) = publish(&publishing, &shared, 0..cfg.n, None).await {
                result.note = e;
                return result;
            }
            started = Instant::now();
            sut = self.launcher.spawn(&spec);
            // The system's CPU counts from its start.
            before = Cpu::now(None, &rig.sim, broker, tck);
            if !wait_all(&shared, self.timeout).await {
                result.note = "timed out".into();
            }
        } else {
            sut = self.launcher.spawn(&spec);
            if let Err(e) = sut.wait_ready(Duration::from_secs(60)).await {
                result.note = format!("{} not ready: {e}", cfg.system.name());
                return result;
            }
            before = Cpu::now(Some(&sut), &rig.sim, broker, tck);
            started = Instant::now();
            // Publishing runs concurrently with the wait for the last event.
            let (p, w) = tokio::join!(
                publish(&publishing, &shared, 0..cfg.n, cfg.rate),
                wait_all(&shared, self.timeout)
            );
            if let Err(e) = p {
                result.note = e;
            }
            if !w {
                result.note = format!("timed out; {}", result.note);
            }
        }
        let after = Cpu::now(Some(&sut), &rig.sim, broker, tck);
        result.figures.peak_rss_mib = status_mib(sut.pid(), "VmHWM:");
        result.figures.api_calls_per_cmd = rig.sim.request_count().await as f64 / cfg.n as f64;
        if let Ok(Some(st)) = sut.child.try_wait() {
            result.note = format!("{} exited ({st}); {}", cfg.system.name(), result.note);
        }
        // Let late duplicates arrive before counting them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.tally_into(&mut result, cfg, &shared, started, (before, after), tag);
        if !result.ok {
            result.note = format!("{}; log: {}", result.note, sut.log_tail());
        }
        sut.stop().await;
        let _ = publishing.close(200, "done".into()).await;
        rig.close().await;
        result
    }

    /// Throughput, latencies and CPU per 1,000 commands from the tally and
    /// the CPU readings before and after the commands.
    fn tally_into(
        &self,
        result: &mut RunResult,
        cfg: &RunCfg,
        shared: &Shared,
        started: Instant,
        (before, after): (Cpu, Cpu),
        tag: &str,
    ) {
        let t = shared.0.lock().expect("tally");
        let first = if cfg.preload {
            started
        } else {
            t.sent.iter().flatten().min().copied().unwrap_or(started)
        };
        let f = &mut result.figures;
        if let Some(last) = t.done.iter().flatten().max() {
            f.throughput = t.completed as f64 / last.duration_since(first).as_secs_f64();
        }
        let split = |part: &dyn Fn(usize) -> Option<i64>| {
            let mut v: Vec<f64> = (0..t.n)
                .filter_map(part)
                .map(|us| us as f64 / 1e3)
                .collect();
            v.sort_by(f64::total_cmp);
            (percentile(&v, 50.0), percentile(&v, 99.0))
        };
        if let Some(prefix) = &self.dump_times {
            // Per command: published, terminal event built, arrived (unix µs), for timelines.
            let mut out = String::from("sent_us,built_us,arrived_us\n");
            for i in 0..t.n {
                let built = t.built_us[i].map_or(String::new(), |b| b.to_string());
                let _ = writeln!(out, "{},{built},{}", t.sent_us[i], t.done_us[i]);
            }
            let _ = std::fs::write(format!("{prefix}.{}.{tag}.csv", cfg.system.name()), out);
        }
        result.to_event = split(&|i| Some(t.built_us[i]? - t.sent_us[i]));
        result.to_arrival = split(&|i| Some(t.done_us[i] - t.built_us[i]?));
        let lat = latencies_ms(&t);
        f.p50 = percentile(&lat, 50.0);
        f.p90 = percentile(&lat, 90.0);
        f.p99 = percentile(&lat, 99.0);
        let per_1000 = |seconds: f64| seconds / t.completed.max(1) as f64 * 1000.0;
        f.cpu_per_1000 = per_1000(after.system - before.system);
        f.broker_cpu_per_1000 = per_1000(after.broker - before.broker);
        f.sim_cpu_per_1000 = per_1000(after.sim - before.sim);
        f.harness_cpu_per_1000 = per_1000(after.own - before.own);
        result.duplicates = t.duplicates;
        result.outcomes = t.outcomes.clone();
        result.ok = t.completed == cfg.n && result.note.is_empty();
        if t.completed != cfg.n {
            result.note = format!("{} of {} completed; {}", t.completed, cfg.n, result.note);
        }
    }
}
