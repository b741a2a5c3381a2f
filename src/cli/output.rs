//! How the operator commands print events: one readable line (and a line per
//! step) for a person at a terminal, the event's JSON exactly as received for
//! a pipe or a script.
//!
//! The human form is a view, never a contract: scripts use `--output json`,
//! whose lines are the events' bodies, byte for byte.

use serde_json::Value;
use std::io::IsTerminal;

/// `--output`: who reads what the command prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    /// Human-readable.
    Human,
    /// JSON lines (the events as received).
    Json,
}

impl OutputMode {
    /// True when the output is for a person: `Human`, or `Auto` with stdout a terminal.
    pub fn human(self) -> bool {
        match self {
            Self::Auto => std::io::stdout().is_terminal(),
            Self::Human => true,
            Self::Json => false,
        }
    }
}

fn text<'a>(event: &'a Value, key: &str) -> &'a str {
    event.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The time part of an RFC 3339 timestamp, to the millisecond (`08:00:00.123`).
fn clock(occurred_at: &str) -> &str {
    let time = occurred_at.split_once('T').map_or(occurred_at, |(_, t)| t);
    time.get(..12).unwrap_or(time)
}

/// What the event is about: the instance or activation it names, if any.
fn subject(event: &Value) -> Option<String> {
    let field = |object: &str, key: &str| {
        event
            .get(object)
            .and_then(|o| o.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    field("instance", "InstanceId")
        .or_else(|| field("activation", "ActivationId"))
        .or_else(|| {
            event
                .get("activation_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

/// `code: message` of a failure event's `error`, or a rejection's field problems.
pub fn error_text(event: &Value) -> Option<String> {
    if let Some(error) = event.get("error").filter(|e| e.is_object()) {
        return Some(format!(
            "{}: {}",
            text(error, "code"),
            text(error, "message")
        ));
    }
    let problems: Vec<String> = event
        .get("errors")?
        .as_array()?
        .iter()
        .map(|e| format!("{}: {}", text(e, "field"), text(e, "problem")))
        .collect();
    let reason = text(event, "reason");
    Some(format!("{reason} ({})", problems.join("; ")))
}

/// One line for an event: time, type, outcome, kind, command id, region, what it
/// concerns, and why it failed.
pub fn event_line(event: &Value) -> String {
    let mut line = format!(
        "{}  {:<32} {:<16} {:<12} {}  {}",
        clock(text(event, "occurred_at")),
        text(event, "type"),
        text(event, "outcome"),
        text(event, "command_kind"),
        text(event, "command_id"),
        text(event, "region_id"),
    );
    if let Some(subject) = subject(event) {
        line.push_str("  ");
        line.push_str(&subject);
    }
    if event.get("type").and_then(Value::as_str) == Some("activation.exposure_report") {
        let count = |k: &str| event.get(k).and_then(Value::as_u64).unwrap_or(0);
        line.push_str(&format!(
            "  {} instance(s), {} suspicious",
            count("instance_count"),
            count("suspicious_count")
        ));
    }
    if let Some(error) = error_text(event) {
        line.push_str("  ");
        line.push_str(&error);
    }
    line
}

/// An event followed by one indented line per step (terminal events list them).
pub fn event_block(event: &Value) -> String {
    let mut out = event_line(event);
    for step in event
        .get("steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "\n    {:<26} {:<16} {}",
            text(step, "step"),
            text(step, "outcome"),
            step.get("target").and_then(Value::as_str).unwrap_or(""),
        ));
        if let Some(attempts) = step.get("attempts").and_then(Value::as_u64) {
            let s = if attempts == 1 { "" } else { "s" };
            out.push_str(&format!("  {attempts} attempt{s}"));
        }
        if let Some(error) = error_text(step) {
            out.push_str("  ");
            out.push_str(&error);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_completed_command_shows_its_steps() {
        let event = json!({
            "type": "command.completed", "command_id": "offboard-42",
            "command_kind": "decommission", "occurred_at": "2026-11-22T08:00:00.123456Z",
            "region_id": "cn-hangzhou", "outcome": "partially_failed", "dry_run": false,
            "error": {"code": "IncorrectInstanceStatus", "message": "busy", "http_status": 403, "retryable": false},
            "steps": [
                {"step": "DeregisterManagedInstance", "target": "mi-a", "outcome": "succeeded", "attempts": 1},
                {"step": "DeregisterManagedInstance", "target": "mi-b", "outcome": "failed", "attempts": 3,
                 "error": {"code": "IncorrectInstanceStatus", "message": "busy"}}
            ]
        });
        let block = event_block(&event);
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines.len(), 3, "{block}");
        assert!(
            lines[0].starts_with("08:00:00.123  command.completed"),
            "{block}"
        );
        assert!(lines[0].contains("partially_failed"), "{block}");
        assert!(lines[0].contains("offboard-42  cn-hangzhou"), "{block}");
        assert!(
            lines[0].ends_with("IncorrectInstanceStatus: busy"),
            "{block}"
        );
        assert!(
            lines[1].contains("mi-a") && lines[1].ends_with("1 attempt"),
            "{block}"
        );
        assert!(
            lines[2].contains("mi-b")
                && lines[2].contains("3 attempts")
                && lines[2].ends_with("IncorrectInstanceStatus: busy"),
            "{block}"
        );
    }

    #[test]
    fn a_rejection_names_its_reason_and_fields() {
        let event = json!({
            "type": "command.rejected", "command_id": null, "command_kind": "decommission",
            "occurred_at": "2026-11-22T08:00:00Z", "region_id": null, "outcome": "rejected",
            "reason": "invalid_field",
            "errors": [{"field": "instance_id", "problem": "must start with mi-"},
                       {"field": "region_id", "problem": "is required"}]
        });
        let line = event_line(&event);
        assert!(line.starts_with("08:00:00Z  command.rejected"), "{line}");
        assert!(
            line.ends_with(
                "invalid_field (instance_id: must start with mi-; region_id: is required)"
            ),
            "{line}"
        );
    }

    #[test]
    fn step_events_name_their_instance_or_activation() {
        let deregistered =
            json!({"type": "instance.deregistered", "instance": {"InstanceId": "mi-x"}});
        assert!(event_line(&deregistered).ends_with("mi-x"));
        let report = json!({"type": "activation.exposure_report", "activation_id": "4ECE",
                            "instance_count": 3, "suspicious_count": 1});
        assert!(event_line(&report).ends_with("4ECE  3 instance(s), 1 suspicious"));
        assert_eq!(error_text(&deregistered), None);
    }
}
