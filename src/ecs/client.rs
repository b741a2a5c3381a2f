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
use std::time::Duration;

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

/// Timeouts for the HTTP client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// The whole request.
    pub request: Duration,
}

/// Builds the pooled HTTP client both the ECS and the STS clients use.
pub fn http_client(timeouts: Timeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
}

/// One signed Alibaba OpenAPI call (RPC style: parameters in the query, empty
/// body), shared by ECS and STS: sign afresh, send, read the error envelope.
pub struct SignedCall<'a> {
    /// The pooled client.
    pub http: &'a reqwest::Client,
    /// Base URL, e.g. `https://ecs.cn-beijing.aliyuncs.com`.
    pub base: &'a str,
    /// The Host header value (signed).
    pub host: &'a str,
    /// Signature scheme.
    pub signature: SignatureVersion,
    /// Who signs.
    pub credentials: &'a Credentials,
    /// API version, e.g. `2014-05-26`.
    pub version: &'a str,
    /// The action name.
    pub action: &'a str,
    /// The API parameters.
    pub params: &'a [(String, String)],
    /// W3C trace context to propagate.
    pub traceparent: Option<&'a str>,
}

impl SignedCall<'_> {
    /// Sends the call and decodes a 2xx answer into `T`.
    pub async fn send<T: DeserializeOwned>(&self) -> Result<(T, Option<String>), ApiError> {
        let nonce = sign::new_nonce();
        let timestamp = sign::timestamp_now();
        let accept = [("accept".to_owned(), "application/json".to_owned())];
        let signed = sign::sign(
            self.signature,
            self.credentials,
            &SigningInput {
                action: self.action,
                version: self.version,
                host: self.host,
                params: self.params,
                nonce: &nonce,
                timestamp: &timestamp,
                extra_signed_headers: &accept,
            },
        );
        let mut request = self
            .http
            .post(format!("{}/?{}", self.base, signed.query))
            .header("accept", "application/json");
        for (name, value) in &signed.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(tp) = self.traceparent {
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
                message: format!("{} answer: {e}", self.action),
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
    pub async fn call<T: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        action: ApiAction,
        region: &str,
        mut params: Vec<(String, String)>,
        traceparent: Option<&str>,
    ) -> Result<(T, Option<String>), ApiError> {
        params.push(("RegionId".into(), region.to_owned()));
        let (base, host) = self.endpoint.resolve(region);
        SignedCall {
            http: &self.http,
            base: &base,
            host: &host,
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

/// The client as the playbooks see it, carrying the command's identity and trace context.
pub struct TracedClient<'a> {
    client: &'a EcsClient,
    credentials: Credentials,
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
