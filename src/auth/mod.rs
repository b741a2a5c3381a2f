//! Signed commands (CONTRACT section 6).
//!
//! With `security.require_signed_commands`, a command carries
//! `x-lifecycle-key-id` (a publisher key), `x-lifecycle-timestamp` (decimal
//! Unix seconds, [`timestamp`]) and `x-lifecycle-signature`, the lower-case
//! hex HMAC-SHA256 under that key of `<timestamp>.<body>`. The time is inside
//! the MAC so that a captured command stops being worth anything once it is
//! more than `security.max_command_age_s` away from the worker's clock
//! (either way); the body alone would stay valid forever, and a
//! `decommission` by hostname replayed a month later would deregister
//! whichever host has that name then.
//!
//! The checks, in order (the first failure is the answer, and none of them
//! names key material): key id and signature present, the key known, the
//! timestamp present and well-formed, the MAC (constant-time), then the age:
//! a retry copy the worker sealed itself ([`seal`]) is not judged by its
//! age, anything else is. What a key may ask for is [`scopes`], judged by the
//! worker once the body is read. Several keys may be configured at once, so
//! keys rotate without a gap.

pub mod replay;
pub mod scopes;
pub mod seal;
pub mod timestamp;

use crate::command::RejectReason;
use crate::secret::Secret;
use crate::settings::SecuritySettings;
use crate::settlement::messages::{self, ATTEMPTS};
use hmac::{Hmac, Mac};
use lapin::BasicProperties;
use seal::{Hold, Sealer};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;
pub use timestamp::{Timestamp, TimestampError};

/// Header naming the publisher key.
pub const KEY_ID_HEADER: &str = "x-lifecycle-key-id";
/// Header carrying the signing time.
pub const TIMESTAMP_HEADER: &str = "x-lifecycle-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-lifecycle-signature";

/// Why a command is not accepted as signed; [`AuthError::reason`] is the
/// rejection reason, [`AuthError::as_str`] a finer code for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No key id or no signature header.
    #[error(
        "the command is not signed (x-lifecycle-key-id, x-lifecycle-timestamp and x-lifecycle-signature are required)"
    )]
    Unsigned,
    /// The key id is not configured.
    #[error("the command names an unknown publisher key")]
    UnknownKey,
    /// No timestamp header (e.g. a publisher of the body-only scheme).
    #[error("the command has no x-lifecycle-timestamp; the signature covers <timestamp>.<body>")]
    MissingTimestamp,
    /// A timestamp header that is not decimal Unix seconds.
    #[error("x-lifecycle-timestamp {0}")]
    BadTimestamp(TimestampError),
    /// The signature does not match the timestamp and body.
    #[error("the command's signature does not match <timestamp>.<body>")]
    BadSignature,
    /// Authentic, but signed too long ago or too far ahead.
    #[error("{0}")]
    Expired(Skew),
}

impl AuthError {
    /// A short code naming the failure.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::UnknownKey => "unknown_key",
            Self::MissingTimestamp => "missing_timestamp",
            Self::BadTimestamp(_) => "bad_timestamp",
            Self::BadSignature => "bad_signature",
            Self::Expired(_) => "signature_expired",
        }
    }

    /// The rejection reason: `signature_expired` or `unauthenticated`.
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::Expired(_) => RejectReason::SignatureExpired,
            _ => RejectReason::Unauthenticated,
        }
    }

    /// The rejection's field: `timestamp` for time problems, else `signature`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::MissingTimestamp | Self::BadTimestamp(_) | Self::Expired(_) => "timestamp",
            _ => "signature",
        }
    }
}

/// How far an authentic command's timestamp is from the worker's clock, so a
/// publisher with a drifting clock can tell (no key material in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// Timestamp minus the worker's clock, seconds: negative is in the past.
    pub offset: i64,
    /// `security.max_command_age_s`.
    pub max_age_s: u64,
    /// What its retry seal said, when it had one.
    pub seal: Hold,
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (how_far, side) = if self.offset < 0 {
            (self.offset.unsigned_abs(), "behind")
        } else {
            (self.offset.unsigned_abs(), "ahead of")
        };
        write!(
            f,
            "x-lifecycle-timestamp is {how_far} s {side} the worker's clock (offset {:+} s; at most {} s either way is accepted)",
            self.offset, self.max_age_s
        )?;
        match self.seal {
            Hold::Expired => f.write_str("; the worker's hold on this retry copy has ended"),
            Hold::Invalid => f.write_str("; its x-lifecycle-seal is not the worker's"),
            Hold::Absent | Hold::Held => Ok(()),
        }
    }
}

/// An authentic command, in time.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The publisher key that signed it.
    pub key_id: String,
    /// Seals its retry copies and dead letters.
    pub sealer: Sealer,
    /// It is the worker's own retry copy, back in time: its bookkeeping
    /// headers (retry counters, attempts) are the worker's.
    pub held: bool,
}

