//! The command line. `loadtest --scenario …` runs benchmarks; `loadtest soak`
//! the endurance run; `loadtest relay` is the broker-ceiling system the
//! benchmarks start as a child (a subcommand, so the child is an ordinary
//! invocation of this binary rather than a mode hidden behind magic flags).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Where the Python peer lives when `--python-peer` does not say: next to the
/// repository, as `../shared/peers/python-worker` from its root.
const PYTHON_PEER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/peers/python-worker"
);

/// Benchmarks and the endurance run of lifecycle-worker (docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The endurance run: N commands paced over M minutes with 30 % injected
    /// errors, throttling bursts, forced disconnects and two SIGKILLs.
    Soak(SoakArgs),
    /// The broker's ceiling as a system under test: a bare lapin consumer that
    /// publishes two confirmed events per command. Started by the benchmarks.
    Relay(RelayArgs),
}

/// Which scenario(s) a benchmark run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// ceiling, python, little, errors, latency, rss (not matrix, custom, contain).
    All,
    Ceiling,
    Python,
    Little,
    Errors,
    Latency,
    Rss,
    Matrix,
    Custom,
    Contain,
}

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum System {
    /// The release `lifecycle-worker run`.
    Worker,
    /// `loadtest relay`: the broker's ceiling.
    Relay,
    /// The Python peer (`--python-peer`).
    Python,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Worker => "worker",
            System::Relay => "relay",
            System::Python => "python",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    pub scenario: Scenario,
    /// Runs per configuration (the tables show medians).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Commands per run.
    #[arg(long, default_value_t = 5000)]
    pub n: usize,
    /// Systems to run; each scenario has its own default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub systems: Vec<System>,
    /// Concurrencies (matrix, custom, ceiling); others take the first.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<u32>,
    /// Simulator API latencies (matrix, custom; little takes the first).
    #[arg(long, value_delimiter = ',')]
    pub latency_ms: Vec<u64>,
    /// Injected `InternalError.Dispatch` rates (matrix, custom).
    #[arg(long, value_delimiter = ',')]
    pub error_rate: Vec<f64>,
    /// Prefetch for every run instead of each system's default.
    #[arg(long)]
    pub prefetch: Option<u16>,
    /// Publish at R commands/s instead of as fast as the broker takes them.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Queue all commands before the system starts.
    #[arg(long)]
    pub preload: bool,
    /// The Python peer's interpreter (a venv with its requirements).
    #[arg(long, env = "BENCH_PYTHON", default_value = "python3")]
    pub python: String,
    /// The Python peer's directory.
    #[arg(long, default_value = PYTHON_PEER)]
    pub python_peer: PathBuf,
    /// Writes each command's publish, event-built and arrival times (unix µs)
    /// as CSV to `PREFIX.<system>.<run>.csv`, for timelines.
    #[arg(long, env = "BENCH_DUMP_TIMES", value_name = "PREFIX")]
    pub dump_times: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Commands in all.
    #[arg(long, default_value_t = 50_000)]
    pub n: usize,
    /// Minutes to pace them over.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    #[command(flatten)]
    pub common: Common,
}

/// What the benchmarks and the soak both take.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// How long to wait for the last terminal event (per run; the soak: past its duration).
    #[arg(long = "timeout-s", value_name = "SECONDS", default_value_t = 600)]
    pub timeout_s: u64,
    /// Also append the markdown tables to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The `lifecycle-worker` executable to drive. Unless given, the tool has
    /// cargo build the release binary of this checkout (a no-op when it is up
    /// to date) and uses that, so it never measures a stale build.
    #[arg(long, env = "LOADTEST_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
    /// A command the worker runs under, e.g. `valgrind --tool=callgrind`.
    #[arg(
        long,
        env = "BENCH_WORKER_WRAP",
        value_name = "COMMAND",
        allow_hyphen_values = true
    )]
    pub worker_wrap: Option<String>,
}

impl Common {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }
}

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// The broker (with its vhost).
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 64)]
    pub prefetch: u16,
    /// Commands relayed at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn lists_split_on_commas() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "--scenario",
            "custom",
            "--systems",
            "worker,relay",
            "--concurrency",
            "1,64",
            "--error-rate",
            "0,0.3",
        ])
        .expect("parses");
        assert_eq!(cli.bench.scenario, Scenario::Custom);
        assert_eq!(cli.bench.systems, [System::Worker, System::Relay]);
        assert_eq!(cli.bench.concurrency, [1, 64]);
        assert_eq!(cli.bench.error_rate, [0.0, 0.3]);
    }

    #[test]
    fn soak_is_a_subcommand_with_its_own_sizes() {
        let cli = Cli::try_parse_from(["loadtest", "soak", "--n", "5000", "--minutes", "2"])
            .expect("parses");
        match cli.command {
            Some(Command::Soak(s)) => assert_eq!((s.n, s.minutes), (5000, 2.0)),
            other => panic!("not soak: {other:?}"),
        }
    }
}
