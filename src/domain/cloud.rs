//! The cloud as the playbooks see it: the calls they make, one attempt each,
//! and what a call gives back. Implemented by the HTTP client (`ecs::client`)
//! and by the playbooks' scripted fake; retrying is the caller's business.

use super::error::ApiError;
use super::resource::{Activation, ManagedInstance};
use crate::command::{InstanceId, RegionId};
use std::future::Future;

/// A successful call's value and the RequestId that produced it.
#[derive(Debug, Clone)]
pub struct Called<T> {
    /// What the API returned.
    pub value: T,
    /// The API's RequestId.
    pub request_id: Option<String>,
}

/// A filter for DescribeManagedInstances (one of them, or none for "all in region").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceFilter {
    /// Every managed instance in the region (hostname resolution pages through these).
    All,
    /// `InstanceId.1`.
    InstanceId(String),
    /// `MachineId`.
    MachineId(String),
    /// `InstanceIp` (intranet or internet).
    InstanceIp(String),
    /// `ActivationId`.
    ActivationId(String),
}

/// One page of DescribeManagedInstances.
#[derive(Debug, Clone, Default)]
pub struct InstancePage {
    /// The instances on this page.
    pub instances: Vec<ManagedInstance>,
    /// Where the next page starts; `None` at the end.
    pub next_token: Option<String>,
}

/// The ECS calls the playbooks make; one attempt each (retries are the
/// [`Retrier`]'s job). Implemented by the HTTP client and by test fakes.
pub trait Cloud: Send + Sync {
    /// DeregisterManagedInstance with a ClientToken.
    fn deregister(
        &self,
        region: &RegionId,
        instance: &InstanceId,
        client_token: &str,
    ) -> impl Future<Output = Result<Called<Option<ManagedInstance>>, ApiError>> + Send;
    /// DisableActivation.
    fn disable_activation(
        &self,
        region: &RegionId,
        activation_id: &str,
    ) -> impl Future<Output = Result<Called<Option<Activation>>, ApiError>> + Send;
    /// DeleteActivation.
    fn delete_activation(
        &self,
        region: &RegionId,
        activation_id: &str,
    ) -> impl Future<Output = Result<Called<Option<Activation>>, ApiError>> + Send;
    /// DescribeActivations for one id (read-only, for dry runs).
    fn describe_activation(
        &self,
        region: &RegionId,
        activation_id: &str,
    ) -> impl Future<Output = Result<Called<Option<Activation>>, ApiError>> + Send;
    /// One page of DescribeManagedInstances.
    fn describe_instances(
        &self,
        region: &RegionId,
        filter: &InstanceFilter,
        next_token: Option<&str>,
    ) -> impl Future<Output = Result<Called<InstancePage>, ApiError>> + Send;
}
