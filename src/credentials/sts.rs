//! STS `AssumeRole`: temporary credentials for a RAM role, signed with the
//! worker's own credentials (which may themselves be temporary: role chaining).

use super::Credentials;
use crate::domain::error::ApiError;
use crate::ecs::sign::SignatureVersion;
use crate::ecs::transport::{Answer, ApiHost, SignedCall};
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

impl Answer for AssumeRoleResponse {
    fn request_id(&self) -> &str {
        &self.request_id
    }
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
    api: ApiHost,
    signature: SignatureVersion,
}

impl StsClient {
    /// A client for the STS endpoint (`sts.endpoint`, scheme included).
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        signature: SignatureVersion,
    ) -> Result<Self, url::ParseError> {
        Ok(Self {
            api: ApiHost::parse(endpoint)?,
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
        self.assume_role_as(base, &RoleRequest::new(role_arn)).await
    }

    /// `AssumeRole` with a session name, duration and optional policy.
    pub async fn assume_role_as(
        &self,
        base: &Credentials,
        role: &RoleRequest,
    ) -> Result<Session, ApiError> {
        let params = role.params();
        let (answer, request_id): (AssumeRoleResponse, _) = SignedCall {
            http: &self.http,
            api: &self.api,
            signature: self.signature,
            credentials: base,
            version: STS_VERSION,
            action: "AssumeRole",
            params: &params,
            traceparent: None,
        }
        .send()
        .await?;
        session_of(answer, request_id)
    }

    /// `AssumeRoleWithOIDC` (RRSA): anonymous, as the official SDKs send it:
    /// common parameters in the query, the rest as a form body, no AccessKey
    /// and no signature. One attempt.
    pub async fn assume_role_with_oidc(
        &self,
        role: &RoleRequest,
        provider_arn: &str,
        oidc_token: &Secret,
    ) -> Result<Session, ApiError> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithOIDC")
            .append_pair("Version", STS_VERSION)
            .append_pair("Format", "JSON")
            .append_pair("Timestamp", &crate::ecs::sign::timestamp_now())
            .finish();
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in role.params() {
                form.append_pair(&k, &v);
            }
            form.append_pair("OIDCProviderArn", provider_arn);
            form.append_pair("OIDCToken", oidc_token.expose());
            form.finish()
        };
        let (answer, request_id): (AssumeRoleResponse, _) = crate::ecs::transport::send_unsigned(
            self.http
                .post(self.api.url(&query))
                .header("accept", "application/json")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form),
            "AssumeRoleWithOIDC",
        )
        .await?;
        session_of(answer, request_id)
    }
}

/// What to ask STS for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRequest {
    /// The role's ARN.
    pub role_arn: String,
    /// `RoleSessionName` (shown in ActionTrail).
    pub session_name: String,
    /// `DurationSeconds`.
    pub duration_seconds: u32,
    /// An optional policy narrowing the session.
    pub policy: Option<String>,
}

impl RoleRequest {
    /// The worker's defaults for `role_arn`.
    pub fn new(role_arn: &str) -> Self {
        Self {
            role_arn: role_arn.to_owned(),
            session_name: SESSION_NAME.to_owned(),
            duration_seconds: SESSION_SECONDS,
            policy: None,
        }
    }

    fn params(&self) -> Vec<(String, String)> {
        let mut params = vec![
            ("RoleArn".to_owned(), self.role_arn.clone()),
            ("RoleSessionName".to_owned(), self.session_name.clone()),
            (
                "DurationSeconds".to_owned(),
                self.duration_seconds.to_string(),
            ),
        ];
        if let Some(p) = self.policy.as_ref().filter(|p| !p.is_empty()) {
            params.push(("Policy".to_owned(), p.clone()));
        }
        params
    }
}

fn session_of(answer: AssumeRoleResponse, request_id: Option<String>) -> Result<Session, ApiError> {
    let c = answer.credentials;
    let expires_at =
        OffsetDateTime::parse(&c.expiration, &Rfc3339).map_err(|e| ApiError::Decode {
            http_status: 200,
            message: format!("STS Expiration {:?}: {e}", c.expiration),
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

/// Any STS failure as a credential failure (the operator's problem).
pub fn as_credential_error(what: &str, e: ApiError) -> ApiError {
    match e {
        ApiError::Api { code, message, .. } => ApiError::Credentials {
            message: format!("{what}: {message}"),
            code: Some(code),
        },
        ApiError::Credentials { .. } => e,
        other => ApiError::Credentials {
            message: format!("{what}: {other}"),
            code: Some(other.code().to_owned()),
        },
    }
}
