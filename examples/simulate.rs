//! Runs the ECS simulator standalone, exactly as `lifecycle-worker simulate` will,
//! until SIGINT or SIGTERM: `cargo run --example simulate -- --listen 127.0.0.1:0`.

use clap::Parser;
use lifecycle_worker::simulator::{SimulateArgs, run};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// The `simulate` arguments as a standalone command line.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SimulateArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
        stop.cancel();
    });
    match run(cli.args, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulate: {e}");
            ExitCode::from(2)
        }
    }
}
