//! What can go wrong with one ECS call, and what that means (CONTRACT section 4).
//!
//! [`classify`] is the single place that turns an error into a class; everything
//! about retrying, parking and failing follows from the class, so the table in
//! the contract can be checked against one function and its test.

use std::time::Duration;

/// The ECS actions the worker uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiAction {
    /// Removes a managed instance.
    DeregisterManagedInstance,
    /// Shuts off an activation code.
    DisableActivation,
    /// Deletes an activation code (only possible if it never registered an instance).
    DeleteActivation,
    /// Lists managed instances with filters.
    DescribeManagedInstances,
    /// Lists activation codes (read-only; used by dry runs).
    DescribeActivations,
}

impl ApiAction {
    /// The API's own name, used on the wire, in events and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeregisterManagedInstance => "DeregisterManagedInstance",
            Self::DisableActivation => "DisableActivation",
            Self::DeleteActivation => "DeleteActivation",
            Self::DescribeManagedInstances => "DescribeManagedInstances",
            Self::DescribeActivations => "DescribeActivations",
        }
    }
}

/// How a transport failure happened; all kinds are transient, but operators
/// read them differently (a timeout may have reached the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Could not connect (DNS, refused, TLS).
    Connect,
    /// No answer in time.
    Timeout,
    /// The connection broke mid-request, or the body could not be read.
    Other,
}

/// One failed ECS call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The API answered with its error envelope.
    #[error("{code} (HTTP {http_status}): {message}")]
    Api {
        /// HTTP status of the answer.
        http_status: u16,
        /// The envelope's `Code`, e.g. `Throttling.User`.
        code: String,
        /// The envelope's `Message`.
        message: String,
        /// The envelope's `RequestId`, for support tickets.
        request_id: Option<String>,
        /// `x-acs-retry-after`, when the API asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The request never got an answer.
    #[error("transport error ({kind:?}): {message}")]
    Transport {
        /// What kind of failure.
        kind: TransportKind,
        /// Description without URL query (it could contain a signature).
        message: String,
    },
    /// A 2xx answer whose body was not what the API documents.
    #[error("unreadable answer (HTTP {http_status}): {message}")]
    Decode {
        /// HTTP status of the answer.
        http_status: u16,
        /// What could not be read.
        message: String,
        /// RequestId if the body had one.
        request_id: Option<String>,
    },
    /// No usable credentials (e.g. none configured, or an STS session could not be had).
    #[error("credentials unavailable: {message}")]
    Credentials {
        /// Why; never contains a secret.
        message: String,
        /// The provider's error code (e.g. STS `NoPermission`), if any.
        code: Option<String>,
    },
}

impl ApiError {
    /// The code events and metrics report: the API's code, or a stable
    /// synthetic one for failures that never reached the API.
    pub fn code(&self) -> &str {
        match self {
            Self::Api { code, .. } => code,
            Self::Transport {
                kind: TransportKind::Connect,
                ..
            } => "Transport.Connect",
            Self::Transport {
                kind: TransportKind::Timeout,
                ..
            } => "Transport.Timeout",
            Self::Transport { .. } => "Transport.Error",
            Self::Decode { .. } => "InvalidResponse",
            Self::Credentials { code, .. } => code.as_deref().unwrap_or("Credentials.Unavailable"),
        }
    }

