//! The ECS `2014-05-26` wire model for the Cloud Assistant operations the worker uses.
//!
//! Shared by the client (deserializing answers) and the simulator (serializing them),
//! so both speak exactly one JSON shape, taken from the official API reference and
//! SDK models: lists are plain arrays (`"Instances": [...]`, `"ActivationList": [...]`).
//! The API may omit fields and may send numbers and booleans as strings, so every
//! field is optional or defaulted and the scalar ones go through [`de`].

pub mod de;

use super::transport::Answer;
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

/// The answer to `DeregisterManagedInstance`: the instance as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeregisterManagedInstanceResponse {
    /// The request id, for support and events.
    pub request_id: String,
    /// The deregistered instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<ManagedInstance>,
}

/// The answer to `DisableActivation`: the code after disabling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DisableActivationResponse {
    /// The request id.
    pub request_id: String,
    /// The activation code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
}

/// The answer to `DeleteActivation`: the code as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeleteActivationResponse {
    /// The request id.
    pub request_id: String,
    /// The deleted activation code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
}

/// One page of `DescribeManagedInstances`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeManagedInstancesResponse {
    /// The request id.
    pub request_id: String,
    /// Total matches; not meaningful with `MaxResults` / `NextToken` paging.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub total_count: Option<u64>,
    /// The token for the next page; absent or empty on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// The page number (page-number paging only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub page_number: Option<u64>,
    /// The page size (page-number paging only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub page_size: Option<u64>,
    /// The instances on this page.
    pub instances: Vec<ManagedInstance>,
}

/// One page of `DescribeActivations`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeActivationsResponse {
    /// The request id.
    pub request_id: String,
    /// Total matches; not meaningful with `MaxResults` / `NextToken` paging.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub total_count: Option<u64>,
    /// The token for the next page; absent or empty on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// The page number (page-number paging only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub page_number: Option<u64>,
    /// The page size (page-number paging only).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::option_lenient_u64"
    )]
    pub page_size: Option<u64>,
    /// The activation codes on this page.
    pub activation_list: Vec<Activation>,
}

/// The body of every error answer, whatever the action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ErrorEnvelope {
    /// The request id.
    pub request_id: String,
    /// The endpoint host that answered.
    pub host_id: String,
    /// The error code, e.g. `InvalidInstance.NotFound`; it decides retry and outcome.
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The diagnosis link the service suggests.
    pub recommend: String,
}

impl Answer for DeregisterManagedInstanceResponse {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl Answer for DisableActivationResponse {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl Answer for DeleteActivationResponse {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl Answer for DescribeManagedInstancesResponse {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl Answer for DescribeActivationsResponse {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_accepts_strings_for_numbers_and_bools() {
        let json = r#"{"RequestId":"r","TotalCount":"1","NextToken":"",
            "Instances":[{"InstanceId":"mi-1","InvocationCount":"2","Connected":"false",
            "Tags":[{"TagKey":"k","TagValue":"v"}],"Unknown":1}]}"#;
        let r: Result<DescribeManagedInstancesResponse, _> = serde_json::from_str(json);
        let r = r.ok();
        let first = r.as_ref().and_then(|r| r.instances.first());
        assert_eq!(r.as_ref().and_then(|r| r.total_count), Some(1));
        assert_eq!(first.and_then(|i| i.invocation_count), Some(2));
        assert_eq!(first.and_then(|i| i.connected), Some(false));
        assert_eq!(first.map(|i| i.tags.len()), Some(1));
    }

    #[test]
    fn activation_round_trips_and_tolerates_strings() {
        let json = r#"{"RequestId":"r","Activation":{"ActivationId":"a","Disabled":"false",
            "RegisteredCount":"3","DeregisteredCount":1,"InstanceCount":10}}"#;
        let r: Option<DisableActivationResponse> = serde_json::from_str(json).ok();
        let a = r.and_then(|r| r.activation);
        assert_eq!(a.as_ref().and_then(|a| a.disabled), Some(false));
        assert_eq!(a.as_ref().and_then(|a| a.registered_count), Some(3));
        let back = a.as_ref().and_then(|a| serde_json::to_string(a).ok());
        assert!(back.is_some_and(|s| s.contains(r#""Disabled":false"#)));
    }

    #[test]
    fn error_envelope_and_missing_fields() {
        let e: Option<ErrorEnvelope> =
            serde_json::from_str(r#"{"Code":"InvalidInstance.NotFound","RequestId":"x"}"#).ok();
        assert_eq!(
            e.map(|e| e.code),
            Some("InvalidInstance.NotFound".to_owned())
        );
        let d: Option<DescribeActivationsResponse> = serde_json::from_str("{}").ok();
        assert_eq!(d.map(|d| d.activation_list.len()), Some(0));
        let bad: Result<ManagedInstance, _> = serde_json::from_str(r#"{"Connected":"maybe"}"#);
        assert!(bad.is_err());
    }
}
