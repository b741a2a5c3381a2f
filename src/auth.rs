//! Signed commands (CONTRACT section 6).
//!
//! With `security.require_signed_commands`, a command must carry
//! `x-lifecycle-key-id` (a publisher key) and `x-lifecycle-signature`, the
//! lower-case hex HMAC-SHA256 of the exact body bytes under that key. Several
//! keys may be configured at once, so keys rotate without a gap. Comparison is
//! constant-time; failures name no key material.

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header naming the publisher key.
pub const KEY_ID_HEADER: &str = "x-lifecycle-key-id";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-lifecycle-signature";

/// Why a command is not authentic; the `as_str` codes are rejection reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key id or no signature header.
    #[error(
        "the command is not signed (x-lifecycle-key-id and x-lifecycle-signature are required)"
    )]
    Unsigned,
    /// The key id is not configured.
    #[error("the command names an unknown publisher key")]
    UnknownKey,
    /// The signature does not match the body.
    #[error("the command's signature does not match its body")]
    BadSignature,
}

impl AuthError {
    /// The rejection reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// Lower-case hex HMAC-SHA256 of `body` under `key` (what `send` attaches).
pub fn sign(key: &Secret, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a command's signature headers against the configured keys.
pub fn verify(
    keys: &[(String, Secret)],
    key_id: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), AuthError> {
    let (Some(key_id), Some(signature)) = (key_id, signature) else {
        return Err(AuthError::Unsigned);
    };
    let key = keys
        .iter()
        .find(|(id, _)| id == key_id)
        .map(|(_, k)| k)
        .ok_or(AuthError::UnknownKey)?;
    let expected = sign(key, body);
    let given = signature.trim().as_bytes();
    if expected.as_bytes().ct_eq(given).into() {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<(String, Secret)> {
        vec![
            ("old".into(), Secret::new("old-secret")),
            ("new".into(), Secret::new("new-secret")),
        ]
    }

    #[test]
    fn accepts_any_configured_key_and_rejects_the_rest() {
        let body = br#"{"command_id":"c1"}"#;
        for (id, key) in keys() {
            let sig = sign(&key, body);
            assert_eq!(sig.len(), 64);
            assert_eq!(verify(&keys(), Some(&id), Some(&sig), body), Ok(()));
        }
        let sig = sign(&Secret::new("new-secret"), body);
        assert_eq!(
            verify(&keys(), Some("old"), Some(&sig), body),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&keys(), Some("nope"), Some(&sig), body),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(
            verify(&keys(), None, Some(&sig), body),
            Err(AuthError::Unsigned)
        );
        assert_eq!(
            verify(&keys(), Some("new"), None, body),
            Err(AuthError::Unsigned)
        );
        let tampered = br#"{"command_id":"c2"}"#;
        assert_eq!(
            verify(&keys(), Some("new"), Some(&sig), tampered),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(&keys(), Some("new"), Some(&sig.to_uppercase()), body),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn known_vector() {
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac k
        assert_eq!(
            sign(&Secret::new("k"), br#"{"a":1}"#),
            "c3a92ff9e274cdcce27a58c15a78ec6dcbbdbd0038a87e7a11baef2028fd8bff"
        );
    }
}
