//! `lifecycle-worker run`: the [`App`], stopped cleanly on SIGTERM/SIGINT.

use crate::app::App;
use crate::settings::Settings;
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
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    App::build(settings).await?.run(shutdown).await;
    Ok(())
}
