//! The `lifecycle-worker` binary: parse, load settings, run, map errors to
//! exit codes (2: configuration, 1: runtime failure).

use clap::Parser;
use lifecycle_worker::cli::{Cli, Command};
use lifecycle_worker::settings::Settings;
use lifecycle_worker::telemetry;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// jemalloc instead of the system allocator: the worker allocates many small,
/// short-lived values per command (frames, headers, JSON), which glibc's
/// malloc serves with about a fifth more CPU (`docs/benchmarks.md`).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// One arena (the worker's few threads allocate little at a time; more arenas
/// only hold more idle memory), and freed pages handed back within half a
/// second. `_RJEM_MALLOC_CONF` in the environment overrides it.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: Option<&'static std::ffi::c_char> = {
    const CONF: &std::ffi::CStr = c"narenas:1,dirty_decay_ms:500,muzzy_decay_ms:0";
    // SAFETY: a pointer to the first byte of a static, NUL-terminated string.
    Some(unsafe { &*CONF.as_ptr() })
};

fn load(files: &[PathBuf]) -> Result<Settings, ExitCode> {
    Settings::load(files, std::env::vars()).map_err(|e| {
        eprintln!("lifecycle-worker: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lifecycle-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { config } => {
                let settings = match load(&config) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                let traces = telemetry::init(&settings.telemetry);
                let result = lifecycle_worker::cli::run::run(settings).await;
                // Flush the last spans (blocking: the exporter runs on this runtime).
                let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
                result?;
            }
            Command::Check { config } => {
                let settings = match load(&config) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                if !lifecycle_worker::cli::check::run(&settings).await? {
                    return Ok(ExitCode::FAILURE);
                }
            }
            Command::Simulate(args) => {
                let _ = telemetry::init(&lifecycle_worker::settings::TelemetrySettings {
                    log_format: lifecycle_worker::settings::LogFormat::Auto,
                    otlp_endpoint: String::new(),
                });
                let stop = CancellationToken::new();
                lifecycle_worker::cli::run::cancel_on_signals(stop.clone());
                lifecycle_worker::simulator::run(args, stop).await?;
            }
            Command::Send { config, args } => {
                let settings = match load(&config) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                use lifecycle_worker::cli::bulk::RunEnd;
                match lifecycle_worker::cli::send::run(&settings, args).await? {
                    RunEnd::AllGood => {}
                    RunEnd::NotAllGood => return Ok(ExitCode::FAILURE),
                    RunEnd::BadInput => return Ok(ExitCode::from(2)),
                }
            }
            Command::Events { config, command } => {
                let settings = match load(&config) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                lifecycle_worker::cli::events::run(&settings, command).await?;
            }
            Command::DeadLetters { config, command } => {
                let settings = match load(&config) {
                    Ok(s) => s,
                    Err(code) => return Ok(code),
                };
                lifecycle_worker::cli::dead_letters::run(&settings, command).await?;
            }
        }
        Ok::<ExitCode, anyhow::Error>(ExitCode::SUCCESS)
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lifecycle-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}
