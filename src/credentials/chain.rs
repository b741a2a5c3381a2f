//! The default credential chain (CONTRACT section 4), in the order of the
//! official `alibabacloud-credentials` libraries' `DefaultCredentialsProvider`:
//!
//! 1. `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` (+ `ALIBABA_CLOUD_SECURITY_TOKEN`);
//! 2. OIDC / RRSA when `ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`
//!    and `ALIBABA_CLOUD_OIDC_TOKEN_FILE` are all set;
//! 3. the CLI config `~/.aliyun/config.json` (unless
//!    `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true`);
//! 4. the profile file (`ALIBABA_CLOUD_CREDENTIALS_FILE`, else
//!    `~/.alibabacloud/credentials`, else `~/.alibabacloud/credentials.ini`);
//! 5. the ECS instance RAM role from the metadata service (unless
//!    `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`; role `ALIBABA_CLOUD_ECS_METADATA`
//!    or asked from the service);
//! 6. `ALIBABA_CLOUD_CREDENTIALS_URI` when set.
//!
//! `ALIBABA_CLOUD_PROFILE` names the profile of 3 and 4. Which sources are in
//! the chain is decided from the environment at start; files and services are
//! consulted when credentials are first asked for. The first source that
//! yields credentials is kept from then on (as the official chain's "reuse
//! last provider"); a later failure of it is a credential failure, not a
//! reason to fall through to another identity.

use super::Credentials;
use super::cache::{Clock, system_clock};
use super::metadata::{CredentialsUri, DEFAULT_METADATA_ENDPOINT, EcsRamRole};
use super::oidc::Oidc;
use super::profile::{FileProfile, Format, ini_paths};
use super::provider::{Fixed, Provider};
use super::sts::{RoleRequest, SESSION_NAME, SESSION_SECONDS, StsClient};
use crate::domain::error::ApiError;
use crate::secret::Secret;
use crate::settings::Settings;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::info;

/// What the sources need to reach their services.
#[derive(Clone)]
pub struct Sources {
    /// For the metadata service and a credentials URI.
    pub http: reqwest::Client,
    /// For role sessions.
    pub sts: StsClient,
    /// The metadata service base URL.
    pub metadata_endpoint: String,
    /// `ALIBABA_CLOUD_IMDSV1_DISABLED=true`: never call the metadata service without a token.
    pub imdsv1_disabled: bool,
    /// Time, for the renewal rule.
    pub clock: Clock,
}

impl Sources {
    /// Sources with the wall clock and the default metadata endpoint.
    pub fn new(http: reqwest::Client, sts: StsClient) -> Self {
        Self {
            http,
            sts,
            metadata_endpoint: DEFAULT_METADATA_ENDPOINT.to_owned(),
            imdsv1_disabled: false,
            clock: system_clock(),
        }
    }

    /// The ECS RAM role source (`role_name` empty or `None`: ask the service).
    pub fn ecs_ram_role(&self, role_name: Option<String>) -> EcsRamRole {
        EcsRamRole::new(
            self.http.clone(),
            &self.metadata_endpoint,
            role_name,
            self.imdsv1_disabled,
            self.clock.clone(),
        )
    }
}

/// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` (+ `_SECURITY_TOKEN`), when both are non-empty.
pub fn env_credentials(env: &dyn Fn(&str) -> Option<String>) -> Option<Credentials> {
    let id = env("ALIBABA_CLOUD_ACCESS_KEY_ID").filter(|v| !v.is_empty())?;
    let secret = env("ALIBABA_CLOUD_ACCESS_KEY_SECRET").filter(|v| !v.is_empty())?;
    Some(Credentials {
        access_key_id: id,
        access_key_secret: Secret::new(secret),
        security_token: env("ALIBABA_CLOUD_SECURITY_TOKEN")
            .filter(|t| !t.is_empty())
            .map(Secret::new),
    })
}

/// The sources, in order; the first that works is kept.
pub struct Chain {
    providers: Vec<Arc<dyn Provider>>,
    chosen: tokio::sync::OnceCell<usize>,
}

