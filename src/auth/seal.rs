//! How the worker recognises its own retry copies, and vouches for its dead
//! letters (issue 19; the argument is in the README's Security section).
//!
//! A signed command is fresh for `security.max_command_age_s` after it was
//! signed, but the worker may hold it far longer: in a retry stage, or parked
//! until credentials work again. Copying the worker's bookkeeping headers
//! onto a captured command must not make it look held, so each retry copy
//! carries `x-lifecycle-seal: v1:<deadline>:<mac>`, an HMAC-SHA256 over the
//! publisher's key id and timestamp, the retry counters, the attempts header,
//! the deadline and the body. The deadline is the copy's stage delay plus
//! `max_command_age_s` from when it was made: once its stage lets it go, a
//! held copy has the same window a new command has. A copy that comes back
//! in time is not judged by its age, however many times it went round; every
//! pass seals it afresh.
//!
//! The key is derived from the publisher key that signed the command
//! (`HMAC(secret, "lifecycle-worker seal key, v1")`), so every replica has it
//! after any restart, nothing new is distributed, and it rotates with the
//! command key. A holder of that publisher key can derive it too, and so
//! could mint seals for commands signed with *that* key, which it can sign
//! afresh anyway; scopes are judged on every delivery, held or not. The
//! derivation label starts with a letter, the contract's MAC input with a
//! digit, so the derived key is never a signature the worker accepts.
//!
//! Dead letters of commands that were authentic and in time carry
//! `x-lifecycle-dead-letter-seal: v1:<mac>` (key id, timestamp, body, another
//! purpose): `dead-letters replay --re-sign-within` signs only those again.
//! A worker never takes a dead-letter seal for a retry seal.

use crate::decision::Counters;
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Header of a retry copy: `v1:<deadline, Unix seconds>:<hex mac>`.
pub const SEAL_HEADER: &str = "x-lifecycle-seal";
/// Header of a dead letter the worker vouches for: `v1:<hex mac>`.
pub const DEAD_LETTER_SEAL_HEADER: &str = "x-lifecycle-dead-letter-seal";

const DERIVATION: &[u8] = b"lifecycle-worker seal key, v1";
const VERSION: &str = "v1";
const RETRY: &[u8] = b"retry";
const DEAD_LETTER: &[u8] = b"dead-letter";

/// Seals the copies of one authentic command (made by `auth::verify`).
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
    key_id: String,
    timestamp: String,
    grace_s: u64,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("timestamp", &self.timestamp)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// What a retry seal says about a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// No seal: a command as a publisher sent it.
    Absent,
    /// The worker's own copy, back in time: not judged by its age.
    Held,
    /// The worker's own copy, back after its deadline.
    Expired,
    /// A seal that is not the worker's for this copy (forged, moved or altered).
    Invalid,
}

impl Sealer {
    /// The sealer for a command signed with `secret` under `key_id` at
    /// `timestamp` (the header's text); copies are held for their stage's
    /// delay plus `grace_s`.
    pub(crate) fn new(secret: &Secret, key_id: &str, timestamp: &str, grace_s: u64) -> Self {
        let mut derive = hmac(secret.expose().as_bytes());
        derive.update(DERIVATION);
        Self {
            key: derive.finalize().into_bytes().into(),
            key_id: key_id.to_owned(),
            timestamp: timestamp.to_owned(),
            grace_s,
        }
    }

    /// The seal of a retry copy that waits `delay` in its stage, made now.
    pub fn retry(
        &self,
        body: &[u8],
        counters: Counters,
        attempts: &str,
        delay: Duration,
    ) -> String {
        self.retry_at(body, counters, attempts, delay, super::unix_now())
    }

    /// [`Sealer::retry`] at a given time (Unix seconds).
    pub fn retry_at(
        &self,
        body: &[u8],
        counters: Counters,
        attempts: &str,
        delay: Duration,
        now: i64,
    ) -> String {
        let delay = i64::try_from(delay.as_millis().div_ceil(1000)).unwrap_or(i64::MAX);
        let grace = i64::try_from(self.grace_s).unwrap_or(i64::MAX);
        let deadline = now.saturating_add(delay).saturating_add(grace);
        let mac = self.retry_mac(deadline, body, counters, attempts);
        format!("{VERSION}:{deadline}:{}", hex::encode(mac))
    }

    /// Judges a delivery's retry seal (`header`) against its body and
    /// bookkeeping headers at `now`.
    pub fn hold(
        &self,
        header: Option<&str>,
        body: &[u8],
        counters: Counters,
        attempts: &str,
        now: i64,
    ) -> Hold {
        let Some(header) = header else {
            return Hold::Absent;
        };
        let mut parts = header.split(':');
        let (Some(VERSION), Some(deadline), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Hold::Invalid;
        };
        let Ok(deadline) = deadline.parse::<i64>() else {
            return Hold::Invalid;
        };
        let expected = self.retry_mac(deadline, body, counters, attempts);
        if !same(&expected, mac) {
            Hold::Invalid
        } else if now > deadline {
            Hold::Expired
        } else {
            Hold::Held
        }
    }

    /// The seal of a dead letter of this (authentic, in time) command.
    pub fn dead_letter(&self, body: &[u8]) -> String {
        let mac = self.mac(DEAD_LETTER, &[body]);
        format!("{VERSION}:{}", hex::encode(mac))
    }

    /// Whether `header` is the worker's dead-letter seal for `body`.
    pub fn vouches_for_dead_letter(&self, header: Option<&str>, body: &[u8]) -> bool {
        header
            .and_then(|h| h.strip_prefix("v1:"))
            .is_some_and(|mac| same(&self.mac(DEAD_LETTER, &[body]), mac))
    }

