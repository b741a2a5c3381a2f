//! The system under test, as a child process: the release worker, the relay
//! (this binary's `relay` subcommand) or the Python peer, each with its log in
//! the run's log directory, configured alike through the worker's environment
//! variables.

use crate::args::System;
use crate::sim::{KEY_ID, KEY_SECRET};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command without the caller's `LIFECYCLE__*` and `ALIBABA_CLOUD_*`
/// variables: a developer's own settings must not leak into a measurement.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars() {
        if k.starts_with("LIFECYCLE__") || k.starts_with("ALIBABA_CLOUD_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The worker's environment for a run: the simulator, the sizes, and what
/// makes a benchmark measure the worker rather than its safety limits.
pub fn worker_env(
    url: &str,
    endpoint: &str,
    concurrency: u32,
    prefetch: u16,
    port: u16,
) -> Vec<(String, String)> {
    [
        ("LIFECYCLE__AMQP__URL", url.to_owned()),
        ("LIFECYCLE__ECS__ENDPOINT", endpoint.to_owned()),
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID.into()),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", KEY_SECRET.into()),
        ("LIFECYCLE__WORKER__CONCURRENCY", concurrency.to_string()),
        ("LIFECYCLE__AMQP__PREFETCH", prefetch.to_string()),
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

/// The Python peer: its interpreter and directory.
#[derive(Debug, Clone)]
pub struct PythonPeer {
    pub python: String,
    pub dir: PathBuf,
}

/// How systems (and simulators) are started: which executables, and where
/// their logs go.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The release `lifecycle-worker` (also the simulator).
    pub worker: PathBuf,
    /// A command the worker runs under (a profiler), split into words.
    pub wrap: Vec<String>,
    /// Only the benchmarks can start the Python peer.
    pub python: Option<PythonPeer>,
    pub logdir: PathBuf,
}

/// What one system needs from the run.
pub struct Spec<'a> {
    pub system: System,
    pub concurrency: u32,
    pub prefetch: u16,
    pub url: &'a str,
    pub endpoint: &'a str,
    pub tag: &'a str,
    /// Environment variables of the scenario's own, set last.
    pub extra: &'a [(&'a str, &'a str)],
}

impl Launcher {
    pub fn spawn(&self, spec: &Spec<'_>) -> Sut {
        let log = self
            .logdir
            .join(format!("{}-{}.log", spec.system.name(), spec.tag));
        let logf = std::fs::File::create(&log).expect("log file");
        let port = lifecycle_testkit::free_port();
        let env = worker_env(
            spec.url,
            spec.endpoint,
            spec.concurrency,
            spec.prefetch,
            port,
        );
        let (mut cmd, http_port) = match spec.system {
            System::Worker => {
                let mut c = match self.wrap.split_first() {
                    Some((program, rest)) => {
                        let mut c = clean_command(program);
                        c.args(rest).arg(&self.worker);
                        c
                    }
                    None => clean_command(&self.worker),
                };
                c.arg("run").envs(env).envs(spec.extra.iter().copied());
                (c, Some(port))
            }
            System::Python => {
                let peer = self.python.as_ref().expect("the Python peer is configured");
                let mut c = clean_command(peer.dir.join("lifecycle-worker"));
                c.arg("run")
                    .current_dir(&peer.dir)
                    .envs(env)
                    .env("PYTHON", &peer.python);
                (c, Some(port))
            }
            System::Relay => {
                let mut c = clean_command(std::env::current_exe().expect("own path"));
                c.args(["relay", "--url", spec.url])
                    .args(["--prefetch", &spec.prefetch.to_string()])
                    .args(["--concurrency", &spec.concurrency.to_string()]);
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
}

/// A running system under test; killed if dropped while running.
pub struct Sut {
    pub child: Child,
    /// The worker's (or peer's) `/readyz` port; the relay has none.
    pub http_port: Option<u16>,
    log: PathBuf,
}

impl Sut {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last 3,000 bytes of its log, for a failure's note.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = s.len().saturating_sub(3000);
        s[s.floor_char_boundary(start)..].to_owned()
    }

    /// Until `/readyz` answers 200 (the relay: until it logs `relay ready`).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
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

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status();
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(mut self) {
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
