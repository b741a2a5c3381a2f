//! The inbound language: commands as publishers send them (CONTRACT section 3).
//!
//! "Parse, don't validate": [`parse`] turns a message body and a few AMQP
//! properties into a [`Command`] whose every field is a checked type, or into
//! a [`Rejection`] with one reason and field-level problems, which the worker
//! publishes as `command.rejected`. Nothing here does I/O, so the hostile
//! input corpus and property tests cover it completely.
//!
//! Decisions where the contract is silent:
//! - a UTF-8 byte order mark is rejected (`invalid_json`): RFC 8259 forbids
//!   it and a BOM-tolerant parser elsewhere could read a different document;
//! - JSON `null` is a wrong type for every field, never "absent";
//! - an empty `content-type` or `message_id` property counts as absent;
//! - lengths are counted in Unicode scalar values (`char`s);
//! - the precedence of reasons is documented on [`RejectReason`];
//! - a rejection echoes `command_id` (body, else `message_id`), `region_id`
//!   and `account_id` when they are well-formed, even if the region is not
//!   allowed or the account unknown (the contract echoes `account_id` in
//!   `command.rejected`); a key given twice is never echoed;
//! - `detected_at` must use `T` between date and time (RFC 3339's grammar),
//!   a leap second `:60` is read as `:59.999999999`, and a time in the future
//!   is accepted;
//! - an IPv4-mapped IPv6 `ip` is read as the IPv4 address it maps.
//!
//! [`CommandKeys`] checks signed commands (CONTRACT section 6) before parsing.

mod fields;
mod ids;
mod json;
mod model;
mod parse;
mod quote;
mod rejection;

pub use ids::{
    AccountId, ActivationId, CommandId, Hostname, InstanceId, InvalidId, MachineId, RegionId,
};
pub use json::MAX_DEPTH;
pub use model::{Action, Audit, Command, CommandKind, Decommission, LeakAlert, Quarantine, Target};
pub use parse::parse;
pub use rejection::{FieldError, RejectReason, Rejection};

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The contract's body limit: 64 KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// One received message, as much of it as parsing needs.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// From the queue the message came from, not from the body.
    pub kind: CommandKind,
    /// The body bytes, exactly as received.
    pub body: &'a [u8],
    /// The AMQP `content-type` property.
    pub content_type: Option<&'a str>,
    /// The AMQP `message_id` property: the fallback command id.
    pub message_id: Option<&'a str>,
}

/// The configured rules a command is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Regions commands may act in; anything else is `region_not_allowed`.
    pub allowed_regions: Vec<String>,
    /// `delete_if_unused` for leak-alerts that do not say.
    pub delete_if_unused_default: bool,
    /// Accounts with a role mapped; any other `account_id` is `unknown_account`.
    pub known_accounts: BTreeSet<String>,
    /// Larger bodies are `body_too_large`.
    pub max_body_bytes: usize,
}

impl Default for Policy {
    /// The contract's defaults: the seed documents' three regions, delete
    /// unused codes, no mapped accounts, 64 KiB.
    fn default() -> Self {
        Self {
            allowed_regions: ["cn-hangzhou", "cn-beijing", "cn-shanghai"]
                .map(String::from)
                .to_vec(),
            delete_if_unused_default: true,
            known_accounts: BTreeSet::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The `ClientToken` for deregistering `instance_id` on behalf of a command
/// that touches several instances (`all_matches`, leak-alert quarantine).
///
/// The API refuses a token reused with different parameters
/// (`IdempotentParameterMismatch`), so each instance needs its own token;
/// it must also be the same in every process and every redelivery so a
/// retried deregistration is recognised as the same request. The lower-case
/// hex SHA-256 of `command_id + "/" + instance_id` is exactly 64 ASCII
/// characters (the API's limit), and the `/` cannot occur in either id, so
/// distinct pairs never share an input.
pub fn client_token(command_id: &CommandId, instance_id: &InstanceId) -> String {
    let mut hasher = Sha256::new();
    hasher.update(command_id.as_str().as_bytes());
    hasher.update(b"/");
    hasher.update(instance_id.as_str().as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests;
