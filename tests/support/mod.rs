//! Harness for the end-to-end tests: a private RabbitMQ vhost, the in-process
//! ECS simulator, the worker binary as a child process, and an event collector.

#![allow(dead_code)]

use futures::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use lifecycle_worker::secret::Secret;
use lifecycle_worker::simulator::{self, FaultSettings, Seed, SimulatorConfig, SimulatorHandle};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "testid";
pub const KEY_SECRET: &str = "testsecret";
pub const REGION: &str = "cn-hangzhou";

/// Runs `rabbitmqctl` with the given arguments; panics on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private vhost, deleted on drop.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub async fn create() -> Vhost {
        let name = format!("lw-{}", uuid::Uuid::new_v4());
        let n = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["-q", "add_vhost", &n]);
            rabbitmqctl(&["-q", "set_permissions", "-p", &n, "guest", ".*", ".*", ".*"]);
        })
        .await
        .expect("vhost setup");
        Vhost { name }
    }

    /// The AMQP URL (vhost names here need no percent-encoding: `lw-` + uuid).
    pub fn url(&self) -> String {
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

/// A worker child process, killed on drop.
pub struct Worker {
    pub child: Child,
    pub http_port: u16,
    pub stderr_path: PathBuf,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
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

    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = self.readyz().await {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("worker exited early ({status}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "worker not ready in {timeout:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
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
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit in {timeout:?}: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
    pub async fn new(seed: Value) -> Env {
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
        let events: Events = Arc::default();
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
        spawn_collector(&conn, q.name().as_str(), events.clone()).await;
        Env {
            sim,
            http: reqwest::Client::new(),
            conn,
            chan,
            events,
            tmp: tempfile::tempdir().expect("tempdir"),
            worker_seq: Default::default(),
            vhost,
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

    /// Starts a worker (not waiting for readiness).
    pub fn spawn_worker(&self, extra: &[(&str, &str)]) -> Worker {
        let n = self
            .worker_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stderr_path = self.tmp.path().join(format!("worker-{n}.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let http_port = free_port();
        let mut cmd = self.command();
        cmd.arg("run")
            .env("LIFECYCLE__HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().expect("worker spawns");
        Worker {
            child,
            http_port,
            stderr_path,
        }
    }

    /// Starts a worker and waits for `/readyz` 200.
    pub async fn start_worker(&self, extra: &[(&str, &str)]) -> Worker {
        let mut w = self.spawn_worker(extra);
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
        let out = tokio::task::spawn_blocking(move || {
            rabbitmqctl(&[
                "-q",
                "list_connections",
                "pid",
                "vhost",
                "client_properties",
            ])
        })
        .await
        .expect("join");
        let vhost = &self.vhost.name;
        out.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(vhost.as_str()))
            .filter(|l| l.contains(&format!("{{\"connection_name\",\"{name}\"}}")))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .filter(|p| p.starts_with('<'))
            .collect()
    }
}

/// The worker's consuming connection's name.
pub const CONSUMING: &str = "lifecycle-worker";
/// The worker's publishing connection's name.
pub const PUBLISHING: &str = "lifecycle-worker-publisher";

async fn spawn_collector(conn: &Connection, queue: &str, events: Events) {
    let chan = conn.create_channel().await.expect("channel");
    let mut consumer = chan
        .basic_consume(
            queue.into(),
            "e2e-events".into(),
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
        }
    });
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
    match d.properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
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
