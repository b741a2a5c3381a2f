//! Where the worker's own credentials come from.
//!
//! A [`Provider`] yields credentials on demand; temporary ones (ECS RAM role,
//! OIDC, a credentials URI) are refreshed by the provider itself, so callers
//! just ask before each command. The default chain (CONTRACT section 4) is a
//! list of providers tried in order.

use super::Credentials;
use crate::domain::error::ApiError;
use futures::future::BoxFuture;

/// A source of the worker's own credentials.
pub trait Provider: Send + Sync {
    /// Current credentials; an error is credential-class (commands wait).
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>>;
    /// A short name for logs and `/readyz` (never a secret).
    fn name(&self) -> &'static str;
}

/// Fixed credentials (explicit settings or `ALIBABA_CLOUD_ACCESS_KEY_*`), or none.
pub struct Static(pub Option<Credentials>);

impl Provider for Static {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        let result = self.0.clone().ok_or_else(|| ApiError::Credentials {
            message: "no Alibaba Cloud credentials are configured".into(),
            code: None,
        });
        Box::pin(async move { result })
    }

    fn name(&self) -> &'static str {
        "static"
    }
}

/// Fixed credentials found by a source of the default chain, under its name.
pub struct Fixed {
    /// The source's name (`environment`, ...).
    pub name: &'static str,
    /// The credentials.
    pub credentials: Credentials,
}

impl Provider for Fixed {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, ApiError>> {
        let result = Ok(self.credentials.clone());
        Box::pin(async move { result })
    }

    fn name(&self) -> &'static str {
        self.name
    }
}
