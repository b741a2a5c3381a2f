//! Credentials from files: the Alibaba Cloud CLI configuration
//! (`~/.aliyun/config.json`) and the shared profile file (INI,
//! `ALIBABA_CLOUD_CREDENTIALS_FILE` or `~/.alibabacloud/credentials`).
//!
//! As in the official SDKs, the file is read when credentials are first asked
//! for; the profile it names then becomes the source (a role profile renews its
//! session itself).

use super::Credentials;
use super::chain::Sources;
use super::oidc::{Oidc, RamRoleArn};
use super::provider::{Fixed, Provider};
use super::sts::{RoleRequest, SESSION_NAME, SESSION_SECONDS};
use crate::domain::error::ApiError;
use crate::secret::Secret;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn problem(code: &str, message: String) -> ApiError {
    ApiError::Credentials {
        message,
        code: Some(code.to_owned()),
    }
}

/// Which file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `~/.aliyun/config.json`.
    CliConfig,
    /// The INI profile file.
    Ini,
}

/// A profile in a file, loaded on first use.
pub struct FileProfile {
    format: Format,
    /// Candidate paths, the first existing one is read.
    paths: Vec<PathBuf>,
    /// The profile to use (`None`: the CLI config's `current`).
    profile: Option<String>,
    sources: Sources,
    inner: tokio::sync::OnceCell<Arc<dyn Provider>>,
}

impl FileProfile {
    /// A source reading `profile` from the first of `paths` that exists.
    pub fn new(
        format: Format,
        paths: Vec<PathBuf>,
        profile: Option<String>,
        sources: Sources,
    ) -> Self {
        Self {
            format,
            paths,
            profile: profile.filter(|p| !p.is_empty()),
            sources,
            inner: tokio::sync::OnceCell::new(),
        }
    }

    fn load(&self) -> Result<Arc<dyn Provider>, ApiError> {
        let code = match self.format {
            Format::CliConfig => "CliProfile.Unusable",
            Format::Ini => "Profile.Unusable",
        };
        let Some(path) = self.paths.iter().find(|p| p.is_file()) else {
            let names: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            return Err(problem(
                code,
                format!("no profile file ({})", names.join(", ")),
            ));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| problem(code, format!("{}: {e}", path.display())))?;
        let result = match self.format {
            Format::CliConfig => cli_profile(&text, self.profile.as_deref(), &self.sources),
            Format::Ini => ini_profile(
                &text,
                self.profile.as_deref().unwrap_or("default"),
                &self.sources,
            ),
        };
        result.map_err(|m| problem(code, format!("{}: {m}", path.display())))
    }
}

impl Provider for FileProfile {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        Box::pin(async move {
            let inner = self.inner.get_or_try_init(|| async { self.load() }).await?;
            inner.credentials().await
        })
    }

    fn name(&self) -> &'static str {
        match self.format {
            Format::CliConfig => "cli_profile",
            Format::Ini => "profile",
        }
    }
}

fn keys(id: &str, secret: &Secret, token: Option<&Secret>) -> Result<Credentials, String> {
    if id.is_empty() || secret.is_empty() {
        return Err("access_key_id and access_key_secret must not be empty".into());
    }
    Ok(Credentials {
        access_key_id: id.to_owned(),
        access_key_secret: secret.clone(),
        security_token: token.filter(|t| !t.is_empty()).cloned(),
    })
}

fn role_request(
    arn: &str,
    session: &str,
    seconds: u32,
    policy: &str,
) -> Result<RoleRequest, String> {
    if arn.is_empty() {
        return Err("the role ARN must not be empty".into());
    }
    Ok(RoleRequest {
        role_arn: arn.to_owned(),
        session_name: if session.is_empty() {
            SESSION_NAME.to_owned()
        } else {
            session.to_owned()
        },
        duration_seconds: if seconds == 0 {
            SESSION_SECONDS
        } else {
            seconds
        },
        policy: Some(policy.to_owned()).filter(|p| !p.is_empty()),
    })
}

fn fixed(name: &'static str, c: Credentials) -> Arc<dyn Provider> {
    Arc::new(Fixed {
        name,
        credentials: c,
    })
}

/// One profile of `~/.aliyun/config.json` (the fields the SDKs read).
#[derive(Deserialize, Default)]
#[serde(default)]
struct CliProfile {
    name: String,
    mode: String,
    access_key_id: String,
    access_key_secret: Secret,
    sts_token: Secret,
    ram_role_arn: String,
    ram_session_name: String,
    expired_seconds: u32,
    ram_role_name: String,
    oidc_token_file: String,
    oidc_provider_arn: String,
    policy: String,
}

