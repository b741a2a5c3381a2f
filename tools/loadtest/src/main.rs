//! `loadtest`: the benchmarks and the endurance run of lifecycle-worker
//! (issues 6 and 18), against a local RabbitMQ and the ECS simulator.
//!
//! `cargo run --release --locked -p lifecycle-loadtest -- --scenario all --runs 5 --n 5000`
//! `cargo run --release --locked -p lifecycle-loadtest -- soak`
//!
//! Every run gets a private RabbitMQ vhost, a fresh simulator process
//! (`lifecycle-worker simulate`), an events queue bound to `lifecycle.events`
//! with `#` (collected on one connection, commands published on another), and
//! one system under test started as a child process: the release worker, the
//! relay (the broker's ceiling) or the Python peer. `docs/benchmarks.md` has
//! the scenarios and the recorded results.
//!
//! Modules: `system` (the system under test), `sim` (the simulator), `rig`
//! (vhost, simulator and events queue of a run), `publisher`, `collector`
//! (events), `run` (one run and its measurements),
//! `report` (medians, tables, ratios), `scenarios`, `contain`, `soak`, `relay`;
//! `procstat` reads `/proc`, `worker_bin` finds (builds) the worker.

mod args;
mod collector;
mod contain;
mod procstat;
mod publisher;
mod relay;
mod report;
mod rig;
mod run;
mod scenarios;
mod sim;
mod soak;
mod system;
mod worker_bin;

use args::{Cli, Command};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let common = match &cli.command {
        Some(Command::Relay(relay)) => {
            rt.block_on(relay::relay(relay.clone()));
            return ExitCode::SUCCESS;
        }
        Some(Command::Soak(soak)) => &soak.common,
        None => &cli.bench.common,
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build of the load tool: the relay ceiling and the harness CPU \
             are not representative (cargo run --release)"
        );
    }
    let worker = match worker_bin::resolve(common.worker_bin.as_deref()) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("worker: {}", worker.display());
    match cli.command {
        Some(Command::Soak(soak)) => rt.block_on(soak::soak(soak, worker)),
        _ => rt.block_on(scenarios::bench(cli.bench, worker)),
    }
    ExitCode::SUCCESS
}
