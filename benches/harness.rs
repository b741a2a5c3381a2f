//! The benchmark and endurance harness (issue 6).
//!
//! `cargo bench --locked --bench harness -- --scenario all --runs 5 --n 5000`
//! `cargo bench --locked --bench harness -- --soak`
//!
//! Every run gets a private RabbitMQ vhost, a fresh ECS simulator process
//! (`lifecycle-worker simulate`) seeded with `mi-bench000001`..., an events
//! queue bound to `lifecycle.events` with `#` (collected on one connection,
//! commands published on another), and one system under test started as a
//! child process:
//!
//! - `worker`: the release `lifecycle-worker run`;
//! - `relay`: this binary in `--relay-child` mode, a bare lapin consumer on the
//!   same queue (declared by the worker's own topology code) that publishes two
//!   persistent events with confirms per command, then acks: the broker ceiling.
//!   It publishes the way the worker does (its own connection, both events
//!   handed to lapin before either write is awaited), so it stays a ceiling;
//! - `python`: the Python peer in `../shared/peers/python-worker/`.
//!
//! The harness publishes N decommission commands (persistent, confirmed,
//! pipelined; optionally paced with `--rate`) and measures commands/s from the
//! first publish to the last terminal `command.completed`, per-command latency
//! (publish time per command id → first terminal event, split at the terminal
//! event's `occurred_at`), CPU seconds per 1,000 commands (`/proc/<pid>/stat`)
//! of the system, the broker, the simulator and the harness, and peak RSS
//! (`VmHWM`).
//! See `docs/benchmarks.md` for the scenarios and the recorded results.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use lifecycle_worker::broker::topology::Topology;
use lifecycle_worker::settings::Settings;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, Semaphore};

const KEY_ID: &str = "benchid";
const KEY_SECRET: &str = "benchsecret";
const REGION: &str = "cn-hangzhou";
const PYTHON_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/peers/python-worker");
const COMPLETED: &str = "command.completed";
/// The errors scenario runs this many times N commands (see there).
const ERRORS_N_FACTOR: usize = 4;
/// Prefetch per unit of concurrency unless `--prefetch` says otherwise.
const PREFETCH_PER_SLOT: u32 = 4;

// ---------------------------------------------------------------------------
// Arguments

#[derive(Debug, Clone)]
struct Args {
    scenario: String,
    runs: usize,
    n: usize,
    /// Systems to run (`worker`, `relay`, `python`); scenario defaults when empty.
    systems: Vec<System>,
    concurrency: Vec<u32>,
    latency_ms: Vec<u64>,
    error_rate: Vec<f64>,
    prefetch: Option<u16>,
    rate: Option<f64>,
    preload: bool,
    timeout: Duration,
    out: Option<PathBuf>,
    python: String,
    // soak
    soak: bool,
    soak_n: usize,
    soak_minutes: f64,
    // relay child
    relay_child: bool,
    url: String,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            scenario: "all".into(),
            runs: 5,
            n: 5000,
            systems: Vec::new(),
            concurrency: Vec::new(),
            latency_ms: Vec::new(),
            error_rate: Vec::new(),
            prefetch: None,
            rate: None,
            preload: false,
            timeout: Duration::from_secs(600),
            out: None,
            python: std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into()),
            soak: false,
            soak_n: 50_000,
            soak_minutes: 10.0,
            relay_child: false,
            url: String::new(),
        }
    }
}

const USAGE: &str = "\
harness [--scenario all|ceiling|python|little|errors|latency|rss|matrix|custom|contain]
        [--runs 5] [--n 5000] [--systems worker,relay,python]
        [--concurrency 1,16,64,256] [--latency-ms 0,50] [--error-rate 0,0.3]
        [--prefetch P] [--rate R] [--preload] [--timeout-s 600] [--out FILE]
        [--python /path/to/python3]
harness --soak [--soak-n 50000] [--soak-minutes 10] [--out FILE]";

fn list<T: std::str::FromStr>(s: &str, what: &str) -> Vec<T> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            x.trim()
                .parse()
                .unwrap_or_else(|_| die(&format!("bad {what}: {x}")))
        })
        .collect()
}

fn die(msg: &str) -> ! {
    eprintln!("{msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--bench" => {} // passed by `cargo bench`
            "--scenario" => a.scenario = val(),
            "--runs" => a.runs = list(&val(), "runs")[0],
            "--n" => a.n = list(&val(), "n")[0],
            "--systems" => a.systems = list(&val(), "systems"),
            "--concurrency" => a.concurrency = list(&val(), "concurrency"),
            "--latency-ms" => a.latency_ms = list(&val(), "latency"),
            "--error-rate" => a.error_rate = list(&val(), "error rate"),
            "--prefetch" => a.prefetch = Some(list(&val(), "prefetch")[0]),
            "--rate" => a.rate = Some(list(&val(), "rate")[0]),
            "--preload" => a.preload = true,
            "--timeout-s" => a.timeout = Duration::from_secs(list(&val(), "timeout")[0]),
            "--out" => a.out = Some(PathBuf::from(val())),
            "--python" => a.python = val(),
            "--soak" => a.soak = true,
            "--soak-n" => a.soak_n = list(&val(), "soak n")[0],
            "--soak-minutes" => a.soak_minutes = list(&val(), "soak minutes")[0],
            "--relay-child" => a.relay_child = true,
            "--url" => a.url = val(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    a
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum System {
    Worker,
    Relay,
    Python,
}

impl std::str::FromStr for System {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "worker" => Ok(System::Worker),
            "relay" => Ok(System::Relay),
            "python" => Ok(System::Python),
            _ => Err(s.into()),
        }
    }
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Worker => "worker",
            System::Relay => "relay",
            System::Python => "python",
        }
    }
}

