//! The report: percentiles, medians over runs, the markdown tables and the
//! ratio lines against the targets, printed and optionally appended to a file
//! (`--out`) so a long run's results survive the terminal.

use crate::run::{Figures, RunCfg, RunResult};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

/// Where the report goes: stdout, and `out` if given.
#[derive(Debug, Clone)]
pub struct Report {
    pub out: Option<PathBuf>,
}

impl Report {
    pub fn line(&self, s: &str) {
        println!("{s}");
        if let Some(p) = &self.out
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        {
            let _ = writeln!(f, "{s}");
        }
    }

    /// `- what: **measured** (target …): met / NOT met`.
    pub fn ratio(&self, what: &str, measured: f64, target: &str, met: bool) {
        self.line(&format!(
            "- {what}: **{measured:.2}** (target {target}): {}",
            if met { "met" } else { "NOT met" }
        ));
    }
}

/// The nearest-rank percentile `p` of sorted values (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of the finite values (NaN when there are none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The medians of one configuration's successful runs.
#[derive(Debug, Clone)]
pub struct Summary {
    pub cfg: RunCfg,
    pub runs: usize,
    pub failed: usize,
    pub medians: Figures,
    pub duplicates: usize,
    pub outcomes: BTreeMap<String, usize>,
    /// The load average when the first run began.
    pub load: String,
}

impl Summary {
    pub fn of(cfg: RunCfg, results: &[RunResult], load: String) -> Summary {
        let ok: Vec<&RunResult> = results.iter().filter(|r| r.ok).collect();
        let pick = |f: fn(&Figures) -> f64| median(ok.iter().map(|r| f(&r.figures)).collect());
        let mut outcomes = BTreeMap::new();
        for r in &ok {
            for (k, v) in &r.outcomes {
                *outcomes.entry(k.clone()).or_insert(0) += v;
            }
        }
        Summary {
            runs: results.len(),
            failed: results.len() - ok.len(),
            medians: Figures {
                throughput: pick(|f| f.throughput),
                p50: pick(|f| f.p50),
                p90: pick(|f| f.p90),
                p99: pick(|f| f.p99),
                cpu_per_1000: pick(|f| f.cpu_per_1000),
                broker_cpu_per_1000: pick(|f| f.broker_cpu_per_1000),
                sim_cpu_per_1000: pick(|f| f.sim_cpu_per_1000),
                harness_cpu_per_1000: pick(|f| f.harness_cpu_per_1000),
                peak_rss_mib: pick(|f| f.peak_rss_mib),
                api_calls_per_cmd: pick(|f| f.api_calls_per_cmd),
            },
            duplicates: ok.iter().map(|r| r.duplicates).sum(),
            outcomes,
            load,
            cfg,
        }
    }

    /// Its row under [`HEADER`].
    pub fn row(&self) -> String {
        let c = &self.cfg;
        let m = &self.medians;
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!(
            "| {} | {} | {} | {} | {} ms | {:.0}% | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.2} | {} | {} | {}/{} | {} |",
            c.system.name(),
            c.n,
            c.concurrency,
            c.prefetch,
            c.latency_ms,
            c.error_rate * 100.0,
            c.rate.map_or("max".into(), |r| format!("{r:.0}/s")),
            m.throughput,
            m.p50,
            m.p90,
            m.p99,
            m.cpu_per_1000,
            m.broker_cpu_per_1000,
            m.sim_cpu_per_1000,
            m.harness_cpu_per_1000,
            m.peak_rss_mib,
            m.api_calls_per_cmd,
            self.duplicates,
            outcomes.join(" "),
            self.runs - self.failed,
            self.runs,
            self.load,
        )
    }
}

/// The benchmark table's heading ("harness CPU" is this tool's own).
pub const HEADER: &str = "| system | N | conc | prefetch | API latency | errors | rate | commands/s | p50 ms | p90 ms | p99 ms | CPU s / 1k | broker CPU s / 1k | sim CPU s / 1k | harness CPU s / 1k | peak RSS MiB | API calls / cmd | dups | outcomes | runs ok | load at start |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v[..1], 99.0), 1.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn medians_skip_what_was_not_measured() {
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![f64::NAN]).is_nan());
    }
}
