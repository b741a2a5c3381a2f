//! Outgoing events (CONTRACT section 5).
//!
//! Events are built by the playbooks (pure) and serialized once, by the
//! publisher; each type-specific field is turned into JSON text once, when it
//! is added, rather than into a `serde_json::Value` tree to be walked again. Every event of a command repeats the command's identity
//! (`command_id`, kind, region, account, audit) so a consumer never needs to
//! join anything to act on one.

use crate::command::{Audit, Command, CommandKind, Rejection};
use crate::domain::error::{ApiAction, ApiError, ErrorClass, classify};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

/// The event types of the contract; the routing key is the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// An instance was (or would be, or already was) deregistered.
    #[serde(rename = "instance.deregistered")]
    InstanceDeregistered,
    /// Deregistration failed for good.
    #[serde(rename = "instance.deregistration_failed")]
    InstanceDeregistrationFailed,
    /// DisableActivation succeeded (or would, in a dry run).
    #[serde(rename = "activation.disabled")]
    ActivationDisabled,
    /// DisableActivation failed for good.
    #[serde(rename = "activation.disable_failed")]
    ActivationDisableFailed,
    /// DeleteActivation succeeded or the code was already gone.
    #[serde(rename = "activation.deleted")]
    ActivationDeleted,
    /// The code was not deleted (it registered instances, or the command said not to).
    #[serde(rename = "activation.delete_skipped")]
    ActivationDeleteSkipped,
    /// DeleteActivation failed for good.
    #[serde(rename = "activation.delete_failed")]
    ActivationDeleteFailed,
    /// Who registered with a leaked code, and what quarantine did.
    #[serde(rename = "activation.exposure_report")]
    ActivationExposureReport,
    /// The terminal event of a carried-out command.
    #[serde(rename = "command.completed")]
    CommandCompleted,
    /// The terminal event of a command that could not be accepted.
    #[serde(rename = "command.rejected")]
    CommandRejected,
}

impl EventType {
    /// The type string, which is also the routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InstanceDeregistered => "instance.deregistered",
            Self::InstanceDeregistrationFailed => "instance.deregistration_failed",
            Self::ActivationDisabled => "activation.disabled",
            Self::ActivationDisableFailed => "activation.disable_failed",
            Self::ActivationDeleted => "activation.deleted",
            Self::ActivationDeleteSkipped => "activation.delete_skipped",
            Self::ActivationDeleteFailed => "activation.delete_failed",
            Self::ActivationExposureReport => "activation.exposure_report",
            Self::CommandCompleted => "command.completed",
            Self::CommandRejected => "command.rejected",
        }
    }

    /// True for the one event that ends a processing.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::CommandCompleted | Self::CommandRejected)
    }
}

/// Outcomes, for steps and for whole commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The change was made.
    Succeeded,
    /// The goal state already held.
    AlreadyDone,
    /// Nothing was changed because the command was a dry run.
    DryRun,
    /// The step was deliberately not done.
    Skipped,
    /// Failed for good.
    Failed,
    /// Some steps succeeded, some failed.
    PartiallyFailed,
    /// The command could not be accepted.
    Rejected,
}

impl Outcome {
    /// The outcome string (a bounded metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::AlreadyDone => "already_done",
            Self::DryRun => "dry_run",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::PartiallyFailed => "partially_failed",
            Self::Rejected => "rejected",
        }
    }
}

/// The `error` object of failure events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventError {
    /// API error code, or our own (`AmbiguousTarget`, `Transport.Timeout`, ...).
    pub code: String,
    /// Human message.
    pub message: String,
    /// HTTP status if the API answered.
    pub http_status: Option<u16>,
    /// Whether the failure was of a retryable kind (it ran out of retries).
    pub retryable: bool,
}

impl EventError {
    /// From an API error, for a step of `action`.
    pub fn from_api(action: ApiAction, e: &ApiError) -> Self {
        Self {
            code: e.code().to_owned(),
            message: e.message(),
            http_status: e.http_status(),
            retryable: matches!(classify(action, e), ErrorClass::Transient { .. }),
        }
    }

    /// A failure decided by the worker itself (no API call failed).
    pub fn own(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            http_status: None,
            retryable: false,
        }
    }
}

/// One outgoing event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unique per event (consumers dedupe on `command_id` + `type`).
    pub event_id: Uuid,
    /// The event type (and routing key).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The command's id, if it could be read.
    pub command_id: Option<String>,
    /// `decommission` or `leak-alert` (follows from the queue).
    pub command_kind: &'static str,
    /// When the event was built (RFC 3339, UTC).
    pub occurred_at: String,
    /// The command's region, if it could be read.
    pub region_id: Option<String>,
    /// The outcome this event reports.
    pub outcome: Outcome,
    /// Whether the command was a dry run.
    pub dry_run: bool,
    /// The account the command acted in, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// `reason` and `requested_by` from the command.
    #[serde(skip_serializing_if = "Audit::is_empty")]
    pub audit: Audit,
    /// API attempts of this step across all processings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The API's RequestId of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// Type-specific fields (`instance`, `activation`, `steps`, ...).
    #[serde(flatten)]
    pub detail: Detail,
}

