//! Temporary credentials served over HTTP as JSON
//! (`{AccessKeyId, AccessKeySecret, SecurityToken, Expiration, Code: "Success"}`):
//! the ECS instance RAM role from the metadata service, and a credentials URI.

use super::Credentials;
use super::cache::{Clock, SessionCache};
use super::provider::Provider;
use super::sts::Session;
use crate::domain::error::ApiError;
use crate::secret::Secret;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The metadata service of an ECS instance.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// Lifetime asked for the IMDSv2 token (what the official SDKs ask: 6 h).
const METADATA_TOKEN_TTL: &str = "21600";
/// The metadata service is local: an answer takes milliseconds or never comes.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
/// A credentials URI may be a sidecar doing real work.
const URI_TIMEOUT: Duration = Duration::from_secs(5);
const CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";

fn unavailable(code: &str, message: String) -> ApiError {
    ApiError::Credentials {
        message,
        code: Some(code.to_owned()),
    }
}

/// What the metadata service and a credentials URI answer.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    code: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<Secret>,
    security_token: Option<Secret>,
    expiration: Option<String>,
}

/// Reads the JSON answer; errors name what was wrong, never a value from the body.
fn parse_answer(body: &[u8], code: &str, what: &str) -> Result<Session, ApiError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote a value: report only where and what kind.
        unavailable(
            code,
            format!(
                "{what}: unreadable answer ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    if answer.code.as_deref() != Some("Success") {
        return Err(unavailable(
            code,
            format!("{what}: Code is {:?}, not \"Success\"", answer.code),
        ));
    }
    let (Some(id), Some(secret), Some(token), Some(expiration)) = (
        answer.access_key_id.filter(|v| !v.is_empty()),
        answer.access_key_secret.filter(|v| !v.is_empty()),
        answer.security_token.filter(|v| !v.is_empty()),
        answer.expiration,
    ) else {
        return Err(unavailable(
            code,
            format!(
                "{what}: the answer lacks AccessKeyId, AccessKeySecret, SecurityToken or Expiration"
            ),
        ));
    };
    let expires_at = OffsetDateTime::parse(&expiration, &Rfc3339)
        .map_err(|e| unavailable(code, format!("{what}: Expiration {expiration:?}: {e}")))?;
    Ok(Session {
        credentials: Credentials {
            access_key_id: id,
            access_key_secret: secret,
            security_token: Some(token),
        },
        expires_at,
    })
}

fn transport_message(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    // The error and its causes, without the URL (a URI may carry a token).
    let e = e.without_url();
    let mut out = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The ECS instance RAM role (IMDSv2 token first, as the official SDKs do).
pub struct EcsRamRole {
    http: reqwest::Client,
    base: String,
    role_name: Option<String>,
    imdsv1_disabled: bool,
    cache: SessionCache,
}

impl EcsRamRole {
    /// `base`: the metadata service (scheme included); `role_name`: the
    /// instance's role, or `None` to ask the service for it; `imdsv1_disabled`:
    /// fail rather than fall back to token-less requests when no IMDSv2 token
    /// can be had.
    pub fn new(
        http: reqwest::Client,
        base: &str,
        role_name: Option<String>,
        imdsv1_disabled: bool,
        clock: Clock,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            role_name: role_name.filter(|r| !r.is_empty()),
            imdsv1_disabled,
            cache: SessionCache::new(clock),
        }
    }

    async fn token(&self) -> Result<Option<Secret>, ApiError> {
        let sent = self
            .http
            .put(format!("{}/latest/api/token", self.base))
            .header(
                "X-aliyun-ecs-metadata-token-ttl-seconds",
                METADATA_TOKEN_TTL,
            )
            .timeout(METADATA_TIMEOUT)
            .send()
            .await;
        let problem = match sent {
            Ok(r) if r.status().is_success() => match r.text().await {
                Ok(t) if !t.trim().is_empty() => return Ok(Some(Secret::new(t.trim()))),
                Ok(_) => "an empty token".to_owned(),
                Err(e) => transport_message(e),
            },
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => transport_message(e),
        };
        if self.imdsv1_disabled {
            return Err(unavailable(
                "MetadataService.Unavailable",
                format!("ECS metadata service: no IMDSv2 token ({problem})"),
            ));
        }
        Ok(None)
    }

    async fn get(&self, path: &str, token: Option<&Secret>) -> Result<Vec<u8>, ApiError> {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(METADATA_TIMEOUT);
        if let Some(t) = token {
            request = request.header("X-aliyun-ecs-metadata-token", t.expose());
        }
        let fail = |m: String| {
            unavailable(
                "MetadataService.Unavailable",
                format!("ECS metadata service {path}: {m}"),
            )
        };
        let response = request
            .send()
            .await
            .map_err(|e| fail(transport_message(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16())));
        }
        Ok(response
            .bytes()
            .await
            .map_err(|e| fail(transport_message(e)))?
            .to_vec())
    }

    async fn fetch(&self) -> Result<Session, ApiError> {
        let token = self.token().await?;
        let role = match &self.role_name {
            Some(r) => r.clone(),
            None => {
                let body = self.get(CREDENTIALS_PATH, token.as_ref()).await?;
                let name = String::from_utf8_lossy(&body).trim().to_owned();
                if name.is_empty() || name.contains('/') {
                    return Err(unavailable(
                        "MetadataService.NoRole",
                        "ECS metadata service: the instance has no RAM role attached".into(),
                    ));
                }
                name
            }
        };
        let body = self
            .get(&format!("{CREDENTIALS_PATH}{role}"), token.as_ref())
            .await?;
        parse_answer(
            &body,
            "MetadataService.Unavailable",
            &format!("ECS RAM role {role}"),
        )
    }
}

impl Provider for EcsRamRole {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        Box::pin(self.cache.get(|| self.fetch()))
    }

    fn name(&self) -> &'static str {
        "ecs_ram_role"
    }
}

/// `ALIBABA_CLOUD_CREDENTIALS_URI`: a local endpoint answering the same JSON.
pub struct CredentialsUri {
    http: reqwest::Client,
    uri: String,
    cache: SessionCache,
}

impl CredentialsUri {
    /// A provider for `uri`.
    pub fn new(http: reqwest::Client, uri: &str, clock: Clock) -> Self {
        Self {
            http,
            uri: uri.to_owned(),
            cache: SessionCache::new(clock),
        }
    }

    async fn fetch(&self) -> Result<Session, ApiError> {
        let fail = |m: String| {
            unavailable(
                "CredentialsUri.Unavailable",
                format!("credentials URI: {m}"),
            )
        };
        let response = self
            .http
            .get(&self.uri)
            .timeout(URI_TIMEOUT)
            .send()
            .await
            .map_err(|e| fail(transport_message(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16())));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| fail(transport_message(e)))?;
        parse_answer(&body, "CredentialsUri.Unavailable", "credentials URI")
    }
}

impl Provider for CredentialsUri {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        Box::pin(self.cache.get(|| self.fetch()))
    }

    fn name(&self) -> &'static str {
        "credentials_uri"
    }
}