// ---------------------------------------------------------------------------
// Small utilities

fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private vhost, deleted on drop.
struct Vhost {
    name: String,
}

impl Vhost {
    async fn create(tag: &str) -> Vhost {
        let name = format!("bench-{tag}-{}", uuid::Uuid::new_v4().simple());
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["-q", "add_vhost", &n]).expect("add_vhost");
            rabbitmqctl(&["-q", "set_permissions", "-p", &n, "guest", ".*", ".*", ".*"])
                .expect("set_permissions");
        })
        .await
        .expect("vhost setup");
        Vhost { name }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // After the comm field: state is field 3, utime field 14, stime field 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / tck
}

/// The RabbitMQ node's process (`beam.smp`), to account for the broker's CPU.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(pid)
    })
}

/// A `/proc/<pid>/status` field in MiB (`VmHWM`, `VmRSS`).
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn instance_id(i: usize) -> String {
    format!("mi-bench{:06}", i + 1)
}

fn command_id(i: usize) -> String {
    format!("bench-{i:07}")
}

fn index_of(command_id: &str) -> Option<usize> {
    command_id.strip_prefix("bench-")?.parse().ok()
}

/// The simulator's seed: `n` managed instances `mi-bench000001`...
fn seed_json(n: usize) -> String {
    let mut s = String::with_capacity(n * 400 + 64);
    s.push_str("{\"Instances\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        let id = instance_id(i);
        let _ = write!(
            s,
            "{{\"RegionId\":\"{REGION}\",\"InstanceId\":\"{id}\",\"InstanceName\":\"{id}\",\
             \"Hostname\":\"{id}.example.internal\",\"MachineId\":\"m{i:06}\",\
             \"IntranetIp\":\"10.0.0.1\",\"OsType\":\"linux\",\"OsVersion\":\"Ubuntu 24.04\",\
             \"AgentVersion\":\"2.2.3.0\",\"RegistrationTime\":\"2026-11-01T03:00:00Z\",\
             \"InvocationCount\":0,\"Connected\":true}}"
        );
    }
    s.push_str("],\"Activations\":[]}");
    s
}

/// The ECS simulator in a process of its own (`lifecycle-worker simulate`),
/// as the real API is: its work neither delays the harness's event collector
/// (which timestamps arrivals) nor hides in the harness's CPU figure.
struct Sim {
    child: Child,
    endpoint: String,
    seed: PathBuf,
}

/// Latency and injected `InternalError.Dispatch` rate of a simulator.
struct Faults {
    latency_ms: u64,
    error_rate: f64,
}

fn faults(latency_ms: u64, error_rate: f64) -> Faults {
    Faults {
        latency_ms,
        error_rate,
    }
}

async fn start_sim(n: usize, faults: Faults, logdir: &std::path::Path, tag: &str) -> Sim {
    let seed = logdir.join(format!("seed-{tag}.json"));
    std::fs::write(&seed, seed_json(n)).expect("seed file");
    start_sim_seeded(&seed, faults, logdir, tag).await
}