impl Chain {
    /// The chain the environment and `home` call for.
    pub fn build(
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<PathBuf>,
        sources: Sources,
    ) -> Self {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let is_true = |k: &str| var(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let mut providers: Vec<Arc<dyn Provider>> = Vec::new();
        if let Some(c) = env_credentials(env) {
            providers.push(Arc::new(Fixed {
                name: "environment",
                credentials: c,
            }));
        }
        if let (Some(role), Some(provider_arn), Some(token_file)) = (
            var("ALIBABA_CLOUD_ROLE_ARN"),
            var("ALIBABA_CLOUD_OIDC_PROVIDER_ARN"),
            var("ALIBABA_CLOUD_OIDC_TOKEN_FILE"),
        ) {
            let request = RoleRequest {
                role_arn: role,
                session_name: var("ALIBABA_CLOUD_ROLE_SESSION_NAME")
                    .unwrap_or_else(|| SESSION_NAME.to_owned()),
                duration_seconds: SESSION_SECONDS,
                policy: None,
            };
            providers.push(Arc::new(Oidc::new(
                sources.sts.clone(),
                request,
                provider_arn,
                PathBuf::from(token_file),
                sources.clock.clone(),
            )));
        }
        let profile = var("ALIBABA_CLOUD_PROFILE");
        if !is_true("ALIBABA_CLOUD_CLI_PROFILE_DISABLED") {
            let paths = home
                .iter()
                .map(|h| h.join(".aliyun").join("config.json"))
                .collect();
            providers.push(Arc::new(FileProfile::new(
                Format::CliConfig,
                paths,
                profile.clone(),
                sources.clone(),
            )));
        }
        providers.push(Arc::new(FileProfile::new(
            Format::Ini,
            ini_paths(var("ALIBABA_CLOUD_CREDENTIALS_FILE"), home.as_deref()),
            profile,
            sources.clone(),
        )));
        if !is_true("ALIBABA_CLOUD_ECS_METADATA_DISABLED") {
            providers.push(Arc::new(
                sources.ecs_ram_role(var("ALIBABA_CLOUD_ECS_METADATA")),
            ));
        }
        if let Some(uri) = var("ALIBABA_CLOUD_CREDENTIALS_URI") {
            providers.push(Arc::new(CredentialsUri::new(
                sources.http.clone(),
                &uri,
                sources.clock.clone(),
            )));
        }
        Self {
            providers,
            chosen: tokio::sync::OnceCell::new(),
        }
    }

    /// The names of the sources, in the order they are tried.
    pub fn candidates(&self) -> Vec<&'static str> {
        self.providers.iter().map(|p| p.name()).collect()
    }

    async fn resolve(&self) -> Result<Credentials, ApiError> {
        if let Some(&i) = self.chosen.get() {
            return self.providers[i].credentials().await;
        }
        let mut found = None;
        // One search at a time: concurrent first callers wait for it.
        let i = *self
            .chosen
            .get_or_try_init(|| async {
                let mut failures = Vec::new();
                for (i, p) in self.providers.iter().enumerate() {
                    match p.credentials().await {
                        Ok(c) => {
                            info!(source = p.name(), "credential source chosen");
                            found = Some(c);
                            return Ok(i);
                        }
                        Err(e) => failures.push(format!("{}: {}", p.name(), e.message())),
                    }
                }
                Err(ApiError::Credentials {
                    message: format!(
                        "no source of the default credential chain worked ({})",
                        failures.join("; ")
                    ),
                    code: Some("Credentials.Unavailable".into()),
                })
            })
            .await?;
        match found {
            Some(c) => Ok(c),
            None => self.providers[i].credentials().await,
        }
    }
}

impl Provider for Chain {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        Box::pin(self.resolve())
    }

    fn name(&self) -> &'static str {
        self.chosen
            .get()
            .map_or("default_chain", |&i| self.providers[i].name())
    }
}

/// The default chain for the worker's own credentials (used when settings give no keys).
pub fn default_chain(
    settings: &Settings,
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
    http: reqwest::Client,
    sts: StsClient,
) -> Arc<Chain> {
    let mut sources = Sources::new(http, sts);
    sources
        .metadata_endpoint
        .clone_from(&settings.credentials.metadata_endpoint);
    sources.imdsv1_disabled =
        env("ALIBABA_CLOUD_IMDSV1_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Arc::new(Chain::build(env, home, sources))
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
