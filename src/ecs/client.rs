//! The ECS HTTP client: one signed attempt per call, a pooled connection per host.
//!
//! Retrying is deliberately not done here: the worker owns its retries (see
//! [`crate::retry`]), and each retry must be signed afresh (new nonce, new
//! timestamp), which calling [`EcsClient::call`] again does.

use super::endpoint::Endpoint;
use super::model::{
    DeleteActivationResponse, DeregisterManagedInstanceResponse, DescribeActivationsResponse,
    DescribeManagedInstancesResponse, DisableActivationResponse,
};
use super::sign::SignatureVersion;
use super::transport::Answer;
use super::transport::SignedCall;
pub use super::transport::{Timeouts, http_client};
use crate::command::{InstanceId, RegionId};
use crate::credentials::Credentials;
use crate::domain::cloud::{Called, Cloud, InstanceFilter, InstancePage};
use crate::domain::error::{ApiAction, ApiError, TransportKind};
use crate::domain::resource::{Activation, ManagedInstance};

/// The API version every call uses.
pub const API_VERSION: &str = "2014-05-26";

/// Page size for DescribeManagedInstances (the API's maximum).
pub const PAGE_SIZE: u32 = 50;

/// A configured ECS client. Cheap to clone (the connection pool is shared).
///
/// It holds no credentials: each command resolves its identity (the default
/// credentials, or a role session for its `account_id`) and calls through
/// [`EcsClient::traced`].
#[derive(Clone)]
pub struct EcsClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    signature: SignatureVersion,
}

impl EcsClient {
    /// A client for `endpoint`, signing with `signature`.
    pub fn new(
        endpoint: Endpoint,
        signature: SignatureVersion,
        timeouts: Timeouts,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: http_client(timeouts)?,
            endpoint,
            signature,
        })
    }

    /// One signed attempt of `action` in `region`, decoded into `T`.
    pub async fn call<T: Answer>(
        &self,
        credentials: &Credentials,
        action: ApiAction,
        region: &str,
        mut params: Vec<(String, String)>,
        traceparent: Option<&str>,
    ) -> Result<(T, Option<String>), ApiError> {
        params.push(("RegionId".into(), region.to_owned()));
        let api = self
            .endpoint
            .resolve(region)
            .map_err(|e| ApiError::Transport {
                kind: TransportKind::Other,
                message: format!("no endpoint for region {region}: {e}"),
            })?;
        SignedCall {
            http: &self.http,
            api: &api,
            signature: self.signature,
            credentials,
            version: API_VERSION,
            action: action.as_str(),
            params: &params,
            traceparent,
        }
        .send()
        .await
    }

    /// The preflight's read-only call (`check`): `DescribeManagedInstances`
    /// with `MaxResults` 1, one attempt, no retry. Returns the RequestId.
    pub async fn probe(
        &self,
        credentials: &Credentials,
        region: &str,
    ) -> Result<Option<String>, ApiError> {
        let (_, request_id): (DescribeManagedInstancesResponse, _) = self
            .call(
                credentials,
                ApiAction::DescribeManagedInstances,
                region,
                vec![p("MaxResults", "1")],
                None,
            )
            .await?;
        Ok(request_id)
    }

    /// The client as one command sees it: its identity and its trace context.
    pub fn traced(
        &self,
        credentials: Credentials,
        traceparent: Option<String>,
    ) -> TracedClient<'_> {
        TracedClient {
            client: self,
            credentials,
            traceparent,
        }
    }
}

/// The client as the playbooks see it, carrying the command's identity and trace context.
pub struct TracedClient<'a> {
    client: &'a EcsClient,
    credentials: Credentials,
    traceparent: Option<String>,
}

impl TracedClient<'_> {
    async fn call<T: Answer>(
        &self,
        action: ApiAction,
        region: &RegionId,
        params: Vec<(String, String)>,
    ) -> Result<(T, Option<String>), ApiError> {
        self.client
            .call(
                &self.credentials,
                action,
                region.as_str(),
                params,
                self.traceparent.as_deref(),
            )
            .await
    }
}

fn p(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

impl Cloud for TracedClient<'_> {
    async fn deregister(
        &self,
        region: &RegionId,
        instance: &InstanceId,
        client_token: &str,
    ) -> Result<Called<Option<ManagedInstance>>, ApiError> {
        let params = vec![
            p("InstanceId", instance.as_str()),
            p("ClientToken", client_token),
        ];
        let (r, request_id): (DeregisterManagedInstanceResponse, _) = self
            .call(ApiAction::DeregisterManagedInstance, region, params)
            .await?;
        Ok(Called {
            value: r.instance,
            request_id,
        })
    }

    async fn disable_activation(
        &self,
        region: &RegionId,
        activation_id: &str,
    ) -> Result<Called<Option<Activation>>, ApiError> {
        let params = vec![p("ActivationId", activation_id)];
        let (r, request_id): (DisableActivationResponse, _) = self
            .call(ApiAction::DisableActivation, region, params)
            .await?;
        Ok(Called {
            value: r.activation,
            request_id,
        })
    }

    async fn delete_activation(
        &self,
        region: &RegionId,
        activation_id: &str,
    ) -> Result<Called<Option<Activation>>, ApiError> {
        let params = vec![p("ActivationId", activation_id)];
        let (r, request_id): (DeleteActivationResponse, _) = self
            .call(ApiAction::DeleteActivation, region, params)
            .await?;
        Ok(Called {
            value: r.activation,
            request_id,
        })
    }

    async fn describe_activation(
        &self,
        region: &RegionId,
        activation_id: &str,
    ) -> Result<Called<Option<Activation>>, ApiError> {
        let params = vec![p("ActivationId", activation_id)];
        let (r, request_id): (DescribeActivationsResponse, _) = self
            .call(ApiAction::DescribeActivations, region, params)
            .await?;
        let found = r
            .activation_list
            .into_iter()
            .find(|a| a.activation_id.eq_ignore_ascii_case(activation_id));
        Ok(Called {
            value: found,
            request_id,
        })
    }

    async fn describe_instances(
        &self,
        region: &RegionId,
        filter: &InstanceFilter,
        next_token: Option<&str>,
    ) -> Result<Called<InstancePage>, ApiError> {
        let mut params = vec![p("MaxResults", &PAGE_SIZE.to_string())];
        match filter {
            InstanceFilter::All => {}
            InstanceFilter::InstanceId(id) => params.push(p("InstanceId.1", id)),
            InstanceFilter::MachineId(m) => params.push(p("MachineId", m)),
            InstanceFilter::InstanceIp(ip) => params.push(p("InstanceIp", ip)),
            InstanceFilter::ActivationId(a) => params.push(p("ActivationId", a)),
        }
        if let Some(token) = next_token {
            params.push(p("NextToken", token));
        }
        let (r, request_id): (DescribeManagedInstancesResponse, _) = self
            .call(ApiAction::DescribeManagedInstances, region, params)
            .await?;
        Ok(Called {
            value: InstancePage {
                instances: r.instances,
                next_token: r.next_token,
            },
            request_id,
        })
    }
}
