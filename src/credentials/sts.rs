//! STS `AssumeRole`: temporary credentials for a RAM role, signed with the
//! worker's own credentials (which may themselves be temporary: role chaining).

use super::Credentials;
use crate::ecs::error::ApiError;
use crate::ecs::sign::SignatureVersion;
use crate::ecs::transport::SignedCall;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The STS API version.
pub const STS_VERSION: &str = "2015-04-01";
/// Session length asked for (the RAM default maximum is one hour).
pub const SESSION_SECONDS: u32 = 3600;
/// The session name shown in ActionTrail for everything the worker does.
pub const SESSION_NAME: &str = "lifecycle-worker";

/// The `Credentials` object of an AssumeRole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StsCredentials {
    /// `STS.`-prefixed AccessKey id.
    pub access_key_id: String,
    /// Its secret.
    #[serde(serialize_with = "expose")]
    pub access_key_secret: Secret,
    /// The token that must accompany it.
    #[serde(serialize_with = "expose")]
    pub security_token: Secret,
    /// RFC 3339 expiry.
    pub expiration: String,
}

/// `Secret` deliberately has no `Serialize`; only the simulator writes STS
/// answers, and it opts in field by field here.
fn expose<S: serde::Serializer>(secret: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

/// The assumed role, as STS reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AssumedRoleUser {
    /// The role's ARN with the session name.
    pub arn: String,
    /// The role session id.
    pub assumed_role_id: String,
}

/// The AssumeRole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleResponse {
    /// The API's RequestId.
    #[serde(default)]
    pub request_id: String,
    /// The session's credentials.
    pub credentials: StsCredentials,
    /// Who we became.
    #[serde(default)]
    pub assumed_role_user: AssumedRoleUser,
}

/// A role session: credentials plus when they stop working.
#[derive(Debug, Clone)]
pub struct Session {
    /// The temporary credentials.
    pub credentials: Credentials,
    /// When they expire.
    pub expires_at: OffsetDateTime,
}

/// Calls STS.
#[derive(Clone)]
pub struct StsClient {
    http: reqwest::Client,
    base: String,
    host: String,
    signature: SignatureVersion,
}

impl StsClient {
    /// A client for the STS endpoint (`sts.endpoint`, scheme included).
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        signature: SignatureVersion,
    ) -> Result<Self, url::ParseError> {
        let url = url::Url::parse(endpoint)?;
        let name = url.host_str().ok_or(url::ParseError::EmptyHost)?;
        let host = match url.port() {
            Some(p) => format!("{name}:{p}"),
            None => name.to_owned(),
        };
        Ok(Self {
            base: format!("{}://{host}", url.scheme()),
            host,
            http,
            signature,
        })
    }

    /// Assumes `role_arn` with `base` credentials; one attempt.
    pub async fn assume_role(
        &self,
        base: &Credentials,
        role_arn: &str,
    ) -> Result<Session, ApiError> {
        let params = vec![
            ("RoleArn".to_owned(), role_arn.to_owned()),
            ("RoleSessionName".to_owned(), SESSION_NAME.to_owned()),
            ("DurationSeconds".to_owned(), SESSION_SECONDS.to_string()),
        ];
        let (answer, request_id): (AssumeRoleResponse, _) = SignedCall {
            http: &self.http,
            base: &self.base,
            host: &self.host,
            signature: self.signature,
            credentials: base,
            version: STS_VERSION,
            action: "AssumeRole",
            params: &params,
            traceparent: None,
        }
        .send()
        .await?;
        let c = answer.credentials;
        let expires_at =
            OffsetDateTime::parse(&c.expiration, &Rfc3339).map_err(|e| ApiError::Decode {
                http_status: 200,
                message: format!("AssumeRole Expiration {:?}: {e}", c.expiration),
                request_id,
            })?;
        Ok(Session {
            credentials: Credentials {
                access_key_id: c.access_key_id,
                access_key_secret: c.access_key_secret,
                security_token: Some(c.security_token),
            },
            expires_at,
        })
    }
}
