//! The validated commands: what the worker carries out once `parse` says yes.
//!
//! Every field is a checked type, so the worker cannot build an API request
//! from an unchecked string. `Command` serializes back to the wire form
//! (CONTRACT section 3), which `parse` accepts again to an equal command: the
//! form is used for `send`, dead-letter inspection and round-trip tests.

use super::ids::{AccountId, ActivationId, CommandId, Hostname, InstanceId, MachineId, RegionId};
use serde::ser::{Error as _, SerializeMap};
use serde::{Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Which command a message is; it follows from the queue it arrived on,
/// never from the body, so a publisher cannot route around queue permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// Deregister one host (or all matches) from Cloud Assistant.
    Decommission,
    /// Shut off a leaked activation code and report what used it.
    LeakAlert,
}

impl CommandKind {
    /// The kind's name: the routing key and the events' `command_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Decommission => "decommission",
            CommandKind::LeakAlert => "leak-alert",
        }
    }

    /// The kind for a routing key / kind name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "decommission" => Some(CommandKind::Decommission),
            "leak-alert" => Some(CommandKind::LeakAlert),
            _ => None,
        }
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CommandKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Who asked for a command and why, echoed into every event as `audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Free text, at most 256 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Free text, at most 256 characters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

impl Audit {
    /// True when neither field was given: events then carry no `audit` at all.
    pub fn is_empty(&self) -> bool {
        self.reason.is_none() && self.requested_by.is_none()
    }
}

/// A validated command, ready to be carried out.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The idempotency key (body `command_id`, else AMQP `message_id`).
    pub id: CommandId,
    /// The kind, from the queue; always agrees with [`Command::action`].
    pub kind: CommandKind,
    /// An allow-listed region to act in.
    pub region: RegionId,
    /// Validate, resolve and report, but change nothing.
    pub dry_run: bool,
    /// The account to act in (a mapped one), or the worker's own when absent.
    pub account_id: Option<AccountId>,
    /// Echoed into every event.
    pub audit: Audit,
    /// What to do.
    pub action: Action,
}

/// The kind-specific part of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// See [`Decommission`].
    Decommission(Decommission),
    /// See [`LeakAlert`].
    LeakAlert(LeakAlert),
}

/// Deregister the managed instance(s) a target names.
#[derive(Debug, Clone, PartialEq)]
pub struct Decommission {
    /// The one host named.
    pub target: Target,
    /// Deregister every match instead of failing with `AmbiguousTarget`.
    pub all_matches: bool,
}

/// How a decommission names its host: exactly one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Directly, no lookup needed.
    InstanceId(InstanceId),
    /// Looked up with the `MachineId` filter.
    MachineId(MachineId),
    /// Looked up with the `InstanceIp` filter (intranet or internet address).
    /// Canonical: an IPv4-mapped IPv6 literal is parsed as its IPv4 address.
    Ip(IpAddr),
    /// Looked up by paging and comparing the `Hostname` field.
    Hostname(Hostname),
}

impl Target {
    /// The body field this target came from.
    pub fn field(&self) -> &'static str {
        match self {
            Target::InstanceId(_) => "instance_id",
            Target::MachineId(_) => "machine_id",
            Target::Ip(_) => "ip",
            Target::Hostname(_) => "hostname",
        }
    }

    /// The value as a string, as the body gave it (an IP in its standard form).
    pub fn value(&self) -> String {
        match self {
            Target::InstanceId(id) => id.to_string(),
            Target::MachineId(id) => id.to_string(),
            Target::Ip(ip) => ip.to_string(),
            Target::Hostname(h) => h.to_string(),
        }
    }

    /// A stable key for serializing work per target: the same host spelled
    /// differently (case, trailing dot, IPv4-mapped IPv6) gives one key. Keys
    /// are lower-cased even where the API may be case-sensitive, because a
    /// key too coarse only costs concurrency while one too fine lets two
    /// commands race on one host.
    pub fn key(&self) -> String {
        match self {
            Target::InstanceId(id) => format!("instance:{}", id.as_str().to_ascii_lowercase()),
            Target::MachineId(id) => format!("machine:{}", id.as_str().to_ascii_lowercase()),
            Target::Ip(ip) => format!("ip:{}", ip.to_canonical()),
            Target::Hostname(h) => format!("hostname:{}", h.canonical()),
        }
    }
}

/// Shut off a leaked activation code, report and optionally quarantine.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakAlert {
    /// The leaked code, as given.
    pub activation_id: ActivationId,
    /// Instances registered at or after this are flagged `suspicious`.
    pub detected_at: Option<OffsetDateTime>,
    /// Delete the code after disabling it when it never registered an instance.
    pub delete_if_unused: bool,
    /// Which registered instances to deregister.
    pub quarantine: Quarantine,
}

impl LeakAlert {
    /// A stable key for serializing work per activation code (lower-cased,
    /// since UUID hex digits are case-insensitive).
    pub fn key(&self) -> String {
        format!(
            "activation:{}",
            self.activation_id.as_str().to_ascii_lowercase()
        )
    }
}

/// Which instances registered with a leaked code a leak-alert deregisters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Quarantine {
    /// Report only.
    #[default]
    None,
    /// Those registered at or after `detected_at`.
    Suspicious,
    /// Every one.
    All,
}

impl Quarantine {
    /// The wire value: `none`, `suspicious` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quarantine::None => "none",
            Quarantine::Suspicious => "suspicious",
            Quarantine::All => "all",
        }
    }

    /// Reads the wire value (exact, lower case).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Quarantine::None),
            "suspicious" => Some(Quarantine::Suspicious),
            "all" => Some(Quarantine::All),
            _ => None,
        }
    }
}

impl fmt::Display for Quarantine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Quarantine {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The wire form: the body a publisher would send for this command, every
/// default written out, plus `command_kind` (an unknown field to `parse`).
impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("command_id", &self.id)?;
        map.serialize_entry("command_kind", &self.kind)?;
        map.serialize_entry("region_id", &self.region)?;
        map.serialize_entry("dry_run", &self.dry_run)?;
        if let Some(account) = &self.account_id {
            map.serialize_entry("account_id", account)?;
        }
        if let Some(reason) = &self.audit.reason {
            map.serialize_entry("reason", reason)?;
        }
        if let Some(requested_by) = &self.audit.requested_by {
            map.serialize_entry("requested_by", requested_by)?;
        }
        match &self.action {
            Action::Decommission(d) => {
                map.serialize_entry(d.target.field(), &d.target.value())?;
                map.serialize_entry("all_matches", &d.all_matches)?;
            }
            Action::LeakAlert(l) => {
                map.serialize_entry("activation_id", &l.activation_id)?;
                if let Some(at) = l.detected_at {
                    let text = at.format(&Rfc3339).map_err(S::Error::custom)?;
                    map.serialize_entry("detected_at", &text)?;
                }
                map.serialize_entry("delete_if_unused", &l.delete_if_unused)?;
                map.serialize_entry("quarantine", &l.quarantine)?;
            }
        }
        map.end()
    }
}

impl Command {
    /// The key this command's work is serialized on within one process
    /// (see [`Target::key`] and [`LeakAlert::key`]).
    pub fn target_key(&self) -> String {
        match &self.action {
            Action::Decommission(d) => d.target.key(),
            Action::LeakAlert(a) => a.key(),
        }
    }

    /// The wire form as JSON text. Fails only for a hand-built `detected_at`
    /// that RFC 3339 cannot express (a year outside 0–9999); parsed commands
    /// never do.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}
