//! Why a command was refused, in the shape `command.rejected` publishes.
//!
//! A rejection is the terminal answer for a command that must never reach the
//! API (CONTRACT sections 3 and 5). It names one short machine-readable
//! reason and every field-level problem, plus what could be read safely from
//! the command (only values that passed their own rule), so the publisher can
//! correlate and fix it without the worker echoing hostile input.

use super::ids::{AccountId, CommandId, RegionId};
use super::model::Audit;
use serde::{Serialize, Serializer};
use std::fmt;

/// The one reason a command was rejected, as a short `snake_case` code.
///
/// When several apply, the first in this order wins (the order the checks
/// run, each needing the previous to pass): `unauthenticated`,
/// `signature_expired`, `publisher_not_allowed`, `body_too_large`, `invalid_content_type`, `invalid_utf8`, `invalid_json`,
/// `too_deep`, `duplicate_key`, `not_an_object`, `missing_command_id`,
/// `invalid_fields`, `key_scope_denied`, `region_not_allowed`,
/// `unknown_account`, `target_not_allowed`. `missing_command_id`,
/// `invalid_fields`, `region_not_allowed` and `unknown_account` are found
/// together and every problem is listed in
/// [`Rejection::errors`]; the code names the most basic one: without an id
/// nothing can be correlated, a malformed command is the publisher's bug,
/// and policy refusals (region, account) only mean something for an
/// otherwise well-formed command. A key's scopes are judged before the
/// policy refusals, so a key learns nothing about regions or accounts it may
/// not ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The command's signature is missing, names an unknown key, has no or a
    /// malformed timestamp, or does not verify (CONTRACT section 6); used by
    /// the worker, not by `parse`.
    Unauthenticated,
    /// Authentic, but its timestamp is more than `security.max_command_age_s`
    /// from the worker's clock, either way (and it is not a copy the worker
    /// holds); used by the worker.
    SignatureExpired,
    /// The key's `security.key_scopes` do not cover the command's kind,
    /// region and account; used by the worker.
    KeyScopeDenied,
    /// The body is larger than `Policy::max_body_bytes` (64 KiB).
    BodyTooLarge,
    /// The AMQP `content-type` is set and is not `application/json`.
    InvalidContentType,
    /// The body is not UTF-8.
    InvalidUtf8,
    /// The body is not one JSON document (including a leading byte order mark).
    InvalidJson,
    /// Arrays and objects nested deeper than the parser's bound.
    TooDeep,
    /// An object has the same key twice, at any depth.
    DuplicateKey,
    /// The JSON document is not an object.
    NotAnObject,
    /// Neither `command_id` in the body nor a usable AMQP `message_id`.
    MissingCommandId,
    /// Wrong types, missing required fields or values out of their rules.
    InvalidFields,
    /// `region_id` is well-formed but not in the allow-list.
    RegionNotAllowed,
    /// `account_id` is well-formed but has no role mapped.
    UnknownAccount,
    /// The AMQP `user_id` is not in `security.allowed_publishers`; used by the worker.
    PublisherNotAllowed,
    /// The named instance or activation code matches none of the allowed
    /// patterns (`security.allowed_instance_ids` / `allowed_activation_ids`);
    /// used by the worker.
    TargetNotAllowed,
}

