//! STS for the simulator: `AssumeRole` against registered roles, and the
//! temporary keys it hands out, which then sign ECS calls with their token.
//!
//! Roles are registered through the control plane (`POST /_sim/roles` with
//! `{"RoleArn": "...", "Denied": false}`, `DELETE /_sim/roles?RoleArn=...`). An
//! unknown role answers 404 `EntityNotExist.Role`, a denied one 403
//! `NoPermission`, as STS does.
//!
//! `AssumeRoleWithOIDC` (RRSA) is anonymous, as in STS: no AccessKey, no
//! signature. OIDC providers are registered through the control plane
//! (`POST /_sim/oidc-providers` with `{"ProviderArn": "...", "Token": "..."}`;
//! without `Token` any non-empty token is accepted). An unknown provider
//! answers 404 `EntityNotExist.OIDCProvider`, a wrong token 400
//! `AuthenticationFail.OIDCToken.Invalid`.

use super::actions::ApiError;
use crate::credentials::sts::{AssumeRoleResponse, AssumedRoleUser, StsCredentials};
use crate::secret::Secret;
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A temporary key handed out by AssumeRole.
#[derive(Debug, Clone)]
struct Session {
    secret: Secret,
    token: Secret,
    expires_at: i64,
    role_arn: String,
}

/// Registered roles and live sessions.
#[derive(Debug, Default)]
pub struct Sts {
    /// Role ARN → denied.
    roles: HashMap<String, bool>,
    /// Role ARN → how long AssumeRole for it takes to answer (a slow STS).
    delays: HashMap<String, u64>,
    sessions: HashMap<String, Session>,
    /// OIDC provider ARN → the one token it accepts (`None`: any non-empty one).
    oidc_providers: HashMap<String, Option<String>>,
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl Sts {
    /// Registers (or updates) a role.
    pub fn put_role(&mut self, arn: String, denied: bool, delay_ms: u64) {
        if delay_ms > 0 {
            self.delays.insert(arn.clone(), delay_ms);
        } else {
            self.delays.remove(&arn);
        }
        self.roles.insert(arn, denied);
    }

    /// How long AssumeRole for `arn` takes to answer, when it was slowed down.
    pub fn delay_of(&self, arn: &str) -> Option<u64> {
        self.delays.get(arn).copied()
    }

    /// Registers (or updates) an OIDC provider.
    pub fn put_oidc_provider(&mut self, arn: String, token: Option<String>) {
        self.oidc_providers.insert(arn, token);
    }

    /// `AssumeRoleWithOIDC`: the provider must be registered and the token match.
    pub fn assume_role_with_oidc(
        &mut self,
        params: &[(String, String)],
        now: OffsetDateTime,
        request_id: &str,
    ) -> Result<AssumeRoleResponse, ApiError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let provider =
            get("OIDCProviderArn").ok_or_else(|| ApiError::missing("OIDCProviderArn"))?;
        let token = get("OIDCToken").ok_or_else(|| ApiError::missing("OIDCToken"))?;
        match self.oidc_providers.get(provider) {
            None => {
                return Err(ApiError::new(
                    404,
                    "EntityNotExist.OIDCProvider",
                    format!("The OIDC provider {provider} does not exist."),
                ));
            }
            Some(Some(expected)) if expected != token => {
                return Err(ApiError::new(
                    400,
                    "AuthenticationFail.OIDCToken.Invalid",
                    "The OIDC token is invalid.",
                ));
            }
            Some(_) => {}
        }
        self.assume_role(params, now, request_id)
    }

    /// Forgets a role; its sessions stay valid until they expire, as in RAM.
    pub fn remove_role(&mut self, arn: &str) -> bool {
        self.roles.remove(arn).is_some()
    }

    /// The secret of a session key.
    pub fn secret_for(&self, id: &str) -> Option<Secret> {
        self.sessions.get(id).map(|s| s.secret.clone())
    }

    /// Checks the token that must accompany a session key; returns the role.
    pub fn check(
        &self,
        id: &str,
        token: Option<&Secret>,
        now: i64,
    ) -> Result<Option<String>, ApiError> {
        let Some(session) = self.sessions.get(id) else {
            return Ok(None);
        };
        let Some(token) = token else {
            return Err(ApiError::new(
                400,
                "MissingSecurityToken",
                "SecurityToken is mandatory for this action.",
            ));
        };
        if token != &session.token {
            return Err(ApiError::new(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "The Security Token does not match access key.",
            ));
        }
        if now >= session.expires_at {
            return Err(ApiError::new(
                400,
                "InvalidSecurityToken.Expired",
                "Specified SecurityToken is expired.",
            ));
        }
        Ok(Some(session.role_arn.clone()))
    }

    /// `AssumeRole`.
    pub fn assume_role(
        &mut self,
        params: &[(String, String)],
        now: OffsetDateTime,
        request_id: &str,
    ) -> Result<AssumeRoleResponse, ApiError> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let arn = get("RoleArn")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ApiError::missing("RoleArn"))?;
        let session_name = get("RoleSessionName")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::missing("RoleSessionName"))?;
        let duration: i64 = match get("DurationSeconds") {
            None => 3600,
            Some(d) => match d.parse::<i64>() {
                Ok(n) if (900..=43_200).contains(&n) => n,
                _ => {
                    return Err(ApiError::new(
                        400,
                        "InvalidParameter.DurationSeconds",
                        "The parameter DurationSeconds is wrongly formed.",
                    ));
                }
            },
        };
        match self.roles.get(arn) {
            None => {
                return Err(ApiError::new(
                    404,
                    "EntityNotExist.Role",
                    format!("The role {arn} does not exist."),
                ));
            }
            Some(true) => {
                return Err(ApiError::new(
                    403,
                    "NoPermission",
                    "You are not authorized to assume this role.",
                ));
            }
            Some(false) => {}
        }
        let expires = now + time::Duration::seconds(duration);
        self.sessions
            .retain(|_, s| s.expires_at > now.unix_timestamp());
        let id = format!("STS.{}", random_hex(12));
        let session = Session {
            secret: Secret::new(random_hex(16)),
            token: Secret::new(format!("CAIS{}", random_hex(48))),
            expires_at: expires.unix_timestamp(),
            role_arn: arn.to_owned(),
        };
        let answer = AssumeRoleResponse {
            request_id: request_id.to_owned(),
            credentials: StsCredentials {
                access_key_id: id.clone(),
                access_key_secret: session.secret.clone(),
                security_token: session.token.clone(),
                expiration: expires.format(&Rfc3339).unwrap_or_default(),
            },
            assumed_role_user: AssumedRoleUser {
                arn: format!("{arn}/{session_name}"),
                assumed_role_id: format!("3{}:{session_name}", random_hex(8)),
            },
        };
        self.sessions.insert(id, session);
        Ok(answer)
    }
}
