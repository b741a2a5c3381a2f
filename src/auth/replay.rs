//! What `dead-letters replay` does with the dead letter of a signed command.
//!
//! A dead letter keeps the command's signature headers, and an operator may
//! replay it hours after it was signed, once its cause is fixed. As it is, it
//! would only be rejected again (`signature_expired`), and the dead-letter
//! queue is exactly where a captured command can be picked up, so replay
//! never freshens anything on its own: a stale signed dead letter stays in
//! the queue, with why, unless the operator says how old a command they are
//! willing to send again (`--re-sign-within 6h`). Then it is signed again
//! now, under its own key (so its scopes still apply), and only if a worker
//! sealed it as authentic and in time when it arrived ([`super::seal`]):
//! never a command the worker refused as unauthenticated, expired or out of
//! scope, nor anything else someone put in the queue.

use super::seal::DEAD_LETTER_SEAL_HEADER;
use super::{TIMESTAMP_HEADER, Timestamp};
use crate::secret::Secret;
use crate::settlement::messages::header_str;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, LongString};
use std::time::Duration;

/// How replay treats dead letters of signed commands.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// `security.command_keys`.
    pub keys: &'a [(String, Secret)],
    /// `security.max_command_age_s`.
    pub max_age_s: u64,
    /// `--re-sign-within`: how old a stale command may be to be signed again.
    pub re_sign_within: Option<Duration>,
}

/// The verdict on one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Send it back as it is: not signed, or still in time.
    AsIs,
    /// Send it back signed again at `timestamp`.
    ReSigned {
        /// The new `x-lifecycle-timestamp`.
        timestamp: String,
        /// The new `x-lifecycle-signature`.
        signature: String,
    },
    /// Leave it in the dead-letter queue; why, for the operator.
    Left(String),
}

impl Replay {
    /// The properties to replay with (`props`: the dead letter's, bookkeeping stripped).
    pub fn properties(&self, props: BasicProperties) -> BasicProperties {
        let Replay::ReSigned {
            timestamp,
            signature,
        } = self
        else {
            return props;
        };
        let mut headers = props.headers().clone().unwrap_or_default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        headers.insert(TIMESTAMP_HEADER.into(), text(timestamp));
        headers.insert(super::SIGNATURE_HEADER.into(), text(signature));
        props.with_headers(headers)
    }
}

/// Judges a dead letter (`props` as it lies in the queue) at `now`.
pub fn judge(policy: &Policy<'_>, props: &BasicProperties, body: &[u8], now: i64) -> Replay {
    let timestamp = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(TIMESTAMP_HEADER))
        .and_then(|v| Timestamp::from_header(v).ok());
    let Some(timestamp) = timestamp else {
        // Never signed under the current scheme: the worker judges it as before.
        return Replay::AsIs;
    };
    let age = timestamp.offset_from(now).unsigned_abs();
    if age <= policy.max_age_s {
        return Replay::AsIs;
    }
    let Some(within) = policy.re_sign_within else {
        return Replay::Left(format!(
            "signed {age} s ago, more than security.max_command_age_s ({} s): the worker would reject it as signature_expired; replay with --re-sign-within to sign it again now",
            policy.max_age_s
        ));
    };
    if u128::from(age) > within.as_millis() / 1000 {
        return Replay::Left(format!(
            "signed {age} s ago, longer ago than --re-sign-within"
        ));
    }
    let (signed, _) = match super::authentic(policy.keys, props, body, 0) {
        Ok(s) => s,
        Err(e) => {
            return Replay::Left(format!(
                "not signed again: {e} ({}) with this tool's security.command_keys",
                e.as_str()
            ));
        }
    };
    if !signed
        .sealer
        .vouches_for_dead_letter(header_str(props, DEAD_LETTER_SEAL_HEADER), body)
    {
        return Replay::Left(
            "not signed again: no worker vouched for it as authentic and in time when it arrived (refused as unauthenticated, expired or out of scope, or not dead-lettered by a worker); send it anew if it is wanted".into(),
        );
    }
    let key = super::key(policy.keys, &signed.key_id)
        .cloned()
        .unwrap_or_default();
    let timestamp = now.max(0).to_string();
    let signature = super::sign(&key, &timestamp, body);
    Replay::ReSigned {
        timestamp,
        signature,
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