impl RejectReason {
    /// The code as it appears in events, dead-letter headers and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unauthenticated => "unauthenticated",
            RejectReason::SignatureExpired => "signature_expired",
            RejectReason::KeyScopeDenied => "key_scope_denied",
            RejectReason::BodyTooLarge => "body_too_large",
            RejectReason::InvalidContentType => "invalid_content_type",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::TooDeep => "too_deep",
            RejectReason::DuplicateKey => "duplicate_key",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingCommandId => "missing_command_id",
            RejectReason::InvalidFields => "invalid_fields",
            RejectReason::RegionNotAllowed => "region_not_allowed",
            RejectReason::UnknownAccount => "unknown_account",
            RejectReason::PublisherNotAllowed => "publisher_not_allowed",
            RejectReason::TargetNotAllowed => "target_not_allowed",
        }
    }

    /// Every reason, for metrics that pre-register their label values.
    pub const ALL: [RejectReason; 16] = [
        RejectReason::Unauthenticated,
        RejectReason::SignatureExpired,
        RejectReason::KeyScopeDenied,
        RejectReason::BodyTooLarge,
        RejectReason::InvalidContentType,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::TooDeep,
        RejectReason::DuplicateKey,
        RejectReason::NotAnObject,
        RejectReason::MissingCommandId,
        RejectReason::InvalidFields,
        RejectReason::RegionNotAllowed,
        RejectReason::UnknownAccount,
        RejectReason::PublisherNotAllowed,
        RejectReason::TargetNotAllowed,
    ];

    /// The reasons the worker decides after (or instead of) `parse`.
    pub const WORKER: [RejectReason; 5] = [
        RejectReason::Unauthenticated,
        RejectReason::SignatureExpired,
        RejectReason::KeyScopeDenied,
        RejectReason::PublisherNotAllowed,
        RejectReason::TargetNotAllowed,
    ];
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RejectReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One problem with one field: `field` is the JSON key (a dotted path for
/// nested duplicates, `body`, `content_type` or `message_id` for problems
/// outside the fields, `target` for the decommission target choice) and
/// `problem` a short sentence that quotes input only escaped and truncated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Which field the problem is about.
    pub field: String,
    /// What is wrong with it, for a human.
    pub problem: String,
}

impl FieldError {
    /// Builds a field error; `problem` must already be safe to echo.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A refused command: the reason, the problems, and what could be read.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("command rejected ({reason})")]
pub struct Rejection {
    /// The one code for the rejection (see [`RejectReason`] for precedence).
    pub reason: RejectReason,
    /// Every problem found, at least one.
    pub errors: Vec<FieldError>,
    /// The body's `command_id` if valid, else the AMQP `message_id` if valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    /// The body's `region_id` if well-formed (even when not allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region_id: Option<RegionId>,
    /// The body's `account_id` if well-formed (even when unknown), echoed
    /// because the contract echoes it in every event of the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
    /// `reason` and `requested_by`, each only if valid.
    #[serde(skip_serializing_if = "Audit::is_empty")]
    pub audit: Audit,
}

/// The longest [`Rejection::message`], so it fits an AMQP header comfortably.
const MAX_MESSAGE_CHARS: usize = 1024;

impl Rejection {
    /// A rejection with a single problem and nothing read from the command.
    pub fn new(reason: RejectReason, error: FieldError) -> Self {
        Self {
            reason,
            errors: vec![error],
            command_id: None,
            region_id: None,
            account_id: None,
            audit: Audit::default(),
        }
    }

    /// The rejection for a command whose signature check failed. It carries
    /// nothing from the body on purpose: an unauthenticated publisher must
    /// not be able to put events under another command's id.
    pub fn unauthenticated(problem: impl Into<String>) -> Self {
        Self::new(
            RejectReason::Unauthenticated,
            FieldError::new("signature", problem),
        )
    }

    /// One line for `x-lifecycle-error-message` and logs: every problem as
    /// `field: problem`, joined with `; `, at most 1024 characters.
    pub fn message(&self) -> String {
        let joined = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.problem))
            .collect::<Vec<_>>()
            .join("; ");
        if joined.chars().count() <= MAX_MESSAGE_CHARS {
            joined
        } else {
            let mut cut: String = joined.chars().take(MAX_MESSAGE_CHARS - 1).collect();
            cut.push('…');
            cut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let codes: std::collections::BTreeSet<_> =
            RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), RejectReason::ALL.len());
        for code in codes {
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
        }
    }

    #[test]
    fn serializes_without_empty_context() {
        let r = Rejection::new(
            RejectReason::InvalidJson,
            FieldError::new("body", "not valid JSON"),
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"reason": "invalid_json", "errors": [{"field": "body", "problem": "not valid JSON"}]})
        );
    }

    #[test]
    fn message_is_bounded() {
        let mut r = Rejection::new(RejectReason::InvalidFields, FieldError::new("a", "x"));
        r.errors = (0..500)
            .map(|i| FieldError::new(format!("f{i}"), "bad"))
            .collect();
        assert_eq!(r.message().chars().count(), MAX_MESSAGE_CHARS);
        assert!(r.to_string().contains("invalid_fields"));
    }
}
