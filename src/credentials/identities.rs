//! Which credentials a command runs with.
//!
//! Without `account_id`: the worker's own credentials. With it: a session of
//! the RAM role mapped to that account (`accounts.roles`), obtained with STS
//! AssumeRole using the worker's own credentials, cached per account and
//! renewed ahead of expiry (when less than a quarter of its lifetime or 15
//! minutes is left, whichever is less), one renewal at a time per account so a
//! burst of commands does not become a burst of AssumeRole calls.

use super::Credentials;
use super::cache::{Clock, SessionCache};
use super::provider::Provider;
use super::sts::StsClient;
use crate::domain::error::ApiError;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

pub use super::cache::RENEW_MARGIN;

/// Resolves a command's identity.
pub struct Identities {
    base: Arc<dyn Provider>,
    roles: BTreeMap<String, String>,
    sts: StsClient,
    slots: Mutex<HashMap<String, Arc<SessionCache>>>,
    clock: Clock,
}

impl Identities {
    /// `base`: the worker's own credentials; `roles`: account id → role ARN.
    pub fn new(base: Arc<dyn Provider>, roles: BTreeMap<String, String>, sts: StsClient) -> Self {
        Self::with_clock(base, roles, sts, OffsetDateTime::now_utc)
    }

    /// As [`Identities::new`] with an injectable clock (tests).
    pub fn with_clock(
        base: Arc<dyn Provider>,
        roles: BTreeMap<String, String>,
        sts: StsClient,
        clock: fn() -> OffsetDateTime,
    ) -> Self {
        Self {
            base,
            roles,
            sts,
            slots: Mutex::new(HashMap::new()),
            clock: Arc::new(clock),
        }
    }

    /// Where a command's credentials come from, for an operator (never a
    /// secret): the worker's own source, or the account's role assumed with it.
    pub fn source(&self, account: Option<&str>) -> String {
        match account.and_then(|a| self.roles.get(a)) {
            Some(role) => format!("role {role} assumed with {}", self.base.name()),
            None => self.base.name().to_owned(),
        }
    }

    /// The credentials for a command in `account` (`None`: the worker's own).
    /// Errors are credential-class: the command waits, it never fails.
    pub async fn resolve(&self, account: Option<&str>) -> Result<Credentials, ApiError> {
        let Some(account) = account else {
            return self.base.credentials().await;
        };
        let role = self
            .roles
            .get(account)
            .ok_or_else(|| ApiError::Credentials {
                message: format!("account {account} has no role mapping"),
                code: Some("NoRoleMapping".into()),
            })?;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let clock = Arc::clone(&self.clock);
            Arc::clone(
                slots
                    .entry(account.to_owned())
                    .or_insert_with(|| Arc::new(SessionCache::new(clock))),
            )
        };
        // One renewal at a time per account; others wait for it and reuse it.
        slot.get(|| async {
            let base = self.base.credentials().await?;
            self.sts
                .assume_role(&base, role)
                .await
                .map_err(|e| match e {
                    // Every STS failure is the operator's problem for this account.
                    ApiError::Api { code, message, .. } => ApiError::Credentials {
                        message: format!("AssumeRole {role}: {message}"),
                        code: Some(code),
                    },
                    ApiError::Credentials { .. } => e,
                    other => ApiError::Credentials {
                        message: format!("AssumeRole {role}: {other}"),
                        code: Some(other.code().to_owned()),
                    },
                })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unmapped_account_and_missing_base_are_credential_errors() {
        let sts = StsClient::new(
            reqwest::Client::new(),
            "http://127.0.0.1:9",
            crate::ecs::sign::SignatureVersion::Acs3HmacSha256,
        )
        .expect("sts");
        let ids = Identities::new(
            Arc::new(crate::credentials::provider::Static(None)),
            BTreeMap::new(),
            sts,
        );
        assert!(matches!(
            ids.resolve(None).await,
            Err(ApiError::Credentials { .. })
        ));
        assert!(matches!(
            ids.resolve(Some("123")).await,
            Err(ApiError::Credentials { .. })
        ));
    }
}
