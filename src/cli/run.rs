//! `lifecycle-worker run`: wire settings, credentials, the ECS client, the
//! optional embedded simulator, the HTTP listener and the worker together,
//! and stop cleanly on SIGTERM/SIGINT.

use super::cloud::CloudAccess;
use crate::ecs::rate_limit::RateLimiter;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::settings::Settings;
use anyhow::Context;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    let cloud = CloudAccess::build(&settings).await?;
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
    let identities = cloud.identities;
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
    let worker = crate::worker::Worker::new(
        settings.clone(),
        cloud.ecs,
        identities,
        Arc::new(limiter),
        metrics,
        health,
        shutdown,
    );
    worker.run().await;
    http_stop.cancel();
    let _ = http.await;
    if let Some(sim) = cloud.simulator {
        sim.shutdown().await;
    }
    Ok(())
}
