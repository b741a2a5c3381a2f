//! Reading the top-level fields of a command object, collecting every problem.
//!
//! Once the body is a JSON object without duplicate keys, every field is
//! checked and every problem recorded (not just the first), so a publisher
//! fixes a bad command in one round trip. The same reader extracts the
//! context (`command_id`, `region_id`, `account_id`, `audit`) a rejection echoes.

use super::Envelope;
use super::Policy;
use super::ids::{AccountId, ActivationId, CommandId, Hostname, InstanceId, MachineId, RegionId};
use super::json::Json;
use super::model::{
    Action, Audit, Command, CommandKind, Decommission, LeakAlert, Quarantine, Target,
};
use super::parse::usable_message_id;
use super::quote::quote;
use super::rejection::{FieldError, RejectReason, Rejection};
use std::collections::BTreeMap;
use std::net::IpAddr;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest `reason` / `requested_by`, in characters (Unicode scalar values).
const MAX_AUDIT_CHARS: usize = 256;

/// The fields a decommission may name its target with; exactly one is allowed.
const TARGET_FIELDS: [&str; 4] = ["instance_id", "machine_id", "ip", "hostname"];

/// Which non-field reasons were found while reading the fields.
#[derive(Default)]
pub(super) struct Flags {
    missing_command_id: bool,
    invalid_fields: bool,
    region_not_allowed: bool,
    unknown_account: bool,
}

/// Reads the top-level fields, collecting every problem.
pub(super) struct Fields<'m, 'a> {
    pub(super) map: &'m BTreeMap<&'m str, &'m Json>,
    pub(super) envelope: &'m Envelope<'a>,
    pub(super) policy: &'m Policy,
    pub(super) errors: Vec<FieldError>,
    pub(super) flags: Flags,
}

impl Fields<'_, '_> {
    fn invalid(&mut self, field: &str, problem: impl Into<String>) {
        self.flags.invalid_fields = true;
        self.errors.push(FieldError::new(field, problem));
    }

    /// An optional string field: `None` when absent or of the wrong type.
    fn string(&mut self, field: &str) -> Option<&str> {
        match self.map.get(field).copied() {
            None => None,
            Some(Json::String(s)) => Some(s.as_str()),
            Some(other) => {
                let problem = format!("must be a string, got {}", other.type_name());
                self.invalid(field, problem);
                None
            }
        }
    }