    /// HTTP status when there was an answer.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Api { http_status, .. } | Self::Decode { http_status, .. } => Some(*http_status),
            _ => None,
        }
    }

    /// The RequestId when the API gave one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api { request_id, .. } | Self::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// A human message (the API's, or ours).
    pub fn message(&self) -> String {
        match self {
            Self::Api { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// What an error means for the command (CONTRACT section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again: immediately with backoff, then by delayed redelivery.
    Transient {
        /// True for throttling (the retry budget charges more for it).
        throttled: bool,
        /// The server's requested wait, if any.
        retry_after: Option<Duration>,
    },
    /// The goal state already holds (e.g. the instance is already gone): success.
    AlreadyDone,
    /// Retrying cannot help: the step fails for good.
    Permanent,
    /// The operator's problem (keys, permissions, clock): never fail the command;
    /// park it in delayed retry and report not ready.
    Credential,
}

/// Classifies one failed call of `action`. Ordered like the contract's table:
/// already-done first (a 404 is success for deletes), then credentials (never
/// retried fast, never failing a command), then transient, then permanent.
pub fn classify(action: ApiAction, error: &ApiError) -> ErrorClass {
    let (status, code, retry_after) = match error {
        ApiError::Transport { .. } | ApiError::Decode { .. } => {
            return ErrorClass::Transient {
                throttled: false,
                retry_after: None,
            };
        }
        ApiError::Credentials { .. } => return ErrorClass::Credential,
        ApiError::Api {
            http_status,
            code,
            retry_after,
            ..
        } => (*http_status, code.as_str(), *retry_after),
    };
    match (action, code) {
        (ApiAction::DeregisterManagedInstance, "InvalidInstance.NotFound")
        | (ApiAction::DeleteActivation, "ActivationId.NotFound") => {
            return ErrorClass::AlreadyDone;
        }
        _ => {}
    }
    if is_credential_code(code) {
        return ErrorClass::Credential;
    }
    if code == "Throttling" || code.starts_with("Throttling.") {
        return ErrorClass::Transient {
            throttled: true,
            retry_after,
        };
    }
    let transient_code = matches!(
        code,
        "InternalError.Dispatch"
            | "InternalError"
            | "UnknownError"
            | "ServiceUnavailable"
            // Our own nonces are fresh per attempt; a collision is worth one more try.
            | "SignatureNonceUsed"
    );
    if transient_code || (500..600).contains(&status) {
        return ErrorClass::Transient {
            throttled: false,
            retry_after,
        };
    }
    ErrorClass::Permanent
}

/// Keys, signatures, tokens, permissions, and the clock (a skewed clock makes
/// every signature stale: the operator must fix it, commands must not fail).
fn is_credential_code(code: &str) -> bool {
    code.starts_with("InvalidAccessKeyId")
        || code == "SignatureDoesNotMatch"
        || code == "IncompleteSignature"
        || code.starts_with("InvalidSecurityToken")
        || code == "MissingSecurityToken"
        || code.starts_with("Forbidden")
        || code == "NoPermission"
        || code == "EntityNotExist.Role"
        || code.starts_with("InvalidTimeStamp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApiAction::*;

    fn api(status: u16, code: &str) -> ApiError {
        ApiError::Api {
            http_status: status,
            code: code.to_owned(),
            message: "m".to_owned(),
            request_id: None,
            retry_after: None,
        }
    }

    const T: ErrorClass = ErrorClass::Transient {
        throttled: false,
        retry_after: None,
    };
    const THR: ErrorClass = ErrorClass::Transient {
        throttled: true,
        retry_after: None,
    };

    #[test]
    fn contract_table() {
        let cases: &[(ApiAction, u16, &str, ErrorClass)] = &[
            // Transient
            (DeregisterManagedInstance, 500, "InternalError.Dispatch", T),
            (DisableActivation, 500, "InternalError.Dispatch", T),
            (DeleteActivation, 500, "InternalError", T),
            (DescribeManagedInstances, 500, "UnknownError", T),
            (DisableActivation, 503, "ServiceUnavailable", T),
            (DisableActivation, 502, "BadGateway", T),
            (DisableActivation, 504, "SomethingNew", T),
            (DisableActivation, 400, "Throttling", THR),
            (DisableActivation, 400, "Throttling.User", THR),
            (DeregisterManagedInstance, 503, "Throttling.Api", THR),
            (DeregisterManagedInstance, 400, "SignatureNonceUsed", T),
            // Already done
            (
                DeregisterManagedInstance,
                404,
                "InvalidInstance.NotFound",
                ErrorClass::AlreadyDone,
            ),
            (
                DeleteActivation,
                404,
                "ActivationId.NotFound",
                ErrorClass::AlreadyDone,
            ),
            // Not-found on disable is a permanent failure: the alert named a code that does not exist.
            (
                DisableActivation,
                404,
                "ActivationId.NotFound",
                ErrorClass::Permanent,
            ),
            (
                DescribeManagedInstances,
                404,
                "InvalidInstance.NotFound",
                ErrorClass::Permanent,
            ),
            // Permanent
            (
                DisableActivation,
                400,
                "RegionId.ApiNotSupported",
                ErrorClass::Permanent,
            ),
            (
                DisableActivation,
                404,
                "InvalidRegionId.NotFound",
                ErrorClass::Permanent,
            ),
            (
                DeregisterManagedInstance,
                403,
                "Operation.Forbidden",
                ErrorClass::Permanent,
            ),
            (
                DeleteActivation,
                403,
                "ActivationId.InUse",
                ErrorClass::Permanent,
            ),
            (
                DeregisterManagedInstance,
                400,
                "IdempotentParameterMismatch",
                ErrorClass::Permanent,
            ),
            (
                DeregisterManagedInstance,
                400,
                "MissingParameter",
                ErrorClass::Permanent,
            ),
            // Credential / permission
            (
                DisableActivation,
                404,
                "InvalidAccessKeyId.NotFound",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "InvalidAccessKeyId.Inactive",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "SignatureDoesNotMatch",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "IncompleteSignature",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "InvalidSecurityToken.Expired",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "InvalidSecurityToken.Malformed",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "MissingSecurityToken",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                403,
                "Forbidden.RAM",
                ErrorClass::Credential,
            ),
            (DisableActivation, 403, "Forbidden", ErrorClass::Credential),
            (
                DisableActivation,
                403,
                "Forbidden.AccessKeyDisabled",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                403,
                "NoPermission",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                404,
                "EntityNotExist.Role",
                ErrorClass::Credential,
            ),
            (
                DisableActivation,
                400,
                "InvalidTimeStamp.Expired",
                ErrorClass::Credential,
            ),
        ];
        for (action, status, code, want) in cases {
            assert_eq!(
                classify(*action, &api(*status, code)),
                *want,
                "{action:?} {status} {code}"
            );
        }
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let e = ApiError::Api {
            http_status: 400,
            code: "Throttling.User".into(),
            message: String::new(),
            request_id: None,
            retry_after: Some(Duration::from_millis(1500)),
        };
        assert_eq!(
            classify(DisableActivation, &e),
            ErrorClass::Transient {
                throttled: true,
                retry_after: Some(Duration::from_millis(1500))
            }
        );
    }

    #[test]
    fn transport_and_decode_are_transient_credentials_unavailable_is_credential() {
        for kind in [
            TransportKind::Connect,
            TransportKind::Timeout,
            TransportKind::Other,
        ] {
            let e = ApiError::Transport {
                kind,
                message: "x".into(),
            };
            assert_eq!(classify(DeregisterManagedInstance, &e), T);
        }
        let e = ApiError::Decode {
            http_status: 200,
            message: "x".into(),
            request_id: None,
        };
        assert_eq!(classify(DescribeManagedInstances, &e), T);
        let e = ApiError::Credentials {
            message: "none".into(),
            code: None,
        };
        assert_eq!(classify(DisableActivation, &e), ErrorClass::Credential);
    }
}
