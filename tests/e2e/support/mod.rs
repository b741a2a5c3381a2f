//! Harness for the end-to-end tests: a private RabbitMQ vhost (from
//! `lifecycle_testkit`'s pool), the in-process ECS simulator, the worker (an
//! [`App`] in this process, or the binary as a child process where the process
//! is the subject), and an event collector.

use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
pub use lifecycle_testkit::{Vhost, free_port, rabbitmqctl};
use lifecycle_worker::app::App;
use lifecycle_worker::secret::Secret;
use lifecycle_worker::settings::Settings;
use lifecycle_worker::simulator::{self, FaultSettings, Seed, SimulatorConfig, SimulatorHandle};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio_util::sync::CancellationToken;

pub const KEY_ID: &str = "testid";
pub const KEY_SECRET: &str = "testsecret";
pub const REGION: &str = "cn-hangzhou";

/// The broker on 5672 is shared by every test of the binary, and a test that
/// stops it (a broker restart) would break the others: such a test takes this
/// exclusively ([`Env::new_exclusive`]), every other [`Env`] holds it shared.
static BROKER: RwLock<()> = RwLock::const_new(());

/// With `E2E_LOG` set (a `RUST_LOG`-style filter), in-process workers log
/// to the test's output: `E2E_LOG=debug cargo test --test e2e -- <name>`.
fn log_in_process_workers() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        if let Ok(filter) = std::env::var("E2E_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// How an [`Env`] uses the broker (held for its lifetime).
enum BrokerUse {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// One received event.
#[derive(Debug, Clone)]
pub struct Ev {
    pub routing_key: String,
    pub body: Value,
    pub correlation_id: Option<String>,
    /// When the test received it.
    pub received: std::time::Instant,
}

impl Ev {
    pub fn ty(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
    pub fn command_id(&self) -> &str {
        self.body["command_id"].as_str().unwrap_or("")
    }
    pub fn outcome(&self) -> &str {
        self.body["outcome"].as_str().unwrap_or("")
    }
}

pub type Events = Arc<Mutex<Vec<Ev>>>;

/// A running worker: an [`App`] in this process, or the binary as a child.
pub struct Worker {
    pub http_port: u16,
    run: Run,
}

enum Run {
    /// Killed (SIGKILL) on drop.
    Process { child: Child, stderr_path: PathBuf },
    /// Stopped on drop as by SIGTERM, but not waited for. Dropping it is not
    /// a crash: its tasks may still settle what they hold. Where a test needs
    /// a crash (or signals, an exit code, logs), it starts a process.
    InProcess {
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Worker {
    /// A worker process the caller started (killed on drop; its log in
    /// `stderr_path`).
    pub fn from_process(child: Child, stderr_path: PathBuf, http_port: u16) -> Worker {
        Worker {
            http_port,
            run: Run::Process { child, stderr_path },
        }
    }

    pub fn pid(&self) -> u32 {
        self.child_ref().id()
    }

    fn child_ref(&self) -> &Child {
        match &self.run {
            Run::Process { child, .. } => child,
            Run::InProcess { .. } => {
                panic!("an in-process worker has no process: use start_process")
            }
        }
    }

    /// What a worker process wrote on stderr (its log). An in-process
    /// worker has none (no subscriber is installed in the test binary): a
    /// test that reads the log starts a process.
    pub fn stderr(&self) -> String {
        match &self.run {
            Run::Process { .. } => self.log(),
            Run::InProcess { .. } => panic!("an in-process worker has no log: use start_process"),
        }
    }

    /// The log for a failure message: empty for an in-process worker.
    fn log(&self) -> String {
        match &self.run {
            Run::Process { stderr_path, .. } => {
                std::fs::read_to_string(stderr_path).unwrap_or_default()
            }
            Run::InProcess { .. } => String::new(),
        }
    }

    /// `/readyz` status and body, `None` when not reachable.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }

    /// Whether the worker ended (the process exited, the app returned).
    fn ended(&mut self) -> Option<String> {
        match &mut self.run {
            Run::Process { child, .. } => child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| status.to_string()),
            Run::InProcess { task, .. } => task.is_finished().then(|| "returned".to_owned()),
        }
    }

    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = self.readyz().await {
                return;
            }
            if let Some(status) = self.ended() {
                panic!("worker ended early ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready in {timeout:?}: {:?} {}",
                self.readyz().await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` answers with `status`, returning the body.
    pub async fn wait_readyz(&self, status: u16, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((s, body)) = self.readyz().await
                && s == status
            {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {status} in {timeout:?}; last {:?}; stderr: {}",
                self.readyz().await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal to a worker process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for a worker process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Run::Process { child, .. } = &mut self.run
                && let Some(status) = child.try_wait().expect("try_wait")
            {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit in {timeout:?}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status of a worker process that has ended, if it has.
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        match &mut self.run {
            Run::Process { child, .. } => child.try_wait().expect("try_wait").map(|s| s.code()),
            Run::InProcess { .. } => panic!("an in-process worker has no exit code"),
        }
    }

    /// Kills a worker process (SIGKILL) and returns everything it logged.
    pub fn kill_and_log(self) -> String {
        let path = match &self.run {
            Run::Process { stderr_path, .. } => stderr_path.clone(),
            Run::InProcess { .. } => panic!("an in-process worker has no log: use start_process"),
        };
        drop(self);
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Stops an in-process worker as SIGTERM would and waits until it has
    /// settled what it held and returned.
    pub async fn stop(mut self, timeout: Duration) {
        if let Run::InProcess { stop, task } = &mut self.run {
            stop.cancel();
            tokio::time::timeout(timeout, task)
                .await
                .expect("the worker stops in time")
                .expect("the worker's task");
        } else {
            self.signal("-TERM");
            assert_eq!(self.wait_exit(timeout).await, Some(0), "{}", self.log());
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Process { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Run::InProcess { stop, task } => {
                stop.cancel();
                task.abort();
            }
        }
    }
}

/// A whole test environment.
pub struct Env {
    pub sim: SimulatorHandle,
    pub http: reqwest::Client,
    pub conn: Connection,
    pub chan: Channel,
    pub events: Events,
    pub tmp: tempfile::TempDir,
    worker_seq: std::sync::atomic::AtomicU32,
    // Declared last: dropped after the connection is gone.
    pub vhost: Vhost,
    _broker: BrokerUse,
}

/// A seed with `n` instances `mi-test<i>` (i from 0) and no activation.
pub fn seed_instances(n: usize) -> Value {
    let instances: Vec<Value> = (0..n).map(|i| instance_json(&inst(i), None)).collect();
    json!({ "Instances": instances, "Activations": [] })
}

pub fn inst(i: usize) -> String {
    format!("mi-test{i:04}")
}

pub fn instance_json(id: &str, activation: Option<&str>) -> Value {
    let mut v = json!({
        "RegionId": REGION,
        "InstanceId": id,
        "InstanceName": id,
        "Hostname": format!("{id}.example.internal"),
        "MachineId": format!("m{}", id.trim_start_matches("mi-")),
        "IntranetIp": "10.0.0.1",
        "OsType": "linux",
        "OsVersion": "Ubuntu 24.04",
        "AgentVersion": "2.2.3.0",
        "RegistrationTime": "2026-11-01T03:00:00Z",
        "InvocationCount": 0,
        "Connected": true
    });
    if let Some(a) = activation {
        v["ActivationId"] = json!(a);
    }
    v
}

pub fn activation_json(id: &str, registered: u32) -> Value {
    json!({
        "RegionId": REGION,
        "ActivationId": id,
        "InstanceName": "web",
        "Description": "test",
        "IpAddressRange": "0.0.0.0/0",
        "InstanceCount": 10,
        "RegisteredCount": registered,
        "DeregisteredCount": 0,
        "TimeToLiveInHours": 4,
        "CreationTime": "2026-11-01T02:00:00Z",
        "Disabled": false
    })
}

pub fn decommission(command_id: &str, instance: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "command_id": command_id,
        "region_id": REGION,
        "instance_id": instance,
    }))
    .expect("json")
}

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

impl Env {
    /// A fresh environment sharing the broker with other tests.
    pub async fn new(seed: Value) -> Env {
        Self::with_broker(seed, BrokerUse::Shared(BROKER.read().await)).await
    }

    /// A fresh environment whose test may stop and start the broker: it waits
    /// until no other test uses the broker, and keeps them out meanwhile.
    pub async fn new_exclusive(seed: Value) -> Env {
        Self::with_broker(seed, BrokerUse::Exclusive(BROKER.write().await)).await
    }

    async fn with_broker(seed: Value, broker: BrokerUse) -> Env {
        log_in_process_workers();
        let vhost = Vhost::create().await;
        let seed = Seed::from_json(&seed.to_string()).expect("seed parses");
        let sim = simulator::start(SimulatorConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            seed: Some(seed),
            keys: vec![(KEY_ID.to_owned(), Secret::new(KEY_SECRET))],
            allowed_regions: vec![REGION.to_owned()],
            faults: FaultSettings::default(),
        })
        .await
        .expect("simulator starts");
        let conn = Connection::connect(&vhost.url(), ConnectionProperties::default())
            .await
            .expect("test connects to the broker");
        let chan = conn.create_channel().await.expect("channel");
        chan.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let events: Events = Arc::default();
        let queue = lifecycle_testkit::declare_events_queue(&conn, "lifecycle.events").await;
        spawn_collector(&conn, &queue, events.clone()).await;
        Env {
            sim,
            http: reqwest::Client::new(),
            conn,
            chan,
            events,
            tmp: tempfile::tempdir().expect("tempdir"),
            worker_seq: Default::default(),
            vhost,
            _broker: broker,
        }
    }

    /// Environment variables for any subcommand of the binary.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        [
            ("LIFECYCLE__AMQP__URL", self.vhost.url()),
            ("LIFECYCLE__ECS__ENDPOINT", self.sim.endpoint()),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID.into()),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET.into()),
            ("LIFECYCLE__RETRY__REDELIVERY_DELAYS", "1s,2s".into()),
            ("LIFECYCLE__RETRY__MAX_ELAPSED_MS", "500".into()),
            ("LIFECYCLE__RETRY__INITIAL_INTERVAL_MS", "50".into()),
            ("LIFECYCLE__RETRY__MAX_INTERVAL_MS", "100".into()),
            ("LIFECYCLE__TELEMETRY__LOG_FORMAT", "text".into()),
            ("RUST_LOG", "info".into()),
            // Tests never reach for the real ECS metadata service.
            ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true".into()),
            ("HOME", self.tmp.path().display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The binary with this environment's settings, for a CLI run the test
    /// drives itself (spawned, signalled, its output read as it comes).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lifecycle-worker"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LIFECYCLE__") || k.starts_with("ALIBABA_CLOUD_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.worker_env());
        cmd
    }

    /// Starts a worker process (not waiting for readiness): for tests whose
    /// subject is the process (signals, SIGKILL, exit codes, its log, the
    /// process environment).
    pub fn spawn_process(&self, extra: &[(&str, &str)]) -> Worker {
        self.spawn_process_with(extra, &[])
    }

    /// As [`Env::spawn_process`], with more arguments after `run`.
    pub fn spawn_process_with(&self, extra: &[(&str, &str)], args: &[&str]) -> Worker {
        let n = self
            .worker_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stderr_path = self.tmp.path().join(format!("worker-{n}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let http_port = free_port();
        let mut cmd = self.command();
        cmd.arg("run")
            .args(args)
            .env("LIFECYCLE__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().expect("worker spawns");
        Worker {
            http_port,
            run: Run::Process { child, stderr_path },
        }
    }

    /// Starts a worker process and waits for `/readyz` 200.
    pub async fn start_process(&self, extra: &[(&str, &str)]) -> Worker {
        let mut w = self.spawn_process(extra);
        w.wait_ready(Duration::from_secs(30)).await;
        w
    }

    /// Starts a worker in this process (an [`App`] on port 0, with this
    /// environment's settings and `extra` ones, all `LIFECYCLE__*`), not
    /// waiting for readiness.
    pub async fn spawn_worker(&self, extra: &[(&str, &str)]) -> Worker {
        let mut vars: Vec<(String, String)> = self
            .worker_env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("LIFECYCLE__"))
            .collect();
        vars.extend([
            (
                "LIFECYCLE__ECS__ACCESS_KEY_ID".to_owned(),
                KEY_ID.to_owned(),
            ),
            (
                "LIFECYCLE__ECS__ACCESS_KEY_SECRET".to_owned(),
                KEY_SECRET.to_owned(),
            ),
            (
                "LIFECYCLE__HTTP__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
        ]);
        for (k, v) in extra {
            assert!(
                k.starts_with("LIFECYCLE__"),
                "{k} is process environment: use start_process"
            );
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        let settings = Settings::load(&[], vars).expect("worker settings");
        let app = App::build(settings).await.expect("the app builds");
        let http_port = app.http_addr().port();
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone()));
        Worker {
            http_port,
            run: Run::InProcess { stop, task },
        }
    }

    /// Starts a worker in this process and waits for `/readyz` 200.
    pub async fn start_worker(&self, extra: &[(&str, &str)]) -> Worker {
        let mut w = self.spawn_worker(extra).await;
        w.wait_ready(Duration::from_secs(30)).await;
        w
    }

    /// Runs `lifecycle-worker <args>` to completion; returns (exit code, stdout, stderr).
    pub async fn run_cli(&self, args: &[&str]) -> (Option<i32>, String, String) {
        self.run_cli_with(args, &[]).await
    }

    /// As [`Env::run_cli`], with more (or overriding) environment variables.
    pub async fn run_cli_with(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> (Option<i32>, String, String) {
        let mut cmd = self.command();
        cmd.args(args).envs(extra.iter().copied());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("join")
            .expect("cli runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Publishes (confirmed, persistent) to the command exchange.
    pub async fn publish(&self, routing_key: &str, body: &[u8], props: BasicProperties) {
        self.publish_to("lifecycle.commands", routing_key, body, props)
            .await;
    }

    /// Publishes (confirmed, persistent, mandatory) to any exchange (`""`: the default one).
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) {
        let props = props.with_delivery_mode(2);
        let confirm = self
            .chan
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(
            matches!(confirm, Confirmation::Ack(None)),
            "publish not routed/acked: {confirm:?}"
        );
    }

    pub async fn send_json(&self, routing_key: &str, body: &[u8]) {
        self.publish(
            routing_key,
            body,
            BasicProperties::default().with_content_type("application/json".into()),
        )
        .await;
    }

    pub fn events(&self) -> Vec<Ev> {
        self.events.lock().expect("lock").clone()
    }

    /// Polls the collected events until `pred` holds.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Ev]) -> bool,
    ) -> Vec<Ev> {
        wait_events(&self.events, what, timeout, pred).await
    }

    /// Replaces the test's broker connection and channel (after a broker restart).
    pub async fn reconnect(&mut self) {
        let conn = Connection::connect(&self.vhost.url(), ConnectionProperties::default())
            .await
            .expect("test reconnects to the broker");
        let chan = conn.create_channel().await.expect("channel");
        chan.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        self.conn = conn;
        self.chan = chan;
    }

    /// Declares a durable quorum queue bound to the event exchange with `#`:
    /// unlike the default exclusive one, it keeps events across a broker restart.
    pub async fn declare_durable_events_queue(&self, queue: &str) {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        self.chan
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .expect("durable events queue");
        self.chan
            .queue_bind(
                queue.into(),
                "lifecycle.events".into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind durable events queue");
    }

    /// `rabbitmqctl -q list_<what> -p <vhost> <columns...>` as rows of
    /// tab-separated fields (no header).
    pub async fn list(&self, what: &str, columns: &[&str]) -> Vec<Vec<String>> {
        let mut args: Vec<String> = vec![
            "-q".into(),
            "--no-table-headers".into(),
            format!("list_{what}"),
            "-p".into(),
            self.vhost.name.clone(),
        ];
        args.extend(columns.iter().map(|c| (*c).to_owned()));
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            rabbitmqctl(&args)
        })
        .await
        .expect("join");
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// Events of one command.
    pub fn events_of(&self, command_id: &str) -> Vec<Ev> {
        self.events()
            .into_iter()
            .filter(|e| e.command_id() == command_id)
            .collect()
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sim.endpoint()))
            .send()
            .await
            .expect("sim control")
            .json()
            .await
            .expect("sim json")
    }

    pub async fn sim_send(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.sim.endpoint()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("sim control");
        assert!(
            r.status().is_success(),
            "sim control {path}: {}",
            r.status()
        );
    }

    pub async fn set_faults(&self, faults: Value) {
        self.sim_send(reqwest::Method::POST, "/_sim/faults", Some(faults))
            .await;
    }

    /// API calls the simulator has received and not yet answered.
    pub async fn sim_in_flight(&self) -> u64 {
        self.sim_get("/_sim/in-flight").await["in_flight"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The simulator's API log.
    pub async fn requests(&self) -> Vec<Value> {
        self.sim_get("/_sim/requests")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Effective deregistrations per instance id.
    pub async fn deregistrations(&self) -> serde_json::Map<String, Value> {
        self.sim_get("/_sim/state").await["Deregistrations"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    /// Takes every message currently in a queue (acked).
    pub async fn drain_queue(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let chan = self.conn.create_channel().await.expect("channel");
        let mut out = Vec::new();
        while let Some(m) = chan
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic_get")
        {
            m.delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            out.push(m.delivery);
        }
        let _ = chan.close(200, "done".into()).await;
        out
    }

    /// Message count of a queue (passive declare).
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let chan = self.conn.create_channel().await.expect("channel");
        let q = chan
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        let _ = chan.close(200, "done".into()).await;
        q.message_count()
    }

    /// The broker connections of workers in this vhost: each worker has a
    /// consuming one (`lifecycle-worker`) and a publishing one.
    pub async fn worker_connections(&self) -> Vec<String> {
        let mut all = self.connections_named(CONSUMING).await;
        all.extend(self.connections_named(PUBLISHING).await);
        all
    }

    /// Broker-side pids of this vhost's connections named `name` by their client.
    pub async fn connections_named(&self, name: &str) -> Vec<String> {
        lifecycle_testkit::connections_named(&self.vhost.name, name).await
    }
}

/// The worker's consuming connection's name.
pub const CONSUMING: &str = "lifecycle-worker";
/// The worker's publishing connection's name.
pub const PUBLISHING: &str = "lifecycle-worker-publisher";

async fn spawn_collector(conn: &Connection, queue: &str, events: Events) {
    lifecycle_testkit::for_each_delivery(conn, queue, "e2e-events", move |d| {
        let body: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
        events.lock().expect("lock").push(Ev {
            received: std::time::Instant::now(),
            routing_key: d.routing_key.to_string(),
            body,
            correlation_id: d
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
        });
    })
    .await;
}

/// Polls `f` until it returns `Some`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Waits until every command and retry queue of the vhost is empty, ready and
/// unacknowledged alike (the dead-letter queue aside): every command taken has
/// been settled, so nothing more can come of it.
pub async fn until_settled(env: &Env, timeout: Duration) {
    until("every command settled", timeout, || async {
        let rows = env
            .list(
                "queues",
                &["name", "messages_ready", "messages_unacknowledged"],
            )
            .await;
        rows.iter()
            .filter(|r| r[0].starts_with("lifecycle.") && r[0] != "lifecycle.dead-letter")
            .all(|r| r[1] == "0" && r[2] == "0")
            .then_some(())
    })
    .await;
}

/// Polls `events` until `pred` holds.
pub async fn wait_events(
    events: &Events,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Ev]) -> bool,
) -> Vec<Ev> {
    let deadline = Instant::now() + timeout;
    loop {
        let evs = events.lock().expect("lock").clone();
        if pred(&evs) {
            return evs;
        }
        if Instant::now() >= deadline {
            let summary: Vec<String> = evs
                .iter()
                .map(|e| format!("{} {} {}", e.ty(), e.command_id(), e.outcome()))
                .collect();
            panic!("timed out after {timeout:?} waiting for {what}; events: {summary:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects the messages of an (already declared) queue into existing `events`.
pub async fn collect_into(conn: &Connection, queue: &str, events: Events) {
    spawn_collector(conn, queue, events).await;
}

/// A string-valued AMQP header of a delivery.
pub fn header_str(d: &lapin::message::Delivery, name: &str) -> Option<String> {
    lifecycle_testkit::header_str(&d.properties, name)
}

/// A private reply queue and the messages arriving on it.
pub async fn reply_queue(env: &Env) -> (String, Events) {
    let name = lifecycle_testkit::declare_private_queue(&env.chan).await;
    let replies = collect_queue(&env.conn, &name).await;
    (name, replies)
}

/// Collects the messages of an arbitrary (already declared) queue.
pub async fn collect_queue(conn: &Connection, queue: &str) -> Events {
    let events: Events = Arc::default();
    spawn_collector(conn, queue, events.clone()).await;
    events
}

/// True when `events` hold a `command.completed` of `command_id` with `outcome`.
pub fn completed(events: &[Ev], command_id: &str, outcome: &str) -> bool {
    events.iter().any(|e| {
        e.ty() == "command.completed" && e.command_id() == command_id && e.outcome() == outcome
    })
}

pub fn count(events: &[Ev], command_id: &str, ty: &str) -> usize {
    events
        .iter()
        .filter(|e| e.command_id() == command_id && e.ty() == ty)
        .count()
}
