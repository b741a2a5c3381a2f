//! The ECS simulator in a process of its own (`lifecycle-worker simulate`), as
//! the real API is: its work neither delays the event collector (which
//! timestamps arrivals) nor hides in the tool's own CPU figure. Seeded with
//! `mi-bench000001`... so command `i` deregisters instance `i`.

use crate::system::clean_command;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "benchid";
pub const KEY_SECRET: &str = "benchsecret";
pub const REGION: &str = "cn-hangzhou";

/// The managed instance command `i` is about.
pub fn instance_id(i: usize) -> String {
    format!("mi-bench{:06}", i + 1)
}

/// The simulator's seed: `n` managed instances `mi-bench000001`...
pub fn seed_json(n: usize) -> String {
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

/// Latency and injected `InternalError.Dispatch` rate of a simulator.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub latency_ms: u64,
    pub error_rate: f64,
}

pub struct Sim {
    child: Child,
    endpoint: String,
    seed: PathBuf,
    http: reqwest::Client,
}

impl Sim {
    /// A simulator seeded with `n` instances (the seed file lives in `logdir`).
    pub async fn start(worker: &Path, n: usize, faults: Faults, logdir: &Path, tag: &str) -> Sim {
        let seed = logdir.join(format!("seed-{tag}.json"));
        std::fs::write(&seed, seed_json(n)).expect("seed file");
        Sim::start_seeded(worker, &seed, faults, logdir, tag).await
    }

    /// A simulator serving the world in `seed` (removed with the simulator).
    pub async fn start_seeded(
        worker: &Path,
        seed: &Path,
        faults: Faults,
        logdir: &Path,
        tag: &str,
    ) -> Sim {
        let log = std::fs::File::create(logdir.join(format!("sim-{tag}.log"))).expect("sim log");
        let port = lifecycle_testkit::free_port();
        let child = clean_command(worker)
            .arg("simulate")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--seed")
            .arg(seed)
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
            seed: seed.to_path_buf(),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while sim.http.get(sim.control("faults")).send().await.is_err() {
            assert!(Instant::now() < deadline, "the simulator did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sim
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn control(&self, what: &str) -> String {
        format!("{}/_sim/{what}", self.endpoint)
    }

    /// Replaces the simulator's faults (`/_sim/faults`); best effort, as a
    /// missed fault change shows in the results.
    pub async fn set_faults(&self, faults: &serde_json::Value) {
        let _ = self
            .http
            .post(self.control("faults"))
            .json(faults)
            .send()
            .await;
    }

    /// How many API requests it has answered (0 if it cannot say).
    pub async fn request_count(&self) -> usize {
        match self.http.get(self.control("requests")).send().await {
            Ok(r) => r
                .json::<Vec<serde_json::Value>>()
                .await
                .map_or(0, |v| v.len()),
            Err(_) => 0,
        }
    }

    /// Its world (`/_sim/state`), `Null` if it cannot say.
    pub async fn state(&self) -> serde_json::Value {
        match self.http.get(self.control("state")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    pub fn shutdown(mut self) {
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
