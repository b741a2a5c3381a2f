//! HTTP front of the simulator: the signed API at `/` and the control plane at `/_sim/`.
//!
//! Shared state sits behind short-held std mutexes (never across an await); the
//! signature check, serialization and injected latency all run outside them.

use super::actions::{self, Answer, ApiError};
use super::faults::{FaultSettings, Outage};
use super::state::{Seed, StateView, World};
use super::sts::Sts;
use crate::ecs::model::ErrorEnvelope;
use crate::ecs::sign::{self, IncomingRequest, SignatureVersion};
use crate::secret::Secret;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// How far a request timestamp may be from the simulator's clock.
const TIMESTAMP_WINDOW_SECS: i64 = 15 * 60;
/// Most nonces remembered; past it the oldest are forgotten first.
const NONCE_CAPACITY: usize = 1 << 20;
/// Most request-log entries kept; the oldest are dropped first.
const LOG_CAPACITY: usize = 100_000;

/// Everything the handlers share.
pub struct Shared {
    pub(crate) world: Mutex<World>,
    pub(crate) keys: RwLock<HashMap<String, Secret>>,
    pub(crate) faults: RwLock<FaultSettings>,
    pub(crate) allowed_regions: Vec<String>,
    pub(crate) sts: Mutex<Sts>,
    nonces: Mutex<NonceStore>,
    log: Mutex<VecDeque<LogEntry>>,
    seq: AtomicU64,
    /// API requests received and not yet answered: a test that must act
    /// while a call is in flight (a crash mid-call) waits on this, not a clock.
    in_flight: AtomicU64,
    /// Whether API calls are held (`FaultSettings::hold`), as a channel the
    /// held calls wait on.
    hold: tokio::sync::watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another handler panicked mid-update; the data are
    // plain maps that stay usable, and the simulator must keep answering.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// State for a new simulator.
    pub fn new(
        world: World,
        keys: Vec<(String, Secret)>,
        allowed_regions: Vec<String>,
        faults: FaultSettings,
    ) -> Self {
        let (hold, _) = tokio::sync::watch::channel(faults.hold);
        Self {
            hold,
            world: Mutex::new(world),
            keys: RwLock::new(keys.into_iter().collect()),
            faults: RwLock::new(faults),
            allowed_regions,
            sts: Mutex::new(Sts::default()),
            nonces: Mutex::new(NonceStore::default()),
            log: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    fn secret_for(&self, id: &str) -> Option<Secret> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
            .or_else(|| lock(&self.sts).secret_for(id))
    }
}

/// Nonces seen within the timestamp window, in arrival order, bounded in number.
#[derive(Default)]
struct NonceStore {
    seen: HashSet<Box<str>>,
    order: VecDeque<(i64, Box<str>)>,
}

impl NonceStore {
    /// Records `nonce`; false when it was already used within the window.
    fn insert(&mut self, nonce: &str, now: i64) -> bool {
        while let Some((at, _)) = self.order.front() {
            if *at >= now - 2 * TIMESTAMP_WINDOW_SECS && self.order.len() < NONCE_CAPACITY {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains(nonce) {
            return false;
        }
        let boxed: Box<str> = nonce.into();
        self.seen.insert(boxed.clone());
        self.order.push_back((now, boxed));
        true
    }
}

/// One API call as the control plane reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Arrival order, from 1.
    pub seq: u64,
    /// The action, as far as it could be read.
    pub action: String,
    /// The API parameters (empty when the signature was refused).
    pub params: BTreeMap<String, String>,
    /// The AccessKey id, when the signature verified.
    pub access_key_id: Option<String>,
    /// The signature scheme, when it verified.
    pub signature_version: Option<SignatureVersion>,
    /// The HTTP status answered.
    pub http_status: u16,
    /// The error code, or `OK`.
    pub code: String,
    /// The role whose AssumeRole session signed the call, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// The router for both the API and the control plane.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(api).post(api))
        .route("/_sim/requests", get(get_requests).delete(clear_requests))
        .route("/_sim/state", get(get_state).put(put_state))
        .route("/_sim/in-flight", get(get_in_flight))
        .route(
            "/_sim/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/_sim/keys", axum::routing::post(add_key))
        .route(
            "/_sim/roles",
            axum::routing::post(put_role).delete(remove_role),
        )
        .route("/_sim/keys/{id}", delete(revoke_key))
        .route(
            "/_sim/oidc-providers",
            axum::routing::post(put_oidc_provider),
        )
        .with_state(shared)
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4()
        .hyphenated()
        .to_string()
        .to_ascii_uppercase()
}

fn json_response(status: u16, body: Vec<u8>, retry_after_ms: Option<u64>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Some(ms) = retry_after_ms {
        h.insert("x-acs-retry-after", HeaderValue::from(ms));
    }
    resp
}

fn error_response(err: &ApiError, request_id: String, host: &str) -> Response {
    let env = ErrorEnvelope {
        recommend: format!(
            "https://api.aliyun.com/troubleshoot?q={}&product=Ecs&requestId={request_id}",
            err.code
        ),
        request_id,
        host_id: host.to_owned(),
        code: err.code.to_string(),
        message: err.message.clone(),
    };
    let body = serde_json::to_vec(&env).unwrap_or_default();
    json_response(err.status, body, err.retry_after_ms)
}

/// A response whose body fails at once, so hyper aborts the connection.
fn aborted() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated outage"))
    });
    let mut resp = Response::new(Body::from_stream(failing));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Everything a call produced, for the answer and the log.
