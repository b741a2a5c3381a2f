//! `lifecycle-worker run`: wire settings, credentials, the ECS client, the
//! optional embedded simulator, the HTTP listener and the worker together,
//! and stop cleanly on SIGTERM/SIGINT.

use crate::credentials::Credentials;
use crate::credentials::chain::{default_chain, env_credentials};
use crate::credentials::identities::Identities;
use crate::credentials::provider::Provider;
use crate::credentials::provider::Static;
use crate::credentials::sts::StsClient;
use crate::ecs::client::{EcsClient, Timeouts, http_client};
use crate::ecs::endpoint::Endpoint;
use crate::ecs::rate_limit::RateLimiter;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::simulator;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Keys given explicitly in settings (`ecs.access_key_id` / `_secret` / `security_token`).
pub fn explicit_credentials(settings: &Settings) -> Option<Credentials> {
    if settings.ecs.access_key_id.is_empty() || settings.ecs.access_key_secret.is_empty() {
        return None;
    }
    let token = settings.ecs.security_token.clone();
    Some(Credentials {
        access_key_id: settings.ecs.access_key_id.clone(),
        access_key_secret: settings.ecs.access_key_secret.clone(),
        security_token: (!token.is_empty()).then_some(token),
    })
}

/// Credentials from explicit settings, else the `ALIBABA_CLOUD_*` variables.
pub fn static_credentials(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Credentials> {
    explicit_credentials(settings).or_else(|| env_credentials(env))
}

/// Fires the token on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("signal received: stopping");
        token.cancel();
    });
}

/// Runs the worker until a signal stops it and in-flight work is done.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let env = |k: &str| std::env::var(k).ok();
    let mut credentials = explicit_credentials(&settings);
    let mut endpoint = Endpoint::from_setting(&settings.ecs.endpoint).context("ecs.endpoint")?;
    let mut _simulator = None;
    if settings.simulator.enabled {
        // The embedded simulator knows one key: explicit, from the environment, or a local one.
        let creds = static_credentials(&settings, &env)
            .unwrap_or_else(|| Credentials::static_key("local", "local-secret"));
        let seed = if settings.simulator.seed_file.is_empty() {
            None
        } else {
            Some(simulator::Seed::from_file(std::path::Path::new(
                &settings.simulator.seed_file,
            ))?)
        };
        let sim = simulator::start(simulator::SimulatorConfig {
            listen: settings.simulator.listen,
            seed,
            keys: vec![(creds.access_key_id.clone(), creds.access_key_secret.clone())],
            allowed_regions: settings.security.allowed_regions.0.clone(),
            faults: simulator::FaultSettings::default(),
        })
        .await
        .context("starting the embedded simulator")?;
        info!(endpoint = %sim.endpoint(), "embedded ECS simulator running");
        endpoint = Endpoint::from_setting(&sim.endpoint()).context("simulator endpoint")?;
        credentials = Some(creds);
        _simulator = Some(sim);
    }
    let timeouts = Timeouts {
        connect: Duration::from_millis(settings.ecs.connect_timeout_ms),
        request: Duration::from_millis(settings.ecs.request_timeout_ms),
    };
    let metrics = Metrics::new();
    metrics
        .rate_limit
        .set(i64::from(settings.ecs.max_calls_per_second));
    let observed = metrics.clone();
    let limiter = RateLimiter::new(settings.ecs.max_calls_per_second, settings.ecs.rate_burst)
        .observe(Box::new(move |wait| {
            observed.rate_limited_calls.inc();
            observed.rate_limit_wait_seconds.inc_by(wait.as_secs_f64());
        }));
    let ecs = EcsClient::new(endpoint, settings.ecs.signature, timeouts)
        .context("building the HTTP client")?
        .with_rate_limit(Arc::new(limiter));
    let sts = StsClient::new(
        http_client(timeouts).context("building the HTTP client")?,
        &settings.sts.endpoint,
        settings.ecs.signature,
    )
    .context("sts.endpoint")?;
    let roles = settings.accounts.roles.0.iter().cloned().collect();
    let own: Arc<dyn Provider> = match credentials {
        Some(c) => {
            let source = if settings.simulator.enabled {
                "simulator"
            } else {
                "settings"
            };
            info!(source, "static credentials in use");
            Arc::new(Static(Some(c)))
        }
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(std::path::PathBuf::from);
            let chain = default_chain(
                &settings,
                &env,
                home,
                http_client(timeouts).context("building the HTTP client")?,
                sts.clone(),
            );
            info!(sources = ?chain.candidates(), "default credential chain");
            // Resolve once now so the log names the source; a failure is not
            // fatal: commands wait and readiness reports it.
            match chain.credentials().await {
                Ok(_) => info!(source = chain.name(), "credential source in use"),
                Err(e) => warn!(error = %e, "no credentials yet: commands will wait"),
            }
            chain
        }
    };
    let identities = Arc::new(Identities::new(own, roles, sts));
    let health = Health::new();
    let http_stop = CancellationToken::new();
    let (addr, http) = crate::http::serve(
        settings.http.listen,
        health.clone(),
        metrics.clone(),
        http_stop.clone(),
    )
    .await
    .with_context(|| format!("http.listen: cannot listen on {}", settings.http.listen))?;
    info!(%addr, "health and metrics listening");
    let worker =
        crate::worker::Worker::new(settings.clone(), ecs, identities, metrics, health, shutdown);
    worker.run().await;
    http_stop.cancel();
    let _ = http.await;
    if let Some(sim) = _simulator {
        sim.shutdown().await;
    }
    Ok(())
}
