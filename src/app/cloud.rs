//! The worker's way to the cloud, built once from settings and shared by the
//! app (`run`) and `check`, so the preflight signs with exactly the credentials, endpoint
//! and signature `run` would use.

use super::AppError;
use crate::credentials::Credentials;
use crate::credentials::chain::{default_chain, env_credentials};
use crate::credentials::identities::Identities;
use crate::credentials::provider::{Fixed, Provider};
use crate::credentials::sts::StsClient;
use crate::ecs::client::{EcsClient, Timeouts, http_client};
use crate::ecs::endpoint::Endpoint;
use crate::settings::Settings;
use crate::simulator::{self, SimulatorHandle};
use std::sync::Arc;
use std::time::Duration;
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

/// The ECS client and the identities commands act with (plus the embedded
/// simulator, when settings ask for one; it lives as long as this value).
pub struct CloudAccess {
    /// The ECS client (no rate limit: `run` adds its own).
    pub ecs: EcsClient,
    /// The worker's own credentials and the mapped accounts' roles.
    pub identities: Arc<Identities>,
    /// The embedded simulator, if running.
    pub simulator: Option<SimulatorHandle>,
}

impl CloudAccess {
    /// Builds everything from settings; resolves the default credential chain
    /// once so the log names the source (a failure there is not fatal: `run`
    /// reports it in readiness, `check` in its lines).
    pub async fn build(settings: &Settings) -> Result<Self, AppError> {
        let env = |k: &str| std::env::var(k).ok();
        let mut credentials = explicit_credentials(settings);
        let mut endpoint = Endpoint::from_setting(&settings.ecs.endpoint)
            .map_err(|e| AppError::Endpoint("ecs.endpoint", e))?;
        let mut embedded = None;
        if settings.simulator.enabled {
            // The embedded simulator knows one key: explicit, from the environment, or a local one.
            let creds = static_credentials(settings, &env)
                .unwrap_or_else(|| Credentials::static_key("local", "local-secret"));
            let seed = if settings.simulator.seed_file.is_empty() {
                None
            } else {
                Some(
                    simulator::Seed::from_file(std::path::Path::new(&settings.simulator.seed_file))
                        .map_err(AppError::Simulator)?,
                )
            };
            let sim = simulator::start(simulator::SimulatorConfig {
                listen: settings.simulator.listen,
                seed,
                keys: vec![(creds.access_key_id.clone(), creds.access_key_secret.clone())],
                allowed_regions: settings.security.allowed_regions.0.clone(),
                faults: simulator::FaultSettings::default(),
            })
            .await
            .map_err(AppError::Simulator)?;
            info!(endpoint = %sim.endpoint(), "embedded ECS simulator running");
            endpoint = Endpoint::from_setting(&sim.endpoint())
                .map_err(|e| AppError::Endpoint("simulator.listen", e))?;
            credentials = Some(creds);
            embedded = Some(sim);
        }
        let timeouts = Timeouts {
            connect: Duration::from_millis(settings.ecs.connect_timeout_ms),
            request: Duration::from_millis(settings.ecs.request_timeout_ms),
        };
        let ecs =
            EcsClient::new(endpoint, settings.ecs.signature, timeouts).map_err(AppError::Http)?;
        let sts = StsClient::new(
            http_client(timeouts).map_err(AppError::Http)?,
            &settings.sts.endpoint,
            settings.ecs.signature,
        )
        .map_err(|e| AppError::Endpoint("sts.endpoint", e))?;
        let roles = settings.accounts.roles.0.iter().cloned().collect();
        let own: Arc<dyn Provider> = match credentials {
            Some(c) => {
                let source = if settings.simulator.enabled {
                    "simulator"
                } else {
                    "settings"
                };
                info!(source, "static credentials in use");
                Arc::new(Fixed {
                    name: source,
                    credentials: c,
                })
            }
            None => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(std::path::PathBuf::from);
                let chain = default_chain(
                    settings,
                    &env,
                    home,
                    http_client(timeouts).map_err(AppError::Http)?,
                    sts.clone(),
                );
                info!(sources = ?chain.candidates(), "default credential chain");
                match chain.credentials().await {
                    Ok(_) => info!(source = chain.name(), "credential source in use"),
                    Err(e) => warn!(error = %e, "no credentials yet: commands will wait"),
                }
                chain
            }
        };
        Ok(Self {
            ecs,
            identities: Arc::new(Identities::new(own, roles, sts)),
            simulator: embedded,
        })
    }
}