    /// An optional boolean field: `None` when absent or of the wrong type.
    fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.map.get(field).copied() {
            None => None,
            Some(Json::Bool(b)) => Some(*b),
            Some(other) => {
                let problem = format!("must be true or false, got {}", other.type_name());
                self.invalid(field, problem);
                None
            }
        }
    }

    /// A string field run through an identifier rule.
    fn id<T>(
        &mut self,
        field: &str,
        parse: fn(&str) -> Result<T, super::ids::InvalidId>,
    ) -> Option<T> {
        let value = self.string(field)?;
        match parse(value) {
            Ok(id) => Some(id),
            Err(e) => {
                self.invalid(field, e.problem().to_owned());
                None
            }
        }
    }

    pub(super) fn command_id(&mut self) -> Option<CommandId> {
        if self.map.contains_key("command_id") {
            return self.id("command_id", CommandId::parse);
        }
        let Some(message_id) = usable_message_id(self.envelope) else {
            self.flags.missing_command_id = true;
            self.errors.push(FieldError::new(
                "command_id",
                "is required (or an AMQP message_id)",
            ));
            return None;
        };
        match CommandId::parse(message_id) {
            Ok(id) => Some(id),
            Err(e) => {
                self.flags.missing_command_id = true;
                self.errors.push(FieldError::new(
                    "message_id",
                    format!("command_id is absent and the AMQP message_id is not a valid command id: {e}"),
                ));
                None
            }
        }
    }

    pub(super) fn region(&mut self) -> Option<RegionId> {
        if !self.map.contains_key("region_id") {
            self.invalid("region_id", "is required");
            return None;
        }
        let region = self.id("region_id", RegionId::parse)?;
        if !self
            .policy
            .allowed_regions
            .iter()
            .any(|r| r == region.as_str())
        {
            self.flags.region_not_allowed = true;
            self.errors.push(FieldError::new(
                "region_id",
                format!("{} is not an allowed region", quote(region.as_str())),
            ));
        }
        Some(region)
    }

    pub(super) fn account(&mut self) -> Option<AccountId> {
        let account = self.id("account_id", AccountId::parse)?;
        if !self.policy.known_accounts.contains(account.as_str()) {
            self.flags.unknown_account = true;
            self.errors.push(FieldError::new(
                "account_id",
                format!("{} has no role mapped", quote(account.as_str())),
            ));
        }
        Some(account)
    }

    fn audit_text(&mut self, field: &str) -> Option<String> {
        let value = self.string(field)?;
        let len = value.chars().count();
        if len > MAX_AUDIT_CHARS {
            self.invalid(
                field,
                format!("must be at most {MAX_AUDIT_CHARS} characters, got {len}"),
            );
            return None;
        }
        Some(value.to_owned())
    }

    pub(super) fn audit(&mut self) -> Audit {
        Audit {
            reason: self.audit_text("reason"),
            requested_by: self.audit_text("requested_by"),
        }
    }

    #[allow(
        clippy::result_large_err,
        reason = "same shape as `parse`, which returns it"
    )]
    pub(super) fn command(mut self) -> Result<Command, Rejection> {
        let id = self.command_id();
        let region = self.region();
        let dry_run = self.boolean("dry_run");
        let account_id = self.account();
        let audit = self.audit();
        let action = match self.envelope.kind {
            CommandKind::Decommission => self.decommission().map(Action::Decommission),
            CommandKind::LeakAlert => self.leak_alert().map(Action::LeakAlert),
        };
        let reason = if self.flags.missing_command_id {
            Some(RejectReason::MissingCommandId)
        } else if self.flags.invalid_fields {
            Some(RejectReason::InvalidFields)
        } else if self.flags.region_not_allowed {
            Some(RejectReason::RegionNotAllowed)
        } else if self.flags.unknown_account {
            Some(RejectReason::UnknownAccount)
        } else {
            None
        };
        match (reason, id, region, action) {
            (None, Some(id), Some(region), Some(action)) => Ok(Command {
                id,
                kind: self.envelope.kind,
                region,
                dry_run: dry_run.unwrap_or(false),
                account_id,
                audit,
                action,
            }),
            (reason, id, region, _) => Err(Rejection {
                // Every path that yields no value records a problem, so the
                // fallback is unreachable; it keeps this total without a panic.
                reason: reason.unwrap_or(RejectReason::InvalidFields),
                errors: self.errors,
                command_id: id.or_else(|| {
                    usable_message_id(self.envelope).and_then(|m| CommandId::parse(m).ok())
                }),
                region_id: region,
                account_id,
                audit,
            }),
        }
    }

    fn decommission(&mut self) -> Option<Decommission> {
        let present: Vec<&str> = TARGET_FIELDS
            .iter()
            .copied()
            .filter(|f| self.map.contains_key(f))
            .collect();
        let target = match present.as_slice() {
            [] => {
                self.invalid("target", "exactly one of instance_id, machine_id, ip, hostname is required, none was given");
                None
            }
            ["instance_id"] => self
                .id("instance_id", InstanceId::parse)
                .map(Target::InstanceId),
            ["machine_id"] => self
                .id("machine_id", MachineId::parse)
                .map(Target::MachineId),
            ["hostname"] => self.id("hostname", Hostname::parse).map(Target::Hostname),
            ["ip"] => self.ip(),
            several => {
                let names = several.join(", ");
                self.invalid(
                    "target",
                    format!("exactly one of instance_id, machine_id, ip, hostname is allowed, got {names}"),
                );
                None
            }
        };
        let all_matches = self.boolean("all_matches");
        Some(Decommission {
            target: target?,
            all_matches: all_matches.unwrap_or(false),
        })
    }

    fn ip(&mut self) -> Option<Target> {
        let value = self.string("ip")?;
        match value.parse::<IpAddr>() {
            // An IPv4-mapped IPv6 literal names an IPv4 host; the API lists
            // it as IPv4, so the mapped form would match nothing and the
            // command would end as a silent `already_done`.
            Ok(ip) => Some(Target::Ip(ip.to_canonical())),
            Err(_) => {
                let problem = format!(
                    "must be an IPv4 or IPv6 address literal (no port, zone id, brackets or leading zeros), got {}",
                    quote(value)
                );
                self.invalid("ip", problem);
                None
            }
        }
    }

    fn leak_alert(&mut self) -> Option<LeakAlert> {
        let activation_id = if self.map.contains_key("activation_id") {
            self.id("activation_id", ActivationId::parse)
        } else {
            self.invalid("activation_id", "is required");
            None
        };
        let detected_at = self.detected_at();
        let delete_if_unused = self.boolean("delete_if_unused");
        let quarantine = match self.string("quarantine") {
            None => Some(Quarantine::None),
            Some(name) => match Quarantine::from_name(name) {
                Some(q) => Some(q),
                None => {
                    let problem = format!(
                        "must be \"none\", \"suspicious\" or \"all\", got {}",
                        quote(name)
                    );
                    self.invalid("quarantine", problem);
                    None
                }
            },
        };
        Some(LeakAlert {
            activation_id: activation_id?,
            detected_at: detected_at?,
            delete_if_unused: delete_if_unused.unwrap_or(self.policy.delete_if_unused_default),
            quarantine: quarantine?,
        })
    }

    /// `Some(None)` when absent, `Some(Some(t))` when valid, `None` when invalid.
    fn detected_at(&mut self) -> Option<Option<OffsetDateTime>> {
        if !self.map.contains_key("detected_at") {
            return Some(None);
        }
        let value = self.string("detected_at")?;
        // RFC 3339's `date-time` requires `T` (either case) between date and
        // time; the time crate also takes the space its prose permits.
        let separator_ok = matches!(value.as_bytes().get(10), Some(b'T' | b't'));
        let parsed = if separator_ok {
            OffsetDateTime::parse(value, &Rfc3339).map_err(|e| e.to_string())
        } else {
            Err("the date and time must be separated by 'T'".to_owned())
        };
        match parsed {
            Ok(at) => Some(Some(at)),
            Err(e) => {
                let problem = format!("must be an RFC 3339 date-time, got {} ({e})", quote(value));
                self.invalid("detected_at", problem);
                None
            }
        }
    }
}