    fn retry_mac(
        &self,
        deadline: i64,
        body: &[u8],
        counters: Counters,
        attempts: &str,
    ) -> [u8; 32] {
        self.mac(
            RETRY,
            &[
                deadline.to_string().as_bytes(),
                counters.redeliveries.to_string().as_bytes(),
                counters.parks.to_string().as_bytes(),
                attempts.as_bytes(),
                body,
            ],
        )
    }

    /// HMAC over the purpose, key id, timestamp and `fields`, each preceded
    /// by its length, so no two field lists share an input.
    fn mac(&self, purpose: &[u8], fields: &[&[u8]]) -> [u8; 32] {
        let mut mac = hmac(&self.key);
        let fixed: [&[u8]; 3] = [purpose, self.key_id.as_bytes(), self.timestamp.as_bytes()];
        for field in fixed.iter().chain(fields) {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        mac.finalize().into_bytes().into()
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Constant-time: `given` is the lower-case hex of `expected`.
fn same(expected: &[u8; 32], given: &str) -> bool {
    hex::encode(expected)
        .as_bytes()
        .ct_eq(given.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(secret: &str, key_id: &str, ts: &str) -> Sealer {
        Sealer::new(&Secret::new(secret), key_id, ts, 300)
    }

    const C: Counters = Counters {
        redeliveries: 1,
        parks: 2,
    };
    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_copy_is_held_until_its_deadline_and_no_longer() {
        let s = sealer("k", "k1", "1700000000");
        let seal = s.retry_at(b"body", C, "{}", Duration::from_secs(30), NOW);
        assert_eq!(seal, format!("v1:{}:{}", NOW + 330, &seal[14..]));
        assert_eq!(seal.len(), 3 + 10 + 1 + 64);
        let hold = |now| s.hold(Some(&seal), b"body", C, "{}", now);
        assert_eq!(hold(NOW), Hold::Held);
        assert_eq!(
            hold(NOW + 330),
            Hold::Held,
            "the deadline itself is in time"
        );
        assert_eq!(hold(NOW + 331), Hold::Expired);
        // A part of a second of delay counts as a whole one.
        let short = s.retry_at(b"body", C, "{}", Duration::from_millis(1500), NOW);
        assert!(short.starts_with(&format!("v1:{}:", NOW + 302)), "{short}");
    }

    #[test]
    fn anything_changed_is_not_the_workers_copy() {
        let s = sealer("k", "k1", "1700000000");
        let seal = s.retry_at(b"body", C, "{\"a\":1}", Duration::from_secs(30), NOW);
        let ok = |h: &str, body: &[u8], c: Counters, a: &str| s.hold(Some(h), body, c, a, NOW);
        assert_eq!(ok(&seal, b"body", C, "{\"a\":1}"), Hold::Held);
        assert_eq!(ok(&seal, b"bodY", C, "{\"a\":1}"), Hold::Invalid, "body");
        let more = Counters { parks: 3, ..C };
        assert_eq!(
            ok(&seal, b"body", more, "{\"a\":1}"),
            Hold::Invalid,
            "counters"
        );
        assert_eq!(
            ok(&seal, b"body", C, "{\"a\":2}"),
            Hold::Invalid,
            "attempts"
        );
        let later = seal.replacen(&(NOW + 330).to_string(), &(NOW + 99_999).to_string(), 1);
        assert_eq!(
            ok(&later, b"body", C, "{\"a\":1}"),
            Hold::Invalid,
            "deadline"
        );
        assert_eq!(
            ok(&seal.to_uppercase(), b"body", C, "{\"a\":1}"),
            Hold::Invalid
        );
        for junk in ["", "v1", "v1::", "v2:1:00", &format!("{seal}:x"), "v1:-:ab"] {
            assert_eq!(ok(junk, b"body", C, "{\"a\":1}"), Hold::Invalid, "{junk:?}");
        }
        assert_eq!(s.hold(None, b"body", C, "{}", NOW), Hold::Absent);
        // Another signing time, key id or key: not this command's seal.
        for other in [
            sealer("k", "k1", "1700000001"),
            sealer("k", "k2", "1700000000"),
            sealer("k2", "k1", "1700000000"),
        ] {
            assert_eq!(
                other.hold(Some(&seal), b"body", C, "{\"a\":1}", NOW),
                Hold::Invalid
            );
        }
    }

    #[test]
    fn dead_letter_seals_are_not_retry_seals() {
        let s = sealer("k", "k1", "1700000000");
        let dl = s.dead_letter(b"body");
        assert!(s.vouches_for_dead_letter(Some(&dl), b"body"));
        assert!(!s.vouches_for_dead_letter(Some(&dl), b"other"));
        assert!(!s.vouches_for_dead_letter(None, b"body"));
        assert!(!sealer("k", "k1", "1").vouches_for_dead_letter(Some(&dl), b"body"));
        let mac = dl.trim_start_matches("v1:");
        let as_retry = format!("v1:{}:{mac}", NOW + 10);
        assert_eq!(
            s.hold(Some(&as_retry), b"body", C, "{}", NOW),
            Hold::Invalid
        );
        let retry = s.retry_at(b"body", C, "{}", Duration::from_secs(1), NOW);
        let mac = retry.rsplit(':').next().unwrap_or_default();
        assert!(!s.vouches_for_dead_letter(Some(&format!("v1:{mac}")), b"body"));
    }

    #[test]
    fn the_key_never_shows() {
        let s = sealer("the-command-secret", "k1", "1");
        let text = format!("{s:?}");
        assert!(text.contains("k1") && text.contains("[redacted]"), "{text}");
        assert!(!text.contains("the-command-secret"));
        assert!(!text.contains(&hex::encode(s.key)));
    }
}
