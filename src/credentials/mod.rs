//! The identity the worker signs ECS requests with.
//!
//! Kept apart from the signer because where credentials come from (settings,
//! environment, STS sessions) changes independently of how requests are signed.
//! [`identities`] decides which credentials a command uses; [`sts`] obtains
//! role sessions.

pub mod cache;
pub mod chain;
pub mod identities;
pub mod metadata;
pub mod oidc;
pub mod profile;
pub mod provider;
pub mod sts;

use crate::secret::Secret;

/// An AccessKey pair, optionally with an STS security token (temporary credentials).
///
/// `Debug` shows the key id (it is not secret and helps operators) and redacts the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The AccessKey id; public, appears in every request.
    pub access_key_id: String,
    /// The AccessKey secret; signs requests, never leaves the process.
    pub access_key_secret: Secret,
    /// The STS token that accompanies temporary credentials.
    pub security_token: Option<Secret>,
}

impl Credentials {
    /// Long-lived AccessKey credentials without a security token.
    pub fn static_key(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            access_key_id: id.into(),
            access_key_secret: Secret::new(secret),
            security_token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret_and_token() {
        let mut c = Credentials::static_key("LTAIexample", "s3cr3t-value");
        c.security_token = Some(Secret::new("sts-token-value"));
        let shown = format!("{c:?}");
        assert!(shown.contains("LTAIexample"));
        assert!(!shown.contains("s3cr3t-value"));
        assert!(!shown.contains("sts-token-value"));
    }
}
