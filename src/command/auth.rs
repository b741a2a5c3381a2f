//! Signed commands (CONTRACT section 6): who may publish a command.
//!
//! With `security.require_signed_commands`, a command must carry
//! `x-lifecycle-key-id` naming a publisher key and `x-lifecycle-signature`,
//! the lower-case hex HMAC-SHA256 of the exact body bytes under that key.
//! The check is pure so it can be tested without a broker; the worker runs it
//! before [`super::parse`] and publishes the [`Rejection`] it returns.

use super::quote::quote;
use super::rejection::{FieldError, RejectReason, Rejection};
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

/// The header naming the publisher key.
pub const KEY_ID_HEADER: &str = "x-lifecycle-key-id";
/// The header carrying the body's HMAC-SHA256 in lower-case hex.
pub const SIGNATURE_HEADER: &str = "x-lifecycle-signature";

/// The publisher keys commands may be signed with, by key id. The secrets
/// stay wrapped in [`Secret`], so a `Debug` print of the set shows none.
#[derive(Debug, Clone, Default)]
pub struct CommandKeys {
    keys: BTreeMap<String, Secret>,
}

impl CommandKeys {
    /// Builds the set; a later pair with the same key id replaces an earlier one.
    pub fn new(pairs: impl IntoIterator<Item = (String, Secret)>) -> Self {
        Self {
            keys: pairs.into_iter().collect(),
        }
    }

    /// True when no key is configured: signed commands cannot then be
    /// accepted at all, which start-up should refuse.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a command's signature headers against the exact body bytes.
    /// Returns the verified key id, or the `unauthenticated` rejection. The
    /// comparison is constant-time (HMAC `verify_slice`), and nothing from the
    /// body is echoed: an unauthenticated sender must not be able to put
    /// events under another command's id.
    #[allow(
        clippy::result_large_err,
        reason = "returns the same Rejection the worker publishes; built once per message"
    )]
    pub fn verify<'a>(
        &self,
        body: &[u8],
        key_id: Option<&'a str>,
        signature: Option<&str>,
    ) -> Result<&'a str, Rejection> {
        let reject = |field: &str, problem: String| {
            Rejection::new(
                RejectReason::Unauthenticated,
                FieldError::new(field, problem),
            )
        };
        let Some(key_id) = key_id else {
            return Err(reject(KEY_ID_HEADER, "is required".to_owned()));
        };
        let Some(secret) = self.keys.get(key_id) else {
            return Err(reject(
                KEY_ID_HEADER,
                format!("{} names no configured key", quote(key_id)),
            ));
        };
        let Some(signature) = signature else {
            return Err(reject(SIGNATURE_HEADER, "is required".to_owned()));
        };
        let well_formed = signature.len() == 64
            && signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let Some(expected) = well_formed.then(|| hex::decode(signature).ok()).flatten() else {
            return Err(reject(
                SIGNATURE_HEADER,
                "must be 64 lower-case hex digits (HMAC-SHA256 of the body)".to_owned(),
            ));
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
            .map_err(|_| reject(KEY_ID_HEADER, "names an unusable key".to_owned()))?;
        mac.update(body);
        mac.verify_slice(&expected).map_err(|_| {
            reject(
                SIGNATURE_HEADER,
                "does not match the body under the named key".to_owned(),
            )
        })?;
        Ok(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> CommandKeys {
        CommandKeys::new([("pub-1".to_string(), Secret::new("s3cret"))])
    }

    fn sign(key: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn accepts_a_correct_signature() {
        let body = br#"{"command_id":"c"}"#;
        let sig = sign("s3cret", body);
        assert_eq!(keys().verify(body, Some("pub-1"), Some(&sig)), Ok("pub-1"));
    }

    #[test]
    fn rejects_everything_else() {
        let body = br#"{"command_id":"c"}"#;
        let sig = sign("s3cret", body);
        let other = sign("other", body);
        let tampered = sign("s3cret", br#"{"command_id":"d"}"#);
        let cases = [
            (None, Some(sig.as_str())),
            (Some("pub-2"), Some(sig.as_str())),
            (Some("pub-1"), None),
            (Some("pub-1"), Some(other.as_str())),
            (Some("pub-1"), Some(tampered.as_str())),
            (Some("pub-1"), Some(&sig[..63])),
            (Some("pub-1"), Some("zz")),
        ];
        for (key_id, signature) in cases {
            let r = keys().verify(body, key_id, signature).unwrap_err();
            assert_eq!(r.reason, RejectReason::Unauthenticated);
            assert!(r.command_id.is_none());
        }
        let upper = sig.to_uppercase();
        assert!(keys().verify(body, Some("pub-1"), Some(&upper)).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        assert!(!format!("{:?}", keys()).contains("s3cret"));
    }

    #[test]
    fn unknown_key_id_is_quoted_safely() {
        let r = keys()
            .verify(b"{}", Some("evil\n\u{202e}"), Some("00"))
            .unwrap_err();
        assert!(r.errors[0].problem.is_ascii());
        assert!(!r.errors[0].problem.contains('\n'));
    }
}