struct Outcome {
    action: String,
    params: Vec<(String, String)>,
    key: Option<String>,
    version: Option<SignatureVersion>,
    role_arn: Option<String>,
    result: Result<Answer, ApiError>,
}

/// Counts a request in flight for as long as it lives (also when the client
/// goes away and the handler is dropped).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn get_in_flight(State(sim): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "in_flight": sim.in_flight.load(Ordering::SeqCst) }))
}

async fn api(
    State(sim): State<Arc<Shared>>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&sim.in_flight);
    let mut hold = sim.hold.subscribe();
    // Only an error when the sender is gone, which `sim` outlives.
    let _ = hold.wait_for(|held| !*held).await;
    let (latency, outage) = {
        let f = sim
            .faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (f.latency_ms, f.outage)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if outage == Some(Outage::Refuse) {
        return aborted();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("ecs.aliyuncs.com")
        .to_owned();
    let request_id = new_request_id();
    let outcome = handle(
        &sim,
        &method,
        query.as_deref().unwrap_or(""),
        &headers,
        &body,
        outage,
        &request_id,
    );
    if outcome.action == "AssumeRole" {
        let role = outcome.params.iter().find(|(k, _)| k == "RoleArn");
        let delay = role.and_then(|(_, arn)| lock(&sim.sts).delay_of(arn));
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    let (status, code, response) = match &outcome.result {
        Ok(answer) => match serde_json::to_vec(answer) {
            Ok(bytes) => (200, "OK".to_owned(), json_response(200, bytes, None)),
            Err(_) => {
                let e = ApiError::new(
                    500,
                    "InternalError",
                    "The request processing has failed due to some unknown error.",
                );
                (
                    500,
                    e.code.to_string(),
                    error_response(&e, request_id, &host),
                )
            }
        },
        Err(e) => (
            e.status,
            e.code.to_string(),
            error_response(e, request_id, &host),
        ),
    };
    let entry = LogEntry {
        seq: sim.seq.fetch_add(1, Ordering::Relaxed) + 1,
        action: outcome.action,
        params: outcome.params.into_iter().collect(),
        access_key_id: outcome.key,
        signature_version: outcome.version,
        http_status: status,
        code,
        role_arn: outcome.role_arn,
    };
    let mut log = lock(&sim.log);
    if log.len() >= LOG_CAPACITY {
        log.pop_front();
    }
    log.push_back(entry);
    drop(log);
    response
}

fn claimed_action(query: &str, headers: &HeaderMap) -> String {
    if let Some(a) = headers.get("x-acs-action").and_then(|v| v.to_str().ok()) {
        return a.to_owned();
    }
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn handle(
    sim: &Shared,
    method: &Method,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    outage: Option<Outage>,
    request_id: &str,
) -> Outcome {
    let mut out = Outcome {
        action: claimed_action(query, headers),
        params: Vec::new(),
        key: None,
        version: None,
        role_arn: None,
        result: Err(super::faults::unavailable()),
    };
    if outage == Some(Outage::Unavailable) {
        return out;
    }
    if out.action == "AssumeRoleWithOIDC" {
        // Anonymous, as in STS: parameters in the query and the form body.
        out.params = url::form_urlencoded::parse(query.as_bytes())
            .chain(url::form_urlencoded::parse(body))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        out.result = lock(&sim.sts)
            .assume_role_with_oidc(&out.params, time::OffsetDateTime::now_utc(), request_id)
            .map(Answer::AssumeRole);
        // The request log is readable by anyone: keep the bearer token out of it.
        for (k, v) in &mut out.params {
            if k == "OIDCToken" {
                *v = "[redacted]".into();
            }
        }
        return out;
    }
    let req = IncomingRequest {
        method: method.as_str(),
        path: "/",
        raw_query: query,
        headers,
        body,
    };
    let call = match sign::verify(&req, |id| sim.secret_for(id)) {
        Ok(call) => call,
        Err(e) => {
            out.result = Err(ApiError {
                status: e.http_status(),
                code: e.code().into(),
                message: e.to_string(),
                retry_after_ms: None,
            });
            return out;
        }
    };
    out.action.clone_from(&call.action);
    out.key = Some(call.access_key_id.clone());
    out.version = Some(call.signature_version);
    out.params = call.params;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match lock(&sim.sts).check(&call.access_key_id, call.security_token.as_ref(), now) {
        Ok(role) => out.role_arn = role,
        Err(e) => {
            out.result = Err(e);
            return out;
        }
    }
    out.result = check_and_run(
        sim,
        &call.action,
        &out.params,
        &call.timestamp,
        &call.nonce,
        request_id,
    );
    out
}

fn check_and_run(
    sim: &Shared,
    action: &str,
    params: &[(String, String)],
    timestamp: &str,
    nonce: &str,
    request_id: &str,
) -> Result<Answer, ApiError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let Some(ts) = sign::parse_timestamp(timestamp) else {
        return Err(ApiError::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        ));
    };
    if (ts.unix_timestamp() - now).abs() > TIMESTAMP_WINDOW_SECS {
        return Err(ApiError::new(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    if !lock(&sim.nonces).insert(nonce, now) {
        return Err(ApiError::new(
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        ));
    }
    if action == "AssumeRole" {
        return lock(&sim.sts)
            .assume_role(params, time::OffsetDateTime::now_utc(), request_id)
            .map(Answer::AssumeRole);
    }
    actions::precheck(action, params, &sim.allowed_regions)?;
    {
        let quiet = sim
            .faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_quiet();
        if !quiet {
            let mut f = sim
                .faults
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(err) = f.pick(action) {
                return Err(err);
            }
        }
    }
    actions::execute(&mut lock(&sim.world), action, params, request_id)
}

async fn get_requests(State(sim): State<Arc<Shared>>) -> impl IntoResponse {
    let log: Vec<LogEntry> = lock(&sim.log).iter().cloned().collect();
    axum::Json(log)
}

async fn clear_requests(State(sim): State<Arc<Shared>>) -> StatusCode {
    lock(&sim.log).clear();
    StatusCode::NO_CONTENT
}

async fn get_state(State(sim): State<Arc<Shared>>) -> axum::Json<StateView> {
    axum::Json(lock(&sim.world).view())
}

fn bad_request(reason: String) -> Response {
    let body = serde_json::json!({ "error": reason });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn put_state(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Seed::from_json(&text) {
        Ok(seed) => {
            *lock(&sim.world) = World::from_seed(seed);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e.to_string()),
    }
}

async fn get_faults(State(sim): State<Arc<Shared>>) -> axum::Json<FaultSettings> {
    axum::Json(
        sim.faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    )
}

async fn set_faults(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed: Result<FaultSettings, String> =
        serde_json::from_slice(&body).map_err(|e| e.to_string());
    match parsed.and_then(|f| f.validate().map(|()| f)) {
        Ok(f) => {
            sim.hold.send_replace(f.hold);
            *sim.faults
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = f;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(State(sim): State<Arc<Shared>>) -> StatusCode {
    sim.hold.send_replace(false);
    *sim.faults
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = FaultSettings::default();
    StatusCode::NO_CONTENT
}

/// The body of `POST /_sim/keys`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct NewKey {
    access_key_id: String,
    access_key_secret: Secret,
}

async fn add_key(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<NewKey>(&body) {
        Ok(k) if !k.access_key_id.is_empty() && !k.access_key_secret.is_empty() => {
            sim.keys
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(k.access_key_id, k.access_key_secret);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => bad_request("AccessKeyId and AccessKeySecret must not be empty".into()),
        // serde's message names the field, never the secret value.
        Err(e) => bad_request(e.to_string()),
    }
}

async fn revoke_key(State(sim): State<Arc<Shared>>, Path(id): Path<String>) -> StatusCode {
    let removed = sim
        .keys
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&id);
    if removed.is_some() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// The body of `POST /_sim/roles`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RoleRule {
    role_arn: String,
    #[serde(default)]
    denied: bool,
    /// Answer AssumeRole for this role only after this long (a slow STS).
    #[serde(default)]
    delay_ms: u64,
}

async fn put_role(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<RoleRule>(&body) {
        Ok(r) if !r.role_arn.is_empty() => {
            lock(&sim.sts).put_role(r.role_arn, r.denied, r.delay_ms);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => bad_request("RoleArn must not be empty".into()),
        Err(e) => bad_request(e.to_string()),
    }
}

/// The body of `POST /_sim/oidc-providers`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct OidcProviderRule {
    provider_arn: String,
    #[serde(default)]
    token: Option<String>,
}

async fn put_oidc_provider(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<OidcProviderRule>(&body) {
        Ok(r) if !r.provider_arn.is_empty() => {
            lock(&sim.sts).put_oidc_provider(r.provider_arn, r.token);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => bad_request("ProviderArn must not be empty".into()),
        Err(e) => bad_request(e.to_string()),
    }
}

async fn remove_role(State(sim): State<Arc<Shared>>, RawQuery(query): RawQuery) -> StatusCode {
    let arn = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "RoleArn")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if lock(&sim.sts).remove_role(&arn) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_store_refuses_reuse_and_forgets_old_ones() {
        let mut s = NonceStore::default();
        assert!(s.insert("a", 1000));
        assert!(!s.insert("a", 1001));
        assert!(s.insert("b", 1001));
        // Past the window, "a" is forgotten and the store shrinks.
        assert!(s.insert("c", 1001 + 2 * TIMESTAMP_WINDOW_SECS + 1));
        assert_eq!(s.seen.len(), 1);
    }
}