/// What authentication found, for the rest of the processing.
#[derive(Debug, Clone)]
pub enum Verified {
    /// Signatures are not required: nothing was checked, and the worker's
    /// bookkeeping headers are taken as they come.
    Unchecked,
    /// Authentic and in time.
    Signed(Signed),
    /// Refused: nothing to seal, no header to believe.
    Refused,
}

impl Verified {
    /// The sealer for retry copies and dead letters, for a signed command.
    pub fn sealer(&self) -> Option<&Sealer> {
        match self {
            Self::Signed(s) => Some(&s.sealer),
            Self::Unchecked | Self::Refused => None,
        }
    }

    /// The publisher key, for a signed command.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Self::Signed(s) => Some(&s.key_id),
            Self::Unchecked | Self::Refused => None,
        }
    }

    /// Whether the retry counters and attempts headers may be believed:
    /// without signatures as before; with them, only on the worker's own
    /// sealed copies (anyone may write those headers on a command).
    pub fn trusts_bookkeeping(&self) -> bool {
        match self {
            Self::Unchecked => true,
            Self::Signed(s) => s.held,
            Self::Refused => false,
        }
    }
}

/// The current time in Unix seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Authenticates a delivery as `security` says (nothing to check when
/// signatures are not required).
pub fn authenticate(
    security: &SecuritySettings,
    props: &BasicProperties,
    body: &[u8],
) -> Result<Verified, AuthError> {
    if !security.require_signed_commands {
        return Ok(Verified::Unchecked);
    }
    let keys = &security.command_keys.0;
    verify(keys, props, body, security.max_command_age_s, unix_now()).map(Verified::Signed)
}

/// The bytes the signature covers: `<timestamp>.<body>`.
pub fn mac_input(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(timestamp.len() + 1 + body.len());
    input.extend_from_slice(timestamp.as_bytes());
    input.push(b'.');
    input.extend_from_slice(body);
    input
}

/// Lower-case hex HMAC-SHA256 of `<timestamp>.<body>` under `key` (what
/// `send` attaches).
pub fn sign(key: &Secret, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(&mac_input(timestamp, body));
    hex::encode(mac.finalize().into_bytes())
}

/// The key of `key_id` among `keys`.
pub fn key<'a>(keys: &'a [(String, Secret)], key_id: &str) -> Option<&'a Secret> {
    keys.iter().find(|(id, _)| id == key_id).map(|(_, k)| k)
}

/// Checks a delivery's signature headers against `keys` at `now` (Unix
/// seconds), accepting timestamps at most `max_age_s` away unless the
/// delivery is the worker's own sealed retry copy.
pub fn verify(
    keys: &[(String, Secret)],
    props: &BasicProperties,
    body: &[u8],
    max_age_s: u64,
    now: i64,
) -> Result<Signed, AuthError> {
    let (signed, timestamp) = authentic(keys, props, body, max_age_s)?;
    let hold = signed.sealer.hold(
        messages::header_str(props, seal::SEAL_HEADER),
        body,
        messages::counters(props),
        messages::header_str(props, ATTEMPTS).unwrap_or_default(),
        now,
    );
    if hold == Hold::Held {
        return Ok(Signed {
            held: true,
            ..signed
        });
    }
    let offset = timestamp.offset_from(now);
    if offset.unsigned_abs() > max_age_s {
        return Err(AuthError::Expired(Skew {
            offset,
            max_age_s,
            seal: hold,
        }));
    }
    Ok(signed)
}

/// Every check but the age: whether the delivery was signed with a
/// configured key, whenever that was.
pub fn authentic(
    keys: &[(String, Secret)],
    props: &BasicProperties,
    body: &[u8],
    grace_s: u64,
) -> Result<(Signed, Timestamp), AuthError> {
    let (Some(key_id), Some(signature)) = (
        messages::header_str(props, KEY_ID_HEADER),
        messages::header_str(props, SIGNATURE_HEADER),
    ) else {
        return Err(AuthError::Unsigned);
    };
    let key = key(keys, key_id).ok_or(AuthError::UnknownKey)?;
    let raw = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(TIMESTAMP_HEADER))
        .ok_or(AuthError::MissingTimestamp)?;
    let timestamp = Timestamp::from_header(raw).map_err(AuthError::BadTimestamp)?;
    let expected = sign(key, &timestamp.text, body);
    if !bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes())) {
        return Err(AuthError::BadSignature);
    }
    let signed = Signed {
        key_id: key_id.to_owned(),
        sealer: Sealer::new(key, key_id, &timestamp.text, grace_s),
        held: false,
    };
    Ok((signed, timestamp))
}

#[cfg(test)]
mod tests;