/// The type-specific fields of an event, in the order they were added, each
/// already serialized.
#[derive(Debug, Clone, Default)]
pub struct Detail(Vec<(&'static str, Box<RawValue>)>);

impl Detail {
    /// Sets `key` (replacing an earlier value) to `value`'s JSON. Serializing
    /// plain data cannot fail; if it did, the field would be left out.
    pub fn set(&mut self, key: &'static str, value: impl Serialize) {
        let Ok(raw) = serde_json::value::to_raw_value(&value) else {
            return;
        };
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = raw,
            None => self.0.push((key, raw)),
        }
    }

    /// A field as a JSON value (for tests and readers of events in process).
    pub fn get(&self, key: &str) -> Option<Value> {
        let (_, raw) = self.0.iter().find(|(k, _)| *k == key)?;
        serde_json::from_str(raw.get()).ok()
    }
}

impl Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// RFC 3339 UTC now, e.g. `2026-11-22T08:00:00.123Z`.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl Event {
    /// An event of `kind` about `command`, with no step details yet.
    pub fn for_command(command: &Command, kind: EventType, outcome: Outcome) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            kind,
            command_id: Some(command.id.as_str().to_owned()),
            command_kind: command.kind.as_str(),
            occurred_at: now_rfc3339(),
            region_id: Some(command.region.as_str().to_owned()),
            outcome,
            dry_run: command.dry_run,
            account_id: command.account_id.as_ref().map(|a| a.as_str().to_owned()),
            audit: command.audit.clone(),
            attempts: None,
            request_id: None,
            error: None,
            detail: Detail::default(),
        }
    }

    /// The `command.rejected` event for a command that could not be accepted.
    pub fn rejected(kind: CommandKind, rejection: &Rejection) -> Self {
        let mut detail = Detail::default();
        detail.set("reason", rejection.reason.as_str());
        detail.set("errors", &rejection.errors);
        Self {
            event_id: Uuid::new_v4(),
            kind: EventType::CommandRejected,
            command_id: rejection.command_id.as_ref().map(|c| c.as_str().to_owned()),
            command_kind: kind.as_str(),
            occurred_at: now_rfc3339(),
            region_id: rejection.region_id.as_ref().map(|r| r.as_str().to_owned()),
            outcome: Outcome::Rejected,
            dry_run: false,
            account_id: rejection.account_id.as_ref().map(|a| a.as_str().to_owned()),
            audit: rejection.audit.clone(),
            attempts: None,
            request_id: None,
            error: None,
            detail,
        }
    }

    /// Adds a type-specific field.
    pub fn with(mut self, key: &'static str, value: impl Serialize) -> Self {
        self.detail.set(key, value);
        self
    }

    /// Records the API attempts and RequestId of the step.
    pub fn with_call(mut self, attempts: u32, request_id: Option<String>) -> Self {
        self.attempts = Some(attempts);
        self.request_id = request_id;
        self
    }

    /// Records the failure.
    pub fn with_error(mut self, error: EventError) -> Self {
        self.error = Some(error);
        self
    }

    /// The JSON body. Serializing plain data cannot fail; the fallback keeps
    /// the signature infallible without a panic path.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => b"{}".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::RejectReason;

    #[test]
    fn detail_fields_are_flat_in_order_and_replaced_by_key() {
        let mut event = Event::rejected(
            CommandKind::Decommission,
            &Rejection::new(
                crate::command::RejectReason::InvalidFields,
                crate::command::FieldError::new("region_id", "not allowed"),
            ),
        )
        .with("note", "first")
        .with("count", 2);
        event.detail.set("note", "second");
        let json: Value = serde_json::from_slice(&event.to_json()).expect("valid JSON");
        assert_eq!(json["type"], "command.rejected");
        assert_eq!(json["reason"], RejectReason::InvalidFields.as_str());
        assert_eq!(json["errors"][0]["field"], "region_id");
        assert_eq!(json["note"], "second");
        assert_eq!(json["count"], 2);
        assert_eq!(event.detail.get("count"), Some(Value::from(2)));
        assert_eq!(event.detail.get("missing"), None);
        let text = String::from_utf8(event.to_json()).expect("utf-8");
        assert_eq!(text.matches("\"note\"").count(), 1, "{text}");
    }
}
