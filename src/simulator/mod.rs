//! `lifecycle-worker simulate`: a local, stateful emulator of the ECS Cloud Assistant
//! API (version `2014-05-26`), with fault injection.
//!
//! It exists so operators can try the worker without an Alibaba Cloud account, and
//! so the worker's tests and benchmarks run against something that behaves like the
//! real service: both signatures are verified with the official algorithms (the
//! official Python SDK talks to it unmodified), nonces and timestamps are checked,
//! ClientTokens replay, and errors carry the real codes, statuses and envelope.
//!
//! # API (`POST /` or `GET /`, signed)
//! `DeregisterManagedInstance`, `DisableActivation`, `DeleteActivation`,
//! `DescribeManagedInstances` (filters `InstanceId.N`, `ActivationId`, `InstanceIp`,
//! `MachineId`, `InstanceName`, `OsType`; `MaxResults` 1..=50, default 10, with an
//! opaque `NextToken`; or `PageNumber`/`PageSize`) and `DescribeActivations`
//! (`ActivationId`, `InstanceName`, same paging). Parameters may come in the query or
//! in a form-encoded body. A ClientToken replay answers the first instance again with
//! a fresh `RequestId`.
//!
//! # Control plane (same port, unsigned JSON under `/_sim/`)
//! - `GET /_sim/requests`, `DELETE /_sim/requests`: the log of API calls (last 100,000).
//! - `GET /_sim/in-flight`: `{"in_flight": n}`, API calls received and not yet answered.
//! - `GET /_sim/state`: `{"Instances", "Activations", "Deregistrations"}`;
//!   `PUT /_sim/state` with a seed replaces the world (and forgets ClientTokens and
//!   the deregistration record).
//! - `GET|POST|DELETE /_sim/faults`: read, replace, clear [`FaultSettings`], e.g.
//!   `{"fail_next":[{"action":"DisableActivation","count":2,"code":"Throttling.User","status":400,"retry_after_ms":500}],"latency_ms":20}`
//!   or `{"outage":"unavailable"}` / `{"outage":"refuse"}`.
//! - `POST /_sim/keys` `{"AccessKeyId","AccessKeySecret"}` adds a key;
//!   `DELETE /_sim/keys/{id}` revokes one.
//! - `POST /_sim/roles` `{"RoleArn","Denied","DelayMs"}` / `DELETE /_sim/roles?RoleArn=` for STS
//!   `AssumeRole`; `POST /_sim/oidc-providers` `{"ProviderArn","Token"}` for the
//!   anonymous `AssumeRoleWithOIDC` (no `Token`: any non-empty one is accepted).
//!
//! # Seed
//! JSON `{"Instances": [...], "Activations": [...]}`, each item the API object with its
//! PascalCase fields plus `RegionId`; see `config/seed.json`, also the default for
//! `simulate` without `--seed`.

mod actions;
mod cli;
pub mod faults;
mod server;
mod state;
mod sts;

pub use actions::ApiError;
pub use cli::{KeyArg, SimulateArgs, run};
pub use faults::{FailNext, FaultSettings, Outage};
pub use server::LogEntry;
pub use state::{Seed, SeedActivation, SeedInstance, StateView};

use crate::secret::Secret;
use axum::serve::Listener;
use server::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A seed file could not be read.
    #[error("cannot read seed file {path}: {source}")]
    SeedRead {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A seed was not valid.
    #[error("invalid seed {path}: {reason}")]
    SeedParse {
        /// The file, or `<inline>`.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// A command-line value was not valid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// What to run: where to listen, the world, the keys, the regions and the faults.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The starting world; empty when absent.
    pub seed: Option<Seed>,
    /// Accepted AccessKey pairs.
    pub keys: Vec<(String, Secret)>,
    /// Regions the API serves; others get `RegionId.ApiNotSupported`.
    pub allowed_regions: Vec<String>,
    /// Faults in force from the start.
    pub faults: FaultSettings,
}

/// A running simulator; drop it or call [`SimulatorHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct SimulatorHandle {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl SimulatorHandle {
    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to point a client at, e.g. `http://127.0.0.1:8080`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits (briefly) for open connections to finish.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Binds and serves in a spawned task.
pub async fn start(config: SimulatorConfig) -> Result<SimulatorHandle, SimulatorError> {
    config
        .faults
        .validate()
        .map_err(SimulatorError::InvalidArgument)?;
    let world = match config.seed {
        Some(seed) => {
            seed.validate()?;
            state::World::from_seed(seed)
        }
        None => state::World::default(),
    };
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimulatorError::Bind {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SimulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let shared = Arc::new(Shared::new(
        world,
        config.keys,
        config.allowed_regions,
        config.faults,
    ));
    let app = server::router(shared);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let listener = NoDelayListener { inner: listener };
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "simulator server stopped");
        }
    });
    Ok(SimulatorHandle { addr, cancel, task })
}

/// Accepts connections with `TCP_NODELAY`, so small answers are not delayed.
///
/// A `refuse` outage is applied per API request (the connection is dropped without
/// an answer), not here, so the control plane stays reachable to end the outage.
struct NoDelayListener {
    inner: TcpListener,
}

impl Listener for NoDelayListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let _ = io.set_nodelay(true);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
