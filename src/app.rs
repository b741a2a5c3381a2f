//! The worker as a value: [`App::build`] wires settings, credentials, the ECS
//! client, the optional embedded simulator, the pace, the HTTP listener and the
//! worker together and binds its ports; [`App::run`] runs it until the
//! caller's token fires and in-flight work is settled. `run` (the subcommand)
//! fires the token on SIGTERM/SIGINT; tests start the app in their own process
//! on port 0 and fire it themselves (as tokio's mini-redis does with its
//! `server::run(listener, shutdown)`).

mod cloud;

pub use cloud::{CloudAccess, explicit_credentials, static_credentials};

use crate::ecs::rate_limit::RateLimiter;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::simulator::SimulatorError;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Why the app could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// An endpoint setting is not a URL (the key is named).
    #[error("{0}: {1}")]
    Endpoint(&'static str, url::ParseError),
    /// The embedded simulator could not start (or its seed be read).
    #[error("simulator: {0}")]
    Simulator(SimulatorError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(reqwest::Error),
    /// The health and metrics listener could not bind.
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why not.
        source: std::io::Error,
    },
}

/// A built worker, its ports bound, not yet running.
pub struct App {
    settings: Arc<Settings>,
    cloud: CloudAccess,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    health: Health,
    http_addr: SocketAddr,
    http_stop: CancellationToken,
    http: tokio::task::JoinHandle<()>,
}

impl App {
    /// Builds the worker from `settings`: resolves its credentials, starts the
    /// embedded simulator when asked, and binds `http.listen` (port 0: any).
    pub async fn build(settings: Settings) -> Result<Self, AppError> {
        let settings = Arc::new(settings);
        let cloud = CloudAccess::build(&settings).await?;
        let metrics = Metrics::new();
        metrics
            .rate_limit
            .set(i64::from(settings.ecs.max_calls_per_second));
        let limiter = Arc::new(
            RateLimiter::new(settings.ecs.max_calls_per_second, settings.ecs.rate_burst)
                .observe(metrics.clone()),
        );
        let health = Health::new();
        let http_stop = CancellationToken::new();
        let (http_addr, http) = crate::http::serve(
            settings.http.listen,
            health.clone(),
            metrics.clone(),
            http_stop.clone(),
        )
        .await
        .map_err(|source| AppError::Listen {
            addr: settings.http.listen,
            source,
        })?;
        info!(addr = %http_addr, "health and metrics listening");
        Ok(Self {
            settings,
            cloud,
            metrics,
            limiter,
            health,
            http_addr,
            http_stop,
            http,
        })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The embedded simulator's endpoint, when it runs.
    pub fn simulator_endpoint(&self) -> Option<String> {
        self.cloud.simulator.as_ref().map(|s| s.endpoint())
    }

    /// The readiness the app reports (shared: it changes as the app runs).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs until `shutdown` fires and in-flight commands are settled (or the
    /// shutdown grace ends), then stops the listener and the simulator.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = crate::worker::Worker::new(
            self.settings,
            self.cloud.ecs,
            self.cloud.identities,
            self.limiter,
            self.metrics,
            self.health,
            shutdown,
        );
        worker.run().await;
        self.http_stop.cancel();
        let _ = self.http.await;
        if let Some(sim) = self.cloud.simulator {
            sim.shutdown().await;
        }
    }
}
