//! From bytes and AMQP properties to a [`Command`] or a [`Rejection`].
//!
//! The checks run in the order of [`RejectReason`]'s precedence: framing
//! (size, content type, UTF-8, JSON, duplicates, object) stops at the first
//! failure because nothing after it can be read; the fields are then all
//! checked so the publisher learns every problem in one round trip.

use super::fields::{Fields, Flags};
use super::ids::CommandId;
use super::json::{Json, JsonError, MAX_DEPTH, parse_strict};
use super::model::{Audit, Command};
use super::quote::quote;
use super::rejection::{FieldError, RejectReason, Rejection};
use super::{Envelope, Policy};
use std::collections::BTreeMap;

/// Parses and validates one command. Never panics, whatever the input.
#[allow(
    clippy::result_large_err,
    reason = "the worker's agreed signature; a rejection is built once per message, boxing buys nothing"
)]
pub fn parse(envelope: &Envelope<'_>, policy: &Policy) -> Result<Command, Rejection> {
    let early = |reason, field: &str, problem: String| {
        let mut rejection = Rejection::new(reason, FieldError::new(field, problem));
        rejection.command_id = usable_message_id(envelope).and_then(|m| CommandId::parse(m).ok());
        rejection
    };
    let size = envelope.body.len();
    if size > policy.max_body_bytes {
        return Err(early(
            RejectReason::BodyTooLarge,
            "body",
            format!(
                "is {size} bytes, more than the limit of {}",
                policy.max_body_bytes
            ),
        ));
    }
    if let Some(content_type) = envelope.content_type
        && !is_json_content_type(content_type)
    {
        let problem = format!(
            "must be application/json (charset utf-8 if any), got {}",
            quote(content_type)
        );
        let error = FieldError::new("content_type", problem);
        // The body may still be a readable command: echo what it names.
        let mut rejection = match std::str::from_utf8(envelope.body).map(parse_strict) {
            Ok(Ok(document)) => rejection_with_context(
                RejectReason::InvalidContentType,
                vec![error],
                envelope,
                &document,
                policy,
            ),
            _ => Rejection::new(RejectReason::InvalidContentType, error),
        };
        fall_back_to_message_id(&mut rejection, envelope);
        return Err(rejection);
    }
    let text = std::str::from_utf8(envelope.body).map_err(|e| {
        early(
            RejectReason::InvalidUtf8,
            "body",
            format!(
                "is not UTF-8: invalid byte sequence at offset {}",
                e.valid_up_to()
            ),
        )
    })?;
    if text.starts_with('\u{feff}') {
        return Err(early(
            RejectReason::InvalidJson,
            "body",
            "starts with a byte order mark, which JSON text must not (RFC 8259, section 8.1)"
                .to_owned(),
        ));
    }
    let document = match parse_strict(text) {
        Ok(document) => document,
        Err(JsonError::Syntax(message)) => {
            return Err(early(
                RejectReason::InvalidJson,
                "body",
                format!("is not valid JSON: {message}"),
            ));
        }
        Err(JsonError::TooDeep) => {
            return Err(early(
                RejectReason::TooDeep,
                "body",
                format!("nests arrays and objects deeper than {MAX_DEPTH} levels"),
            ));
        }
        Err(JsonError::DuplicateKeys { paths, document }) => {
            let errors = paths
                .into_iter()
                .map(|path| FieldError::new(path, "appears more than once in the same object"))
                .collect();
            let mut rejection = rejection_with_context(
                RejectReason::DuplicateKey,
                errors,
                envelope,
                &document,
                policy,
            );
            // A key given twice is ambiguous: it must not be echoed either.
            forget_duplicated_context(&mut rejection, &document);
            fall_back_to_message_id(&mut rejection, envelope);
            return Err(rejection);
        }
    };
    let Json::Object(entries) = &document else {
        return Err(early(
            RejectReason::NotAnObject,
            "body",
            format!("must be a JSON object, got {}", document.type_name()),
        ));
    };
    let fields: BTreeMap<&str, &Json> = entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Fields {
        map: &fields,
        envelope,
        policy,
        errors: Vec::new(),
        flags: Flags::default(),
    }
    .command()
}

/// The AMQP message id, treating an empty one as absent (some clients send "").
pub(super) fn usable_message_id<'a>(envelope: &Envelope<'a>) -> Option<&'a str> {
    envelope.message_id.filter(|m| !m.is_empty())
}

/// `application/json`, any case, optionally with parameters; a `charset`
/// parameter must say UTF-8 since the body is read as UTF-8. An empty
/// property counts as absent.
fn is_json_content_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    if media.is_empty() && value.trim().is_empty() {
        return true;
    }
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|param| {
        if param.trim().is_empty() {
            return true;
        }
        let Some((name, val)) = param.split_once('=') else {
            return false;
        };
        let name = name.trim();
        let val = val.trim().trim_matches('"');
        !name.eq_ignore_ascii_case("charset")
            || val.eq_ignore_ascii_case("utf-8")
            || val.eq_ignore_ascii_case("utf8")
    })
}

/// Echoes a valid AMQP `message_id` when the body gave no usable command id.
fn fall_back_to_message_id(rejection: &mut Rejection, envelope: &Envelope<'_>) {
    if rejection.command_id.is_none() {
        rejection.command_id = usable_message_id(envelope).and_then(|m| CommandId::parse(m).ok());
    }
}

/// Builds a rejection carrying whatever context could be read from `document`.
fn rejection_with_context(
    reason: RejectReason,
    errors: Vec<FieldError>,
    envelope: &Envelope<'_>,
    document: &Json,
    policy: &Policy,
) -> Rejection {
    let mut rejection = Rejection {
        reason,
        errors,
        command_id: None,
        region_id: None,
        account_id: None,
        audit: Audit::default(),
    };
    let Json::Object(entries) = document else {
        return rejection;
    };
    let fields: BTreeMap<&str, &Json> = entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut reader = Fields {
        map: &fields,
        envelope,
        policy,
        errors: Vec::new(),
        flags: Flags::default(),
    };
    rejection.command_id = reader.command_id();
    rejection.region_id = reader.region();
    rejection.account_id = reader.account();
    rejection.audit = reader.audit();
    rejection
}

/// Drops echoed context whose key appears more than once at the top level.
fn forget_duplicated_context(rejection: &mut Rejection, document: &Json) {
    let Json::Object(entries) = document else {
        return;
    };
    let twice = |key: &str| entries.iter().filter(|(k, _)| k == key).count() > 1;
    if twice("command_id") {
        rejection.command_id = None;
    }
    if twice("region_id") {
        rejection.region_id = None;
    }
    if twice("account_id") {
        rejection.account_id = None;
    }
    if twice("reason") {
        rejection.audit.reason = None;
    }
    if twice("requested_by") {
        rejection.audit.requested_by = None;
    }
}
