//! The `simulate` subcommand's arguments and entry point.

use super::faults::FaultSettings;
use super::{Seed, SimulatorConfig, SimulatorError, start};
use crate::secret::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// The sample world served when no `--seed` is given, so `simulate` works out of the box.
const SAMPLE_SEED: &str = include_str!("../../config/seed.json");

/// An AccessKey pair given as `ID:SECRET`; its `Debug` hides the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyArg {
    /// The AccessKey id.
    pub id: String,
    /// The AccessKey secret.
    pub secret: Secret,
}

impl std::str::FromStr for KeyArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(KeyArg {
                id: id.to_owned(),
                secret: Secret::new(secret),
            }),
            // Never echo the value: it may hold a secret.
            _ => Err("expected ID:SECRET with both parts non-empty".to_owned()),
        }
    }
}

/// Arguments of `lifecycle-worker simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seed JSON file (default: the built-in sample, as in config/seed.json).
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// Accepted AccessKey pair, repeatable.
    #[arg(
        long = "key",
        value_name = "ID:SECRET",
        default_value = "testid:testsecret"
    )]
    pub keys: Vec<KeyArg>,
    /// Regions the API serves, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cn-hangzhou,cn-beijing,cn-shanghai"
    )]
    pub allowed_regions: Vec<String>,
    /// Probability (0..=1) of answering 500 InternalError.Dispatch.
    #[arg(long, default_value_t = 0.0)]
    pub dispatch_error_rate: f64,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

impl SimulateArgs {
    /// The configuration these arguments describe (reads the seed file).
    pub fn into_config(self) -> Result<SimulatorConfig, SimulatorError> {
        let seed = match &self.seed {
            Some(path) => Seed::from_file(path)?,
            None => Seed::from_json(SAMPLE_SEED)?,
        };
        let faults = FaultSettings {
            dispatch_error_rate: self.dispatch_error_rate,
            latency_ms: self.latency_ms,
            ..FaultSettings::default()
        };
        faults.validate().map_err(SimulatorError::InvalidArgument)?;
        let allowed_regions: Vec<String> = self
            .allowed_regions
            .iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        Ok(SimulatorConfig {
            listen: self.listen,
            seed: Some(seed),
            keys: self.keys.into_iter().map(|k| (k.id, k.secret)).collect(),
            allowed_regions,
            faults,
        })
    }
}

/// Runs the simulator until `shutdown` is cancelled; prints the listening address.
pub async fn run(args: SimulateArgs, shutdown: CancellationToken) -> Result<(), SimulatorError> {
    let handle = start(args.into_config()?).await?;
    println!("simulator listening on {}", handle.endpoint());
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn defaults_and_keys_parse_without_showing_secrets() {
        let cli = Cli::try_parse_from(["x"]).ok();
        let args = cli.map(|c| c.args);
        let keys = args.as_ref().map(|a| a.keys.clone()).unwrap_or_default();
        assert_eq!(keys.first().map(|k| k.id.as_str()), Some("testid"));
        assert_eq!(args.as_ref().map(|a| a.allowed_regions.len()), Some(3));
        assert!(!format!("{args:?}").contains("testsecret"));
        let cfg = args.map(SimulateArgs::into_config);
        assert!(cfg.is_some_and(|c| c.is_ok_and(|c| c.seed.is_some())));
        let bad = Cli::try_parse_from(["x", "--key", "nosecret"]);
        assert!(bad.is_err());
        let rate = Cli::try_parse_from(["x", "--dispatch-error-rate", "2"]).ok();
        assert!(
            rate.map(|c| c.args.into_config())
                .is_some_and(|r| r.is_err())
        );
    }
}
