//! The command line: `run`, `check`, `simulate`, `send`, `dead-letters`, `events`.
//!
//! `main.rs` only parses and maps errors to exit codes; what each subcommand
//! does lives here, so it can be called from tests too.

pub mod bulk;
pub mod check;
pub mod dead_letters;
pub mod events;
pub mod output;
pub mod run;
pub mod send;

use std::path::PathBuf;

/// The binary's arguments.
#[derive(Debug, clap::Parser)]
#[command(
    name = "lifecycle-worker",
    version,
    about = "Carries out host-offboarding and leaked-activation-code commands against the Alibaba Cloud ECS OpenAPI"
)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
pub enum Command {
    /// Run the worker.
    Run {
        /// Extra config files layered over the defaults, in order.
        #[arg(long = "config")]
        config: Vec<PathBuf>,
    },
    /// Run the local ECS Cloud Assistant API simulator.
    Simulate(crate::simulator::SimulateArgs),
    /// Publish a command, or one per row of a file (--from-file).
    Send {
        /// Extra config files.
        #[arg(long = "config")]
        config: Vec<PathBuf>,
        /// What to send.
        #[command(flatten)]
        args: send::SendArgs,
    },
    /// Preflight: broker and topology, then a signed read-only call per
    /// allowed region and per mapped account; exit 0 only when all pass.
    Check {
        /// Extra config files layered over the defaults, in order (as `run`).
        #[arg(long = "config")]
        config: Vec<PathBuf>,
    },
    /// List or replay dead letters.
    DeadLetters {
        /// Extra config files.
        #[arg(long = "config")]
        config: Vec<PathBuf>,
        /// list or replay.
        #[command(subcommand)]
        command: dead_letters::DeadLetterCommand,
    },
    /// Follow the events the worker publishes.
    Events {
        /// Extra config files.
        #[arg(long = "config")]
        config: Vec<PathBuf>,
        /// tail.
        #[command(subcommand)]
        command: events::EventsCommand,
    },
}
