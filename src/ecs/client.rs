//! The ECS HTTP client: one signed attempt per call, a pooled connection per host.
//!
//! Retrying is deliberately not done here: the worker owns its retries (see
//! [`crate::retry`]), and each retry must be signed afresh (new nonce, new
//! timestamp), which calling [`EcsClient::call`] again does.

use super::endpoint::Endpoint;
use super::error::{ApiAction, ApiError, TransportKind};
use super::model::{
    Activation, DeleteActivationResponse, DeregisterManagedInstanceResponse,
    DescribeActivationsResponse, DescribeManagedInstancesResponse, DisableActivationResponse,
    ErrorEnvelope, ManagedInstance,
};
use super::sign::{self, SignatureVersion, SigningInput};
use crate::command::{InstanceId, RegionId};
use crate::credentials::Credentials;
use crate::playbook::{Called, Cloud, InstanceFilter, InstancePage};
use serde::de::DeserializeOwned;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The API version every call uses.
pub const API_VERSION: &str = "2014-05-26";

/// Page size for DescribeManagedInstances (the API's maximum).
pub const PAGE_SIZE: u32 = 50;

/// A configured ECS client. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct EcsClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    signature: SignatureVersion,
    credentials: Arc<RwLock<Option<Credentials>>>,
}

/// Timeouts for the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The whole request.
    pub request: Duration,
}

impl EcsClient {
    /// A client for `endpoint`, signing with `signature` and `credentials`
    /// (`None`: every call fails as a credential problem until keys are set).
    pub fn new(
        endpoint: Endpoint,
        signature: SignatureVersion,
        credentials: Option<Credentials>,
        timeouts: Timeouts,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            endpoint,
            signature,
            credentials: Arc::new(RwLock::new(credentials)),
        })
    }

    /// Replaces the credentials (key rotation without a restart).
    pub fn set_credentials(&self, credentials: Option<Credentials>) {
        if let Ok(mut slot) = self.credentials.write() {
            *slot = credentials;
        }
    }

    fn current_credentials(&self) -> Result<Credentials, ApiError> {
        self.credentials
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| ApiError::Credentials {
                message: "no Alibaba Cloud credentials are configured".into(),
                code: None,
            })
    }

    /// One signed attempt of `action` in `region`, decoded into `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: ApiAction,
        region: &str,
        mut params: Vec<(String, String)>,
        traceparent: Option<&str>,
    ) -> Result<(T, Option<String>), ApiError> {
        let credentials = self.current_credentials()?;
        params.push(("RegionId".into(), region.to_owned()));
        let (base, host) = self.endpoint.resolve(region);
        let nonce = sign::new_nonce();
        let timestamp = sign::timestamp_now();
        let accept = [("accept".to_owned(), "application/json".to_owned())];
        let signed = sign::sign(
            self.signature,
            &credentials,
            &SigningInput {
                action: action.as_str(),
                version: API_VERSION,
                host: &host,
                params: &params,
                nonce: &nonce,
                timestamp: &timestamp,
                extra_signed_headers: &accept,
            },
        );
        let mut request = self
            .http
            .post(format!("{base}/?{}", signed.query))
            .header("accept", "application/json");
        for (name, value) in &signed.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("x-acs-retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let body = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            let value: T = serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
                http_status: status,
                message: format!("{} answer: {e}", action.as_str()),
                request_id: request_id_of(&body),
            })?;
            return Ok((value, request_id_of(&body)));
        }
        Err(match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) if !envelope.code.is_empty() => ApiError::Api {
                http_status: status,
                code: envelope.code,
                message: envelope.message,
                request_id: Some(envelope.request_id).filter(|r| !r.is_empty()),
                retry_after,
            },
            // No envelope: an HTTP-level failure (proxy, load balancer).
            _ => ApiError::Api {
                http_status: status,
                code: if status >= 500 {
                    "ServiceUnavailable".into()
                } else {
                    format!("Http{status}")
                },
                message: format!("HTTP {status} without an error envelope"),
                request_id: None,
                retry_after,
            },
        })
    }

    /// A view of this client that sends `traceparent` with every call.
    pub fn traced(&self, traceparent: Option<String>) -> TracedClient<'_> {
        TracedClient {
            client: self,
            traceparent,
        }
    }
}

fn request_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Rid {
        #[serde(rename = "RequestId")]
        request_id: Option<String>,
    }
    serde_json::from_slice::<Rid>(body)
        .ok()
        .and_then(|r| r.request_id)
}

/// Maps a reqwest failure without its URL (the query carries a signature).
fn transport(e: reqwest::Error) -> ApiError {
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::Other
    };
    ApiError::Transport {
        kind,
        message: e.without_url().to_string(),
    }
}

/// The client as the playbooks see it, carrying the command's trace context.
pub struct TracedClient<'a> {
    client: &'a EcsClient,
    traceparent: Option<String>,
}

impl TracedClient<'_> {
    async fn call<T: DeserializeOwned>(
        &self,
        action: ApiAction,
        region: &RegionId,
        params: Vec<(String, String)>,
    ) -> Result<(T, Option<String>), ApiError> {
        self.client
            .call(action, region.as_str(), params, self.traceparent.as_deref())
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