/// A simulator serving the world in `seed` (removed with the simulator).
async fn start_sim_seeded(
    seed: &std::path::Path,
    faults: Faults,
    logdir: &std::path::Path,
    tag: &str,
) -> Sim {
    let seed = seed.to_path_buf();
    let log = std::fs::File::create(logdir.join(format!("sim-{tag}.log"))).expect("sim log");
    let port = free_port();
    let child = clean_command(env!("CARGO_BIN_EXE_lifecycle-worker"))
        .arg("simulate")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--seed")
        .arg(&seed)
        .args(["--key", &format!("{KEY_ID}:{KEY_SECRET}")])
        .args(["--allowed-regions", REGION])
        .args(["--dispatch-error-rate", &faults.error_rate.to_string()])
        .args(["--latency-ms", &faults.latency_ms.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("simulator starts");
    let sim = Sim {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        seed,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{}/_sim/faults", sim.endpoint))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the simulator did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim
}

impl Sim {
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn shutdown(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.seed);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
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

// ---------------------------------------------------------------------------
// The event collector

/// What the collector saw, indexed by command number.
struct Tally {
    n: usize,
    sent: Vec<Option<Instant>>,
    done: Vec<Option<Instant>>,
    /// Wall clock (unix µs) at publish, at the terminal event's `occurred_at`
    /// (when the system built it), and at its arrival: where the latency goes.
    sent_us: Vec<i64>,
    built_us: Vec<Option<i64>>,
    done_us: Vec<i64>,
    completions: Vec<u32>,
    completed: usize,
    duplicates: usize,
    outcomes: BTreeMap<String, usize>,
    events: usize,
    foreign: usize,
}

type Shared = Arc<(Mutex<Tally>, Notify)>;

fn tally(n: usize) -> Shared {
    Arc::new((
        Mutex::new(Tally {
            n,
            sent: vec![None; n],
            done: vec![None; n],
            sent_us: vec![0; n],
            built_us: vec![None; n],
            done_us: vec![0; n],
            completions: vec![0; n],
            completed: 0,
            duplicates: 0,
            outcomes: BTreeMap::new(),
            events: 0,
            foreign: 0,
        }),
        Notify::new(),
    ))
}

#[derive(Deserialize)]
struct Terminal<'a> {
    #[serde(borrow)]
    command_id: Option<&'a str>,
    #[serde(borrow, default)]
    outcome: Option<&'a str>,
    #[serde(borrow, default)]
    occurred_at: Option<&'a str>,
}

/// An RFC 3339 time as unix microseconds.
fn rfc3339_us(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Consumes the events queue (no-ack) into `shared` until the connection closes.
async fn spawn_collector(conn: &Connection, queue: &str, shared: Shared) {
    let chan = conn.create_channel().await.expect("collector channel");
    let mut consumer = chan
        .basic_consume(
            queue.into(),
            "bench-collector".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume events");
    tokio::spawn(async move {
        let _chan = chan;
        while let Some(Ok(d)) = consumer.next().await {
            let now = Instant::now();
            let terminal = d.routing_key.as_str() == COMPLETED;
            let (lock, notify) = &*shared;
            let mut t = lock.lock().expect("tally");
            t.events += 1;
            if !terminal {
                continue;
            }
            let parsed: Option<Terminal<'_>> = serde_json::from_slice(&d.data).ok();
            let Some(i) = parsed
                .as_ref()
                .and_then(|p| p.command_id)
                .and_then(index_of)
                .filter(|i| *i < t.n)
            else {
                t.foreign += 1;
                continue;
            };
            let outcome = parsed
                .as_ref()
                .and_then(|p| p.outcome)
                .unwrap_or("relayed")
                .to_owned();
            *t.outcomes.entry(outcome).or_default() += 1;
            t.completions[i] += 1;
            if t.done[i].is_none() {
                t.done[i] = Some(now);
                t.done_us[i] = unix_micros();
                t.built_us[i] = parsed
                    .as_ref()
                    .and_then(|p| p.occurred_at)
                    .and_then(rfc3339_us);
                t.completed += 1;
                if t.completed == t.n {
                    notify.notify_one();
                }
            } else {
                t.duplicates += 1;
            }
        }
    });
}

async fn declare_events_queue(conn: &Connection) -> String {
    let chan = conn.create_channel().await.expect("channel");
    chan.exchange_declare(
        "lifecycle.events".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("events exchange");
    let q = chan
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("events queue");
    chan.queue_bind(
        q.name().clone(),
        "lifecycle.events".into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind events");
    q.name().to_string()
}

// ---------------------------------------------------------------------------
// The publisher

/// Publishes commands `range` (persistent, confirmed, pipelined with at most
/// `window` confirms outstanding), optionally paced at `rate` per second.
async fn publish(
    conn: &Connection,
    shared: &Shared,
    range: std::ops::Range<usize>,
    rate: Option<f64>,
) -> Result<(), String> {
    let chan = conn.create_channel().await.map_err(|e| e.to_string())?;
    chan.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let window = 1024;
    let mut pending = FuturesUnordered::new();
    let start = Instant::now();
    let first = range.start;
    for i in range {
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64((i - first) as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let id = command_id(i);
        let body = format!(
            "{{\"command_id\":\"{id}\",\"region_id\":\"{REGION}\",\"instance_id\":\"{}\"}}",
            instance_id(i)
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-bench-published-at-us".into(),
            AMQPValue::LongLongInt(unix_micros()),
        );
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.as_str().into())
            .with_headers(headers);
        {
            let mut t = shared.0.lock().expect("tally");
            t.sent[i] = Some(Instant::now());
            t.sent_us[i] = unix_micros();
        }
        let confirm = chan
            .basic_publish(
                "lifecycle.commands".into(),
                "decommission".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body.as_bytes(),
                props,
            )
            .await
            .map_err(|e| e.to_string())?;
        pending.push(confirm);
        while pending.len() >= window {
            check_confirm(pending.next().await)?;
        }
    }
    while !pending.is_empty() {
        check_confirm(pending.next().await)?;
    }
    let _ = chan.close(200, "published".into()).await;
    Ok(())
}

fn check_confirm(c: Option<lapin::Result<Confirmation>>) -> Result<(), String> {
    match c {
        Some(Ok(Confirmation::Ack(None))) | None => Ok(()),
        Some(other) => Err(format!("command publish not confirmed/routed: {other:?}")),
    }
}

// ---------------------------------------------------------------------------
// Systems under test

struct Sut {
    child: Child,
    http_port: Option<u16>,
    log: PathBuf,
}

impl Sut {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(3000);
        s[s.floor_char_boundary(start)..].to_owned()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("exited early ({st}): {}", self.log_tail()));
            }
            let ready = match self.http_port {
                Some(port) => client
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200),
                None => std::fs::read_to_string(&self.log).is_ok_and(|s| s.contains("relay ready")),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in {timeout:?}: {}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    async fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
struct RunCfg {
    system: System,
    n: usize,
    concurrency: u32,
    prefetch: u16,
    latency_ms: u64,
    error_rate: f64,
    rate: Option<f64>,
    preload: bool,
}

/// The worker's environment: everything the issue asks for.
fn worker_env(url: &str, endpoint: &str, cfg: &RunCfg, port: u16) -> Vec<(String, String)> {
    [
        ("LIFECYCLE__AMQP__URL", url.to_owned()),
        ("LIFECYCLE__ECS__ENDPOINT", endpoint.to_owned()),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID.into()),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET.into()),
        (
            "LIFECYCLE__WORKER__CONCURRENCY",
            cfg.concurrency.to_string(),
        ),
        ("LIFECYCLE__AMQP__PREFETCH", cfg.prefetch.to_string()),
        ("LIFECYCLE__HTTP__LISTEN", format!("127.0.0.1:{port}")),
        // The client-side rate limit is disabled: the benchmark measures the worker.
        ("LIFECYCLE__ECS__MAX_CALLS_PER_SECOND", "0".into()),
        ("LIFECYCLE__RETRY__INITIAL_INTERVAL_MS", "20".into()),
        ("LIFECYCLE__RETRY__MAX_INTERVAL_MS", "200".into()),
        ("LIFECYCLE__RETRY__MAX_ELAPSED_MS", "10000".into()),
        // Short delayed redeliveries, enough stages that 30 % errors never exhaust them.
        (
            "LIFECYCLE__RETRY__REDELIVERY_DELAYS",
            "100ms,200ms,500ms,1s,1s,1s,1s,1s,1s,1s".into(),
        ),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("LIFECYCLE__") || k.starts_with("ALIBABA_CLOUD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn spawn_sut(
    args: &Args,
    cfg: &RunCfg,
    url: &str,
    endpoint: &str,
    logdir: &std::path::Path,
    tag: &str,
) -> Sut {
    spawn_sut_with(args, cfg, url, endpoint, logdir, tag, &[])
}

/// As [`spawn_sut`], with environment variables of the scenario's own last.
fn spawn_sut_with(
    args: &Args,
    cfg: &RunCfg,
    url: &str,
    endpoint: &str,
    logdir: &std::path::Path,
    tag: &str,
    extra: &[(&str, &str)],
) -> Sut {
    let log = logdir.join(format!("{}-{tag}.log", cfg.system.name()));
    let logf = std::fs::File::create(&log).expect("log file");
    let port = free_port();
    let env = worker_env(url, endpoint, cfg, port);
    let (mut cmd, http_port) = match cfg.system {
        System::Worker => {
            // `BENCH_WORKER_WRAP="valgrind --tool=callgrind"` profiles the worker.
            let wrap = std::env::var("BENCH_WORKER_WRAP").unwrap_or_default();
            let mut words = wrap.split_whitespace();
            let mut c = match words.next() {
                Some(program) => {
                    let mut c = clean_command(program);
                    c.args(words).arg(env!("CARGO_BIN_EXE_lifecycle-worker"));
                    c
                }
                None => clean_command(env!("CARGO_BIN_EXE_lifecycle-worker")),
            };
            c.arg("run").envs(env).envs(extra.iter().copied());
            (c, Some(port))
        }
        System::Python => {
            let mut c = clean_command(&format!("{PYTHON_PEER}/lifecycle-worker"));
            c.arg("run")
                .current_dir(PYTHON_PEER)
                .envs(env)
                .env("PYTHON", &args.python);
            (c, Some(port))
        }
        System::Relay => {
            let exe = std::env::current_exe().expect("own path");
            let mut c = clean_command(exe.to_str().expect("utf-8 path"));
            c.args([
                "--relay-child",
                "--url",
                url,
                "--prefetch",
                &cfg.prefetch.to_string(),
                "--concurrency",
                &cfg.concurrency.to_string(),
            ]);
            (c, None)
        }
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("log"))
        .stderr(logf)
        .spawn()
        .expect("system under test spawns");
    Sut {
        child,
        http_port,
        log,
    }
}

// ---------------------------------------------------------------------------
// One run

#[derive(Debug, Clone, Default)]
struct RunResult {
    throughput: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    cpu_per_1000: f64,
    broker_cpu_per_1000: f64,
    sim_cpu_per_1000: f64,
    harness_cpu_per_1000: f64,
    peak_rss_mib: f64,
    api_calls_per_cmd: f64,
    duplicates: usize,
    outcomes: BTreeMap<String, usize>,
    /// p50 / p99 ms from publish to the terminal event's `occurred_at`, and
    /// from there to its arrival (NaN for the relay, whose events carry no time).
    to_event: (f64, f64),
    to_arrival: (f64, f64),
    ok: bool,
    note: String,
}

async fn run_once(args: &Args, cfg: &RunCfg, logdir: &std::path::Path, tag: &str) -> RunResult {
    let tck = clk_tck();
    let vhost = Vhost::create(cfg.system.name()).await;
    let sim = start_sim(cfg.n, faults(cfg.latency_ms, cfg.error_rate), logdir, tag).await;
    let url = vhost.url();
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("harness connects");
    let queue = declare_events_queue(&conn).await;
    let shared = tally(cfg.n);
    spawn_collector(&conn, &queue, shared.clone()).await;
    // Commands go out on a connection of their own: flow control the broker
    // applies to a publishing connection must not delay the collector's
    // deliveries (RabbitMQ's advice: separate publishing and consuming connections).
    let publishing = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("harness publisher connects");

    let mut result = RunResult::default();
    let broker = broker_pid();
    let own = std::process::id();
    let others0;
    let sim0;
    let started;
    let mut sut;
    let cpu0;
    if cfg.preload {
        // Commands queued before the system starts: the harness declares the
        // worker's topology with the worker's own code and settings.
        let port = free_port();
        let settings =
            Settings::load(&[], worker_env(&url, &sim.endpoint(), cfg, port)).expect("settings");
        let chan = conn.create_channel().await.expect("channel");
        Topology::from_settings(&settings)
            .declare(&chan)
            .await
            .expect("topology");
        if let Err(e) = publish(&publishing, &shared, 0..cfg.n, None).await {
            result.note = e;
            return result;
        }
        started = Instant::now();
        sut = spawn_sut(args, cfg, &url, &sim.endpoint(), logdir, tag);
        cpu0 = 0.0;
        sim0 = cpu_seconds(sim.pid(), tck);
        others0 = (
            broker.map_or(f64::NAN, |b| cpu_seconds(b, tck)),
            cpu_seconds(own, tck),
        );
    } else {
        sut = spawn_sut(args, cfg, &url, &sim.endpoint(), logdir, tag);
        if let Err(e) = sut.wait_ready(Duration::from_secs(60)).await {
            result.note = format!("{} not ready: {e}", cfg.system.name());
            return result;
        }
        cpu0 = cpu_seconds(sut.pid(), tck);
        sim0 = cpu_seconds(sim.pid(), tck);
        others0 = (
            broker.map_or(f64::NAN, |b| cpu_seconds(b, tck)),
            cpu_seconds(own, tck),
        );
        started = Instant::now();
        let conn2 = &publishing;
        let sh = shared.clone();
        let rate = cfg.rate;
        let n = cfg.n;
        // Publishing runs concurrently with the wait below.
        let publish_fut = async move { publish(conn2, &sh, 0..n, rate).await };
        let wait_fut = wait_all(&shared, args.timeout);
        let (p, w) = tokio::join!(publish_fut, wait_fut);
        if let Err(e) = p {
            result.note = e;
        }
        if !w {
            result.note = format!("timed out; {}", result.note);
        }
    }
    if cfg.preload && !wait_all(&shared, args.timeout).await {
        result.note = "timed out".into();
    }
    let pid = sut.pid();
    let cpu1 = cpu_seconds(pid, tck);
    let sim1 = cpu_seconds(sim.pid(), tck);
    let others1 = (
        broker.map_or(f64::NAN, |b| cpu_seconds(b, tck)),
        cpu_seconds(own, tck),
    );
    result.peak_rss_mib = status_mib(pid, "VmHWM:");
    let calls = reqwest::Client::new()
        .get(format!("{}/_sim/requests", sim.endpoint()))
        .send()
        .await
        .ok();
    let calls = match calls {
        Some(r) => r
            .json::<Vec<serde_json::Value>>()
            .await
            .map_or(0, |v| v.len()),
        None => 0,
    };
    result.api_calls_per_cmd = calls as f64 / cfg.n as f64;
    if let Ok(Some(st)) = sut.child.try_wait() {
        result.note = format!("{} exited ({st}); {}", cfg.system.name(), result.note);
    }
    // Let late duplicates arrive before counting them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let t = shared.0.lock().expect("tally");
        let first = if cfg.preload {
            started
        } else {
            t.sent.iter().flatten().min().copied().unwrap_or(started)
        };
        let last = t.done.iter().flatten().max().copied();
        let mut lat: Vec<f64> = t
            .sent
            .iter()
            .zip(&t.done)
            .filter_map(|(s, d)| Some(d.as_ref()?.duration_since(*s.as_ref()?).as_secs_f64() * 1e3))
            .collect();
        lat.sort_by(f64::total_cmp);
        if let Some(last) = last {
            result.throughput = t.completed as f64 / last.duration_since(first).as_secs_f64();
        }
        let split = |part: &dyn Fn(usize) -> Option<i64>| {
            let mut v: Vec<f64> = (0..t.n)
                .filter_map(part)
                .map(|us| us as f64 / 1e3)
                .collect();
            v.sort_by(f64::total_cmp);
            (percentile(&v, 50.0), percentile(&v, 99.0))
        };
        if let Ok(path) = std::env::var("BENCH_DUMP_TIMES") {
            // Per command: published, terminal event built, arrived (unix µs), for timelines.
            let mut out = String::from("sent_us,built_us,arrived_us\n");
            for i in 0..t.n {
                let built = t.built_us[i].map_or(String::new(), |b| b.to_string());
                let _ = writeln!(out, "{},{built},{}", t.sent_us[i], t.done_us[i]);
            }
            let _ = std::fs::write(format!("{path}.{}.{tag}.csv", cfg.system.name()), out);
        }
        result.to_event = split(&|i| Some(t.built_us[i]? - t.sent_us[i]));
        result.to_arrival = split(&|i| Some(t.done_us[i] - t.built_us[i]?));
        result.p50 = percentile(&lat, 50.0);
        result.p90 = percentile(&lat, 90.0);
        result.p99 = percentile(&lat, 99.0);
        let per_1000 = |seconds: f64| seconds / t.completed.max(1) as f64 * 1000.0;
        result.cpu_per_1000 = per_1000(cpu1 - cpu0);
        result.broker_cpu_per_1000 = per_1000(others1.0 - others0.0);
        result.sim_cpu_per_1000 = per_1000(sim1 - sim0);
        result.harness_cpu_per_1000 = per_1000(others1.1 - others0.1);
        result.duplicates = t.duplicates;
        result.outcomes = t.outcomes.clone();
        result.ok = t.completed == cfg.n && result.note.is_empty();
        if t.completed != cfg.n {
            result.note = format!("{} of {} completed; {}", t.completed, cfg.n, result.note);
        }
    }
    if !result.ok {
        result.note = format!("{}; log: {}", result.note, sut.log_tail());
    }
    sut.stop().await;
    let _ = publishing.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    sim.shutdown().await;
    drop(vhost);
    result
}

async fn wait_all(shared: &Shared, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        {
            let t = shared.0.lock().expect("tally");
            if t.completed == t.n {
                return true;
            }
        }
        tokio::select! {
            () = shared.1.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

// ---------------------------------------------------------------------------
// Scenarios and reporting

/// The medians of one configuration's runs.
#[derive(Debug, Clone)]
struct Summary {
    cfg: RunCfg,
    runs: usize,
    failed: usize,
    throughput: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    cpu_per_1000: f64,
    broker_cpu_per_1000: f64,
    sim_cpu_per_1000: f64,
    harness_cpu_per_1000: f64,
    peak_rss_mib: f64,
    api_calls_per_cmd: f64,
    duplicates: usize,
    outcomes: BTreeMap<String, usize>,
    load: String,
}

struct Report {
    out: Option<PathBuf>,
}

impl Report {
    fn line(&self, s: &str) {
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
}

const HEADER: &str = "| system | N | conc | prefetch | API latency | errors | rate | commands/s | p50 ms | p90 ms | p99 ms | CPU s / 1k | broker CPU s / 1k | sim CPU s / 1k | harness CPU s / 1k | peak RSS MiB | API calls / cmd | dups | outcomes | runs ok | load at start |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

fn row(s: &Summary) -> String {
    let c = &s.cfg;
    let outcomes: Vec<String> = s.outcomes.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!(
        "| {} | {} | {} | {} | {} ms | {:.0}% | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.2} | {} | {} | {}/{} | {} |",
        c.system.name(),
        c.n,
        c.concurrency,
        c.prefetch,
        c.latency_ms,
        c.error_rate * 100.0,
        c.rate.map_or("max".into(), |r| format!("{r:.0}/s")),
        s.throughput,
        s.p50,
        s.p90,
        s.p99,
        s.cpu_per_1000,
        s.broker_cpu_per_1000,
        s.sim_cpu_per_1000,
        s.harness_cpu_per_1000,
        s.peak_rss_mib,
        s.api_calls_per_cmd,
        s.duplicates,
        outcomes.join(" "),
        s.runs - s.failed,
        s.runs,
        s.load,
    )
}

async fn measure(args: &Args, report: &Report, cfg: RunCfg, logdir: &std::path::Path) -> Summary {
    let load = loadavg();
    let mut results = Vec::new();
    for r in 0..args.runs {
        let tag = format!(
            "c{}-l{}-e{}-{}",
            cfg.concurrency,
            cfg.latency_ms,
            (cfg.error_rate * 100.0) as u32,
            r
        );
        let res = run_once(args, &cfg, logdir, &tag).await;
        eprintln!(
            "  {} {tag}: {:.0}/s p50 {:.1} p99 {:.1} ms cpu/1k {:.3}s (broker {:.3}s, sim {:.3}s, harness {:.3}s) rss {:.1} MiB dups {} {:?} (to event p50/p99 {:.1}/{:.1} ms, event to arrival {:.1}/{:.1} ms) {}",
            cfg.system.name(),
            res.throughput,
            res.p50,
            res.p99,
            res.cpu_per_1000,
            res.broker_cpu_per_1000,
            res.sim_cpu_per_1000,
            res.harness_cpu_per_1000,
            res.peak_rss_mib,
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
    let ok: Vec<&RunResult> = results.iter().filter(|r| r.ok).collect();
    let pick = |f: fn(&RunResult) -> f64| median(ok.iter().map(|r| f(r)).collect());
    let mut outcomes = BTreeMap::new();
    for r in &ok {
        for (k, v) in &r.outcomes {
            *outcomes.entry(k.clone()).or_insert(0) += v;
        }
    }
    let s = Summary {
        runs: results.len(),
        failed: results.len() - ok.len(),
        throughput: pick(|r| r.throughput),
        p50: pick(|r| r.p50),
        p90: pick(|r| r.p90),
        p99: pick(|r| r.p99),
        cpu_per_1000: pick(|r| r.cpu_per_1000),
        broker_cpu_per_1000: pick(|r| r.broker_cpu_per_1000),
        sim_cpu_per_1000: pick(|r| r.sim_cpu_per_1000),
        harness_cpu_per_1000: pick(|r| r.harness_cpu_per_1000),
        peak_rss_mib: pick(|r| r.peak_rss_mib),
        api_calls_per_cmd: pick(|r| r.api_calls_per_cmd),
        duplicates: ok.iter().map(|r| r.duplicates).sum(),
        outcomes,
        load,
        cfg,
    };
    report.line(&row(&s));
    s
}

/// Each system's own default prefetch for a concurrency: the worker's ratio
/// (256 for 64; a slot freed by a finished command finds the next delivery
/// already there) for the worker and the relay; the Python peer's default of
/// prefetch = concurrency, which is also its faster setting (it slows down with
/// more unacknowledged deliveries; see docs/benchmarks.md).
fn default_prefetch(system: System, concurrency: u32) -> u16 {
    let per_slot = match system {
        System::Worker | System::Relay => PREFETCH_PER_SLOT,
        System::Python => 1,
    };
    u16::try_from(concurrency.saturating_mul(per_slot))
        .unwrap_or(u16::MAX)
        .max(1)
}

fn cfg(system: System, n: usize, concurrency: u32, latency_ms: u64, error_rate: f64) -> RunCfg {
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

fn apply_overrides(args: &Args, mut c: RunCfg) -> RunCfg {
    if let Some(p) = args.prefetch {
        c.prefetch = p;
    }
    if args.rate.is_some() {
        c.rate = args.rate;
    }
    if args.preload {
        c.preload = true;
    }
    c
}

fn ratio_line(report: &Report, what: &str, measured: f64, target: &str, met: bool) {
    report.line(&format!(
        "- {what}: **{measured:.2}** (target {target}): {}",
        if met { "met" } else { "NOT met" }
    ));
}

fn systems_or(args: &Args, default: &[System]) -> Vec<System> {
    if args.systems.is_empty() {
        default.to_vec()
    } else {
        args.systems.clone()
    }
}

async fn bench(args: Args) {
    let report = Report {
        out: args.out.clone(),
    };
    let logdir = std::env::temp_dir().join(format!("lw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logdir).expect("log dir");
    eprintln!("system logs in {}", logdir.display());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_owned))
        .unwrap_or_default();
    report.line(&format!(
        "\n### `{}` (runs {}, N {}) — nproc {}, {}, load {} at start, {}",
        args.scenario,
        args.runs,
        args.n,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        loadavg(),
        time_now()
    ));
    let all = args.scenario == "all";
    let n = args.n;
    let conc_or = |d: &[u32]| {
        if args.concurrency.is_empty() {
            d.to_vec()
        } else {
            args.concurrency.clone()
        }
    };
    let mut best_worker = 0.0f64;

    if all || args.scenario == "ceiling" {
        report.line("\n#### Zero-latency throughput: worker vs the relay ceiling\n");
        report.line(HEADER);
        let mut best: BTreeMap<System, (f64, u32)> = BTreeMap::new();
        for c in conc_or(&[16, 64, 256]) {
            for sys in systems_or(&args, &[System::Worker, System::Relay]) {
                let s = measure(
                    &args,
                    &report,
                    apply_overrides(&args, cfg(sys, n, c, 0, 0.0)),
                    &logdir,
                )
                .await;
                let e = best.entry(sys).or_insert((0.0, c));
                if s.throughput > e.0 {
                    *e = (s.throughput, c);
                }
            }
        }
        report.line("");
        if let (Some(w), Some(r)) = (best.get(&System::Worker), best.get(&System::Relay)) {
            best_worker = w.0;
            ratio_line(
                &report,
                &format!(
                    "worker best ({:.0}/s at concurrency {}) / relay best ({:.0}/s at concurrency {})",
                    w.0, w.1, r.0, r.1
                ),
                w.0 / r.0,
                "≥ 0.6",
                w.0 / r.0 >= 0.6,
            );
        }
    }

    if all || args.scenario == "python" {
        report.line("\n#### Equal concurrency: worker vs the Python peer\n");
        report.line(
            "Each at its own default prefetch (the worker 4 × concurrency, the peer = concurrency, \
             which is also the peer's faster setting); the worker also at the peer's prefetch.\n",
        );
        report.line(HEADER);
        let c = conc_or(&[64])[0];
        let own = cfg(System::Worker, n, c, 0, 0.0);
        let mut same = own.clone();
        same.prefetch = default_prefetch(System::Python, c);
        let python = cfg(System::Python, n, c, 0, 0.0);
        let mut got = Vec::new();
        for run in [own, same, python] {
            if args.systems.is_empty() || args.systems.contains(&run.system) {
                let s = measure(&args, &report, apply_overrides(&args, run), &logdir).await;
                got.push(s);
            }
        }
        report.line("");
        if let [own, same, p] = got.as_slice() {
            for (w, which) in [(own, "own default"), (same, "the peer's")] {
                let t = w.throughput / p.throughput;
                ratio_line(
                    &report,
                    &format!(
                        "throughput worker / Python at concurrency {c}, worker at {which} prefetch ({})",
                        w.cfg.prefetch
                    ),
                    t,
                    "≥ 10",
                    t >= 10.0,
                );
                let m = w.peak_rss_mib / p.peak_rss_mib;
                ratio_line(
                    &report,
                    &format!("peak RSS worker / Python, worker at {which} prefetch"),
                    m,
                    "≤ 0.25",
                    m <= 0.25,
                );
            }
        }
    }

    if all || args.scenario == "little" {
        report.line("\n#### 50 ms API latency: worker vs Little's law C / L\n");
        report.line(HEADER);
        let lat = args.latency_ms.first().copied().unwrap_or(50);
        for c in conc_or(&[64]) {
            let s = measure(
                &args,
                &report,
                apply_overrides(&args, cfg(System::Worker, n, c, lat, 0.0)),
                &logdir,
            )
            .await;
            let bound = f64::from(c) / (lat as f64 / 1000.0);
            let r = s.throughput / bound;
            ratio_line(
                &report,
                &format!(
                    "worker / (C / L) = {:.0} / {bound:.0} at C {c}, L {lat} ms",
                    s.throughput
                ),
                r,
                "≥ 0.9",
                r >= 0.9,
            );
        }
    }

    if all || args.scenario == "errors" {
        report.line("\n#### 30% injected InternalError.Dispatch vs 0%\n");
        // 4 × N: the unluckiest commands fail several times in a row and wait out
        // backoffs of up to a second in all (0.3^6 × N of them need six
        // attempts); at 5,000 commands that fixed tail is a large part of a
        // one-second run and hides the per-command cost the scenario measures.
        let n = ERRORS_N_FACTOR * n;
        report.line(&format!(
            "N = {n} ({ERRORS_N_FACTOR} × N, so the backoff tail of the unluckiest commands is amortized).\n"
        ));
        report.line(HEADER);
        let c = conc_or(&[64])[0];
        let clean = measure(
            &args,
            &report,
            apply_overrides(&args, cfg(System::Worker, n, c, 0, 0.0)),
            &logdir,
        )
        .await;
        let faulty = measure(
            &args,
            &report,
            apply_overrides(&args, cfg(System::Worker, n, c, 0, 0.3)),
            &logdir,
        )
        .await;
        report.line("");
        let succeeded = faulty.outcomes.get("succeeded").copied().unwrap_or(0);
        let total: usize = faulty.outcomes.values().sum();
        ratio_line(
            &report,
            &format!(
                "commands succeeded with 30% errors ({succeeded} of {total} terminal events, {} runs failed)",
                faulty.failed
            ),
            succeeded as f64 / total.max(1) as f64,
            "1.00",
            succeeded == total && faulty.failed == 0,
        );
        // Each API attempt fails with p = 0.3: 1 / 0.7 attempts per command.
        let r = faulty.throughput / clean.throughput;
        ratio_line(
            &report,
            "throughput 30% / 0% (retries require at most 1/(1/0.7) = 0.70 when CPU-bound)",
            r,
            "≥ 0.70",
            r >= 0.70,
        );
    }

    if all || args.scenario == "latency" {
        report.line(
            "\n#### Worker-added latency at half of the maximum throughput (0 ms API latency)\n",
        );
        let c = conc_or(&[64])[0];
        let rate = match args.rate {
            Some(r) => r,
            None => {
                let max = if best_worker > 0.0 {
                    best_worker
                } else {
                    let quick = Args {
                        runs: 1,
                        ..args.clone()
                    };
                    measure(
                        &quick,
                        &Report { out: None },
                        cfg(System::Worker, n, c, 0, 0.0),
                        &logdir,
                    )
                    .await
                    .throughput
                };
                (max / 2.0).floor()
            }
        };
        report.line(&format!(
            "Paced at {rate:.0} commands/s (half of the measured maximum), then at a quarter of it.\n"
        ));
        report.line(HEADER);
        let mut lines = Vec::new();
        for (share, paced) in [("half", rate), ("a quarter", (rate / 2.0).floor())] {
            let mut c2 = apply_overrides(&args, cfg(System::Worker, n, c, 0, 0.0));
            c2.rate = Some(paced);
            let s = measure(&args, &report, c2, &logdir).await;
            let mut r2 = cfg(System::Relay, n, c, 0, 0.0);
            r2.rate = Some(paced);
            let r = measure(&args, &report, r2, &logdir).await;
            lines.push((share, paced, s.p99, r.p99));
        }
        report.line("");
        for (share, paced, worker, relay) in lines {
            ratio_line(
                &report,
                &format!(
                    "at {paced:.0}/s ({share} of the maximum): worker p99 publish → terminal event {worker:.2} ms (simulator adds 0 ms), \
                     relay p99 {relay:.2} ms; worker-added (worker − relay)"
                ),
                worker - relay,
                "≤ 5 ms",
                worker - relay <= 5.0,
            );
        }
    }

    if all || args.scenario == "rss" {
        report.line(
            "\n#### Peak RSS: 10,000 commands queued before the worker starts, prefetch 256\n",
        );
        report.line(HEADER);
        let c = conc_or(&[64])[0];
        let mut r = cfg(System::Worker, 10_000, c, 0, 0.0);
        r.prefetch = 256;
        r.preload = true;
        let s = measure(&args, &report, r, &logdir).await;
        report.line("");
        ratio_line(
            &report,
            "peak RSS (VmHWM), MiB",
            s.peak_rss_mib,
            "≤ 40 MiB",
            s.peak_rss_mib <= 40.0,
        );
    }

    if args.scenario == "contain" {
        contain::contain(&args, &report, &logdir).await;
    }
    if args.scenario == "matrix" || args.scenario == "custom" {
        report.line(&format!("\n#### {}\n", args.scenario));
        report.line(HEADER);
        let lats = if args.latency_ms.is_empty() {
            vec![0, 50]
        } else {
            args.latency_ms.clone()
        };
        let errs = if args.error_rate.is_empty() {
            vec![0.0, 0.3]
        } else {
            args.error_rate.clone()
        };
        for sys in systems_or(&args, &[System::Worker]) {
            for &l in &lats {
                for &e in &errs {
                    for c in conc_or(&[1, 16, 64, 256]) {
                        // Keep each run to ~10 s where the latency bound is low.
                        let n_eff = if l > 0 {
                            let bound = f64::from(c) * 1000.0 / l as f64;
                            n.min(((bound * 10.0) as usize).max(200))
                        } else if c == 1 {
                            n.min(2000)
                        } else {
                            n
                        };
                        measure(
                            &args,
                            &report,
                            apply_overrides(&args, cfg(sys, n_eff, c, l, e)),
                            &logdir,
                        )
                        .await;
                    }
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&logdir);
}

fn time_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The relay ceiling (child process)

async fn relay_child(args: Args) {
    let url = args.url.clone();
    let prefetch = args.prefetch.unwrap_or(64);
    let concurrency = args.concurrency.first().copied().unwrap_or(64);
    // A consuming and a publishing connection, as the worker has.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("relay connects");
    let publishing = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("relay publisher connects");
    // The same queue, declared the same way: the worker's own topology code.
    let settings =
        Settings::load(&[], [("LIFECYCLE__AMQP__URL".to_owned(), url.clone())]).expect("settings");
    let topology = Topology::from_settings(&settings);
    let pubchan = publishing.create_channel().await.expect("channel");
    topology.declare(&pubchan).await.expect("topology");
    pubchan
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let chan = conn.create_channel().await.expect("channel");
    chan.basic_qos(prefetch, BasicQosOptions { global: false })
        .await
        .expect("qos");
    let mut consumer = chan
        .basic_consume(
            settings.topology.decommission_queue.as_str().into(),
            "relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    println!("relay ready");
    let _ = std::io::stdout().flush();
    let permits = Arc::new(Semaphore::new(concurrency as usize));
    while let Some(Ok(d)) = consumer.next().await {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
        let pubchan = pubchan.clone();
        tokio::spawn(async move {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            let opts = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            // Both publishes handed to lapin before either write is awaited (as
            // the worker does): `try_join` polls them in order, so the broker
            // sees them in order, in one pass of the I/O loop.
            let publish = |key: &'static str| {
                pubchan.basic_publish(
                    "lifecycle.events".into(),
                    key.into(),
                    opts,
                    &d.data,
                    props.clone(),
                )
            };
            let (first, last) =
                futures::future::try_join(publish("instance.deregistered"), publish(COMPLETED))
                    .await
                    .expect("publish");
            for c in [first, last] {
                c.await.expect("confirm");
            }
            d.ack(BasicAckOptions::default()).await.expect("ack");
            drop(permit);
        });
    }
}

// ---------------------------------------------------------------------------
// Endurance

#[path = "support/soak.rs"]
mod soak;

// ---------------------------------------------------------------------------
// Time to contain

#[path = "support/contain.rs"]
mod contain;

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.relay_child {
        rt.block_on(relay_child(args));
    } else if args.soak {
        rt.block_on(soak::soak(args));
    } else {
        rt.block_on(bench(args));
    }
}
