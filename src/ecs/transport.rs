//! One signed Alibaba OpenAPI call over HTTP, shared by the ECS and STS
//! clients: sign afresh (new nonce and timestamp), send, and turn the answer
//! into a value or a typed [`ApiError`] (envelope, `x-acs-retry-after`,
//! transport failures without the signed URL).

use super::model::ErrorEnvelope;
use super::sign::{self, SignatureVersion, SigningInput};
use crate::credentials::Credentials;
use crate::domain::error::{ApiError, TransportKind};
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// A successful API answer, which names the RequestId it came with: the
/// body is decoded once, and the id read off the decoded value.
pub trait Answer: DeserializeOwned {
    /// The `RequestId` field (empty when the service left it out).
    fn request_id(&self) -> &str;
}

/// Where one API is served: the root URL every call is posted to, parsed once,
/// and the `Host` value the signature covers (`host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiHost {
    root: Url,
    host: String,
}

impl ApiHost {
    /// From an endpoint URL, scheme included (`https://ecs.example.com`,
    /// `http://127.0.0.1:8080/`); its path, if any, is dropped.
    pub fn parse(endpoint: &str) -> Result<Self, url::ParseError> {
        let url = Url::parse(endpoint)?;
        let name = url.host_str().ok_or(url::ParseError::EmptyHost)?;
        let host = match url.port() {
            Some(port) => format!("{name}:{port}"),
            None => name.to_owned(),
        };
        let root = Url::parse(&format!("{}://{host}/", url.scheme()))?;
        Ok(Self { root, host })
    }

    /// The `Host` header value, which is signed.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `POST` target for a call: the root with the signed query.
    pub fn url(&self, query: &str) -> Url {
        let mut url = self.root.clone();
        url.set_query(Some(query));
        url
    }
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
        // A signed API call is never redirected; skip the redirect layer's per-request cost.
        .redirect(reqwest::redirect::Policy::none())
        // Nor retried behind our back: a resend would reuse the signed nonce,
        // and the worker owns its retries. No retries also means reqwest does
        // not copy every request in case it needs one.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .tcp_nodelay(true)
        .build()
}

/// One signed Alibaba OpenAPI call (RPC style: parameters in the query, empty
/// body), shared by ECS and STS: sign afresh, send, read the error envelope.
pub struct SignedCall<'a> {
    /// The pooled client.
    pub http: &'a reqwest::Client,
    /// Where the API is served.
    pub api: &'a ApiHost,
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
    pub async fn send<T: Answer>(&self) -> Result<(T, Option<String>), ApiError> {
        let nonce = sign::new_nonce();
        let timestamp = sign::timestamp_now();
        let accept = [("accept".to_owned(), "application/json".to_owned())];
        let signed = sign::sign(
            self.signature,
            self.credentials,
            &SigningInput {
                action: self.action,
                version: self.version,
                host: self.api.host(),
                params: self.params,
                nonce: &nonce,
                timestamp: &timestamp,
                extra_signed_headers: &accept,
            },
        );
        // With OTel on, the request names the current (attempt) span as parent.
        let current = crate::telemetry::current_traceparent();
        let headers = header_map(&signed.headers, current.as_deref().or(self.traceparent))?;
        let request = self.http.post(self.api.url(&signed.query)).headers(headers);
        let span = tracing::Span::current();
        span.record("server.address", self.api.host());
        if let Some((_, region)) = self.params.iter().find(|(k, _)| k == "RegionId") {
            span.record("cloud.region", region.as_str());
        }
        let response = request.send().await.map_err(transport)?;
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        if let Some(id) = request_id_of_header(response.headers()) {
            span.record("ecs.request_id", id.as_str());
        }
        let answer = read_answer(response, self.action).await;
        if let Ok((_, Some(id))) = &answer {
            span.record("ecs.request_id", id.as_str());
        }
        answer
    }
}

/// The request's header fields: exactly the signer's (ACS3 signs every one of
/// them but `authorization`), plus the unsigned `traceparent`.
///
/// Each name goes in once, by `insert`: a server joins repeated field lines
/// into one value (RFC 9110 section 5.3), which is not the value that was
/// signed, so a second line of a signed header fails the signature
/// (CONTRACT section 4). A repeated name from the signer is a bug, reported
/// rather than sent. A value that cannot be a header (a control character in
/// a security token) is reported by name only: the value may be a secret.
fn header_map(
    signed: &[(String, String)],
    traceparent: Option<&str>,
) -> Result<HeaderMap, ApiError> {
    let mut map = HeaderMap::with_capacity(signed.len() + 1);
    let unsendable = |name: &str, why: &str| ApiError::Transport {
        kind: TransportKind::Other,
        message: format!("request header {name:?} {why}"),
    };
    let fields = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(traceparent.map(|tp| ("traceparent", tp)));
    for (name, value) in fields {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| unsendable(name, "is not a valid field name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| unsendable(name, "has a value that cannot be sent in a header"))?;
        if map.insert(header, value).is_some() {
            return Err(unsendable(name, "would be sent twice"));
        }
    }
    Ok(map)
}

fn request_id_of_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("x-acs-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Decodes a 2xx answer into `T`, or reads the error envelope.
async fn read_answer<T: Answer>(
    response: reqwest::Response,
    action: &str,
) -> Result<(T, Option<String>), ApiError> {
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
            message: format!("{} answer: {e}", action),
            request_id: request_id_of(&body),
        })?;
        let request_id = Some(value.request_id())
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        return Ok((value, request_id));
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

/// Sends an unsigned request (STS `AssumeRoleWithOIDC`) and reads the answer
/// like a signed one.
pub async fn send_unsigned<T: Answer>(
    request: reqwest::RequestBuilder,
    action: &str,
) -> Result<(T, Option<String>), ApiError> {
    let response = request.send().await.map_err(transport)?;
    read_answer(response, action).await
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
