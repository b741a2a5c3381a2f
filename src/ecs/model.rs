//! The ECS `2014-05-26` wire model for the Cloud Assistant operations the worker uses.
//!
//! Shared by the client (deserializing answers) and the simulator (serializing them),
//! so both speak exactly one JSON shape, taken from the official API reference and
//! SDK models: lists are plain arrays (`"Instances": [...]`, `"ActivationList": [...]`).
//! The API may omit fields and may send numbers and booleans as strings, so every
//! field is optional or defaulted and the scalar ones go through [`de`].

use super::transport::Answer;
use crate::domain::lenient as de;
use crate::domain::resource::{Activation, ManagedInstance};
use serde::{Deserialize, Serialize};

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