#[derive(Deserialize)]
struct CliConfig {
    #[serde(default)]
    current: String,
    #[serde(default)]
    profiles: Vec<CliProfile>,
}

fn cli_profile(
    text: &str,
    wanted: Option<&str>,
    sources: &Sources,
) -> Result<Arc<dyn Provider>, String> {
    let config: CliConfig = serde_json::from_str(text).map_err(|e| {
        format!(
            "unreadable ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let name = wanted.unwrap_or(&config.current);
    let p = config
        .profiles
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("no profile {name:?}"))?;
    Ok(match p.mode.as_str() {
        "AK" => fixed(
            "cli_profile",
            keys(&p.access_key_id, &p.access_key_secret, None)?,
        ),
        "StsToken" => {
            if p.sts_token.is_empty() {
                return Err(format!("profile {name:?}: sts_token must not be empty"));
            }
            fixed(
                "cli_profile",
                keys(&p.access_key_id, &p.access_key_secret, Some(&p.sts_token))?,
            )
        }
        "RamRoleArn" => Arc::new(RamRoleArn::new(
            sources.sts.clone(),
            keys(&p.access_key_id, &p.access_key_secret, None)?,
            role_request(
                &p.ram_role_arn,
                &p.ram_session_name,
                p.expired_seconds,
                &p.policy,
            )?,
            sources.clock.clone(),
        )),
        "EcsRamRole" => Arc::new(sources.ecs_ram_role(Some(p.ram_role_name.clone()))),
        "OIDC" => {
            if p.oidc_provider_arn.is_empty() || p.oidc_token_file.is_empty() {
                return Err(format!(
                    "profile {name:?}: oidc_provider_arn and oidc_token_file must not be empty"
                ));
            }
            Arc::new(Oidc::new(
                sources.sts.clone(),
                role_request(
                    &p.ram_role_arn,
                    &p.ram_session_name,
                    p.expired_seconds,
                    &p.policy,
                )?,
                p.oidc_provider_arn.clone(),
                PathBuf::from(&p.oidc_token_file),
                sources.clock.clone(),
            ))
        }
        other => return Err(format!("profile {name:?}: unsupported mode {other:?}")),
    })
}

/// Parses INI text into sections of `key = value` (comments `#`/`;`, quotes stripped).
pub fn parse_ini(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_owned();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, line.split_once('=')) else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        sections
            .entry(section.clone())
            .or_default()
            .insert(k.trim().to_owned(), v.to_owned());
    }
    sections
}

fn ini_profile(text: &str, name: &str, sources: &Sources) -> Result<Arc<dyn Provider>, String> {
    let sections = parse_ini(text);
    let s = sections
        .get(name)
        .ok_or_else(|| format!("no profile [{name}]"))?;
    let get = |k: &str| s.get(k).map(String::as_str).unwrap_or("");
    let secret = Secret::new(get("access_key_secret"));
    Ok(match get("type") {
        "access_key" => fixed("profile", keys(get("access_key_id"), &secret, None)?),
        "sts" => {
            let token = Secret::new(get("security_token"));
            if token.is_empty() {
                return Err(format!("[{name}]: security_token must not be empty"));
            }
            fixed(
                "profile",
                keys(get("access_key_id"), &secret, Some(&token))?,
            )
        }
        "ram_role_arn" => Arc::new(RamRoleArn::new(
            sources.sts.clone(),
            keys(get("access_key_id"), &secret, None)?,
            role_request(
                get("role_arn"),
                get("role_session_name"),
                get("duration_seconds").parse().unwrap_or(0),
                get("policy"),
            )?,
            sources.clock.clone(),
        )),
        "ecs_ram_role" => Arc::new(sources.ecs_ram_role(Some(get("role_name").to_owned()))),
        "" => return Err(format!("[{name}]: no type")),
        other => return Err(format!("[{name}]: unsupported type {other:?}")),
    })
}

/// The INI file's candidates: `ALIBABA_CLOUD_CREDENTIALS_FILE`, else
/// `~/.alibabacloud/credentials` (Go, Java, Node.js) then
/// `~/.alibabacloud/credentials.ini` (Python).
pub fn ini_paths(explicit: Option<String>, home: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    home.map(|h| {
        let dir = h.join(".alibabacloud");
        vec![dir.join("credentials"), dir.join("credentials.ini")]
    })
    .unwrap_or_default()
}
