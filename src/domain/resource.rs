//! What the ECS resources the worker acts on are, as the API describes them:
//! managed instances (`mi-...`) and activation codes. Events carry these fields
//! as the API returned them, so they keep the API's names (PascalCase on the
//! wire); numbers and booleans may arrive as strings ([`super::lenient`]).

use super::lenient as de;
use serde::{Deserialize, Serialize};

/// A tag on a managed instance or an activation code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Tag {
    /// The tag key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_key: Option<String>,
    /// The tag value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_value: Option<String>,
}

/// A host registered with Cloud Assistant (`mi-...`), as the API describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ManagedInstance {
    /// The managed instance id, `mi-` followed by letters and digits.
    pub instance_id: String,
    /// The instance name given at registration (not the host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// The host name the machine reports; the worker matches `hostname` targets on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The machine code the agent derived or was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// The private IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intranet_ip: Option<String>,
    /// The public IP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internet_ip: Option<String>,
    /// The activation code the instance registered with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation_id: Option<String>,
    /// `windows`, `linux` or `FreeBSD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_type: Option<String>,
    /// The operating system version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// The Cloud Assistant agent version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When it registered (RFC 3339 UTC); `leak-alert` compares it with `detected_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_time: Option<String>,
    /// When a Cloud Assistant task last ran on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_invoked_time: Option<String>,
    /// How many Cloud Assistant tasks ran on it.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub invocation_count: Option<u64>,
    /// Whether the agent is connected.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_bool"
    )]
    pub connected: Option<bool>,
    /// The resource group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
    /// Tags (only `DescribeManagedInstances` returns them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// An activation code and its usage counters, as the API describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Activation {
    /// The activation code id (UUID form).
    pub activation_id: String,
    /// The default instance name prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// The free-text description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The addresses allowed to use the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address_range: Option<String>,
    /// How many instances the code may register.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub instance_count: Option<u64>,
    /// How many instances registered with it, ever: greater than 0 means "in use".
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub registered_count: Option<u64>,
    /// How many of those were deregistered since.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub deregistered_count: Option<u64>,
    /// The code's validity in hours.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub time_to_live_in_hours: Option<u64>,
    /// When it was created (RFC 3339 UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// Whether it was disabled (it can no longer register instances).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_bool"
    )]
    pub disabled: Option<bool>,
    /// The resource group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_group_id: Option<String>,
    /// Tags (only `DescribeActivations` returns them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}
