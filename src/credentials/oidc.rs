//! Role sessions from STS: OIDC / RRSA (`AssumeRoleWithOIDC`, anonymous) and
//! `ram_role_arn` profiles (`AssumeRole` signed with the profile's keys).

use super::Credentials;
use super::cache::{Clock, SessionCache};
use super::provider::Provider;
use super::sts::{RoleRequest, Session, StsClient, as_credential_error};
use crate::domain::error::ApiError;
use crate::secret::Secret;
use futures::future::BoxFuture;
use std::path::PathBuf;

/// `AssumeRoleWithOIDC` with the token file's current contents (the platform
/// rotates the file; it is re-read at every renewal).
pub struct Oidc {
    sts: StsClient,
    role: RoleRequest,
    provider_arn: String,
    token_file: PathBuf,
    cache: SessionCache,
}

impl Oidc {
    /// A provider assuming `role` through the OIDC provider `provider_arn`.
    pub fn new(
        sts: StsClient,
        role: RoleRequest,
        provider_arn: String,
        token_file: PathBuf,
        clock: Clock,
    ) -> Self {
        Self {
            sts,
            role,
            provider_arn,
            token_file,
            cache: SessionCache::new(clock),
        }
    }

    async fn fetch(&self) -> Result<Session, ApiError> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| ApiError::Credentials {
                message: format!("OIDC token file {}: {e}", self.token_file.display()),
                code: Some("OIDCToken.Unreadable".into()),
            })?;
        let token = Secret::new(token.trim());
        if token.is_empty() {
            return Err(ApiError::Credentials {
                message: format!("OIDC token file {} is empty", self.token_file.display()),
                code: Some("OIDCToken.Empty".into()),
            });
        }
        self.sts
            .assume_role_with_oidc(&self.role, &self.provider_arn, &token)
            .await
            .map_err(|e| {
                as_credential_error(&format!("AssumeRoleWithOIDC {}", self.role.role_arn), e)
            })
    }
}

impl Provider for Oidc {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        Box::pin(self.cache.get(|| self.fetch()))
    }

    fn name(&self) -> &'static str {
        "oidc_role_arn"
    }
}

/// `AssumeRole` signed with long-lived keys (a `ram_role_arn` profile).
pub struct RamRoleArn {
    sts: StsClient,
    base: Credentials,
    role: RoleRequest,
    cache: SessionCache,
}

impl RamRoleArn {
    /// A provider assuming `role` with `base`.
    pub fn new(sts: StsClient, base: Credentials, role: RoleRequest, clock: Clock) -> Self {
        Self {
            sts,
            base,
            role,
            cache: SessionCache::new(clock),
        }
    }
}

impl Provider for RamRoleArn {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        Box::pin(self.cache.get(|| async {
            self.sts
                .assume_role_as(&self.base, &self.role)
                .await
                .map_err(|e| as_credential_error(&format!("AssumeRole {}", self.role.role_arn), e))
        }))
    }

    fn name(&self) -> &'static str {
        "ram_role_arn"
    }
}
