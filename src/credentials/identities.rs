//! Which credentials a command runs with.
//!
//! Without `account_id`: the worker's own credentials. With it: a session of
//! the RAM role mapped to that account (`accounts.roles`), obtained with STS
//! AssumeRole using the worker's own credentials, cached per account and
//! renewed ahead of expiry (when less than a quarter of its lifetime or 15
//! minutes is left, whichever is less), one renewal at a time per account so a
//! burst of commands does not become a burst of AssumeRole calls.

use super::Credentials;
use super::provider::Provider;
use super::sts::{Session, StsClient};
use crate::ecs::error::ApiError;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// Renew when less than this is left, or a quarter of the lifetime if smaller.
pub const RENEW_MARGIN: Duration = Duration::from_secs(15 * 60);

/// A cached session and when it was obtained (for the lifetime rule).
#[derive(Debug, Clone)]
struct Cached {
    session: Session,
    obtained_at: OffsetDateTime,
}

impl Cached {
    fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        let lifetime: time::Duration = self.session.expires_at - self.obtained_at;
        let cap = time::Duration::try_from(RENEW_MARGIN).unwrap_or(time::Duration::ZERO);
        let quarter: time::Duration = lifetime / 4_i32;
        let margin = quarter.min(cap);
        self.session.expires_at - now < margin
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Resolves a command's identity.
pub struct Identities {
    base: Arc<dyn Provider>,
    roles: BTreeMap<String, String>,
    sts: StsClient,
    slots: Mutex<HashMap<String, Slot>>,
    clock: fn() -> OffsetDateTime,
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
            clock,
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
            Arc::clone(slots.entry(account.to_owned()).or_default())
        };
        // One renewal at a time per account; others wait for it and reuse it.
        let mut cached = slot.lock().await;
        let now = (self.clock)();
        if let Some(c) = cached.as_ref().filter(|c| !c.needs_renewal(now)) {
            return Ok(c.session.credentials.clone());
        }
        let base = self.base.credentials().await?;
        let session = self
            .sts
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
            })?;
        let credentials = session.credentials.clone();
        *cached = Some(Cached {
            session,
            obtained_at: now,
        });
        Ok(credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(lifetime_min: i64, obtained: OffsetDateTime) -> Cached {
        Cached {
            session: Session {
                credentials: Credentials::static_key("STS.x", "s"),
                expires_at: obtained + time::Duration::minutes(lifetime_min),
            },
            obtained_at: obtained,
        }
    }

    #[test]
    fn renewal_margin_is_a_quarter_or_fifteen_minutes_whichever_is_less() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let min = time::Duration::minutes;
        // One hour: 15 min margin (a quarter is also 15).
        let c = cached(60, t0);
        assert!(!c.needs_renewal(t0 + min(44)));
        assert!(c.needs_renewal(t0 + min(46)));
        // Twelve hours: 15 min margin (a quarter would be 3 h).
        let c = cached(720, t0);
        assert!(!c.needs_renewal(t0 + min(700)));
        assert!(c.needs_renewal(t0 + min(706)));
        // Twenty minutes: a quarter (5 min) is less than 15.
        let c = cached(20, t0);
        assert!(!c.needs_renewal(t0 + min(14)));
        assert!(c.needs_renewal(t0 + min(16)));
    }

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
