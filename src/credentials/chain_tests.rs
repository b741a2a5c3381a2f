//! Every source of the default chain, precedence between them, renewal on a
//! controlled clock, failing services and single-flight refresh. Services are
//! real HTTP: the simulator's STS and a counting fake metadata service.

use super::*;
use crate::ecs::sign::SignatureVersion;
use crate::simulator::{self, FaultSettings, SimulatorConfig, SimulatorHandle};
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicUsize, Ordering};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const BASE_ID: &str = "LTAIbase";
const BASE_SECRET: &str = "base-secret-value";
const META_SECRET: &str = "meta-secret-value";
const META_TOKEN: &str = "meta-sts-token-value";
const ROLE: &str = "acs:ram::1234567890:role/lifecycle-worker";
const OIDC_PROVIDER: &str = "acs:ram::1234567890:oidc-provider/ack-rrsa";

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

/// A clock the test moves, in minutes from now.
fn test_clock() -> (Clock, Arc<AtomicI64>) {
    let start = OffsetDateTime::now_utc();
    let offset = Arc::new(AtomicI64::new(0));
    let o = Arc::clone(&offset);
    let clock: Clock = Arc::new(move || start + time::Duration::minutes(o.load(Ordering::SeqCst)));
    (clock, offset)
}

async fn sim() -> SimulatorHandle {
    let sim = simulator::start(SimulatorConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        seed: None,
        keys: vec![(BASE_ID.to_owned(), Secret::new(BASE_SECRET))],
        allowed_regions: vec!["cn-hangzhou".into()],
        faults: FaultSettings::default(),
    })
    .await
    .expect("simulator");
    control(&sim, "/_sim/roles", serde_json::json!({"RoleArn": ROLE})).await;
    sim
}

async fn control(sim: &SimulatorHandle, path: &str, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", sim.endpoint()))
        .json(&body)
        .send()
        .await
        .expect("control plane");
    assert!(r.status().is_success(), "{path}: {}", r.status());
}

async fn sim_requests(sim: &SimulatorHandle, action: &str) -> Vec<serde_json::Value> {
    let all: Vec<serde_json::Value> = reqwest::get(format!("{}/_sim/requests", sim.endpoint()))
        .await
        .expect("requests")
        .json()
        .await
        .expect("json");
    all.into_iter().filter(|r| r["action"] == action).collect()
}

/// The fake metadata service: how it answers and what it was asked.
#[derive(Default)]
struct Meta {
    /// 0 ok, 1 HTTP 500, 2 bad JSON, 3 Code not Success.
    mode: AtomicU8,
    tokens: AtomicUsize,
    role_lists: AtomicUsize,
    fetches: AtomicUsize,
    expiration: Mutex<String>,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

async fn fake_metadata(expires_in_minutes: i64) -> (String, Arc<Meta>) {
    let meta = Arc::new(Meta::default());
    *meta.expiration.lock().expect("lock") = (OffsetDateTime::now_utc()
        + time::Duration::minutes(expires_in_minutes))
    .replace_nanosecond(0)
    .expect("ns")
    .format(&Rfc3339)
    .expect("fmt");
    let router = Router::new()
        .route(
            "/latest/api/token",
            put(|State(m): State<Arc<Meta>>, h: HeaderMap| async move {
                m.tokens.fetch_add(1, Ordering::SeqCst);
                if h.get("x-aliyun-ecs-metadata-token-ttl-seconds").is_none() {
                    return (StatusCode::BAD_REQUEST, String::new());
                }
                (StatusCode::OK, "imds-token".to_owned())
            }),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/",
            get(|State(m): State<Arc<Meta>>, h: HeaderMap| async move {
                m.role_lists.fetch_add(1, Ordering::SeqCst);
                if h.get("x-aliyun-ecs-metadata-token").is_none() {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                (StatusCode::OK, "EcsRole\n".to_owned())
            }),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/{role}",
            get(
                |State(m): State<Arc<Meta>>, UrlPath(role): UrlPath<String>, h: HeaderMap| async move {
                    let n = m.fetches.fetch_add(1, Ordering::SeqCst);
                    // Slow enough that concurrent callers overlap.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let token_ok = h
                        .get("x-aliyun-ecs-metadata-token")
                        .is_some_and(|t| t == "imds-token");
                    if role != "EcsRole" || !token_ok {
                        return (StatusCode::NOT_FOUND, String::new());
                    }
                    let expiration = m.expiration.lock().expect("lock").clone();
                    match m.mode.load(Ordering::SeqCst) {
                        1 => (StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned()),
                        2 => (
                            StatusCode::OK,
                            format!("{{\"AccessKeySecret\": {META_SECRET:?}, \"Code\": "),
                        ),
                        3 => (
                            StatusCode::OK,
                            serde_json::json!({"Code": "Failed", "AccessKeySecret": META_SECRET})
                                .to_string(),
                        ),
                        _ => (
                            StatusCode::OK,
                            serde_json::json!({
                                "AccessKeyId": format!("STS.meta{n}"),
                                "AccessKeySecret": META_SECRET,
                                "SecurityToken": META_TOKEN,
                                "Expiration": expiration,
                                "LastUpdated": "2024-01-01T00:00:00Z",
                                "Code": "Success",
                            })
                            .to_string(),
                        ),
                    }
                },
            ),
        )
        .route(
            "/uri",
            get(|State(m): State<Arc<Meta>>| async move {
                let n = m.fetches.fetch_add(1, Ordering::SeqCst);
                let expiration = m.expiration.lock().expect("lock").clone();
                axum::Json(serde_json::json!({
                    "AccessKeyId": format!("STS.uri{n}"),
                    "AccessKeySecret": META_SECRET,
                    "SecurityToken": META_TOKEN,
                    "Expiration": expiration,
                    "Code": "Success",
                }))
            }),
        )
        .with_state(Arc::clone(&meta));
    (serve(router).await, meta)
}

fn sources(sts_endpoint: &str, metadata: &str, clock: Clock) -> Sources {
    let http = reqwest::Client::new();
    let sts =
        StsClient::new(http.clone(), sts_endpoint, SignatureVersion::Acs3HmacSha256).expect("sts");
    Sources {
        http,
        sts,
        metadata_endpoint: metadata.to_owned(),
        imdsv1_disabled: false,
        clock,
    }
}

/// Sources whose services are all unreachable (nothing listens on port 9).
fn offline() -> Sources {
    sources("http://127.0.0.1:9", "http://127.0.0.1:9", system_clock())
}

fn write(path: &std::path::Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn cli_config(home: &std::path::Path, json: serde_json::Value) {
    write(&home.join(".aliyun/config.json"), &json.to_string());
}

fn ini(home: &std::path::Path, text: &str) {
    write(&home.join(".alibabacloud/credentials"), text);
}

async fn chosen(chain: &Chain) -> (&'static str, Credentials) {
    let c = chain.credentials().await.expect("credentials");
    (chain.name(), c)
}

#[tokio::test]
async fn environment_keys_come_first() {
    let home = tempfile::tempdir().expect("tmp");
    ini(
        home.path(),
        "[default]\ntype = access_key\naccess_key_id = FILE\naccess_key_secret = f\n",
    );
    let env = env_of(&[
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ENV"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "env-token"),
        ("ALIBABA_CLOUD_ROLE_ARN", ROLE),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", OIDC_PROVIDER),
        ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "/nonexistent"),
    ]);
    let chain = Chain::build(&env, Some(home.path().into()), offline());
    let (name, c) = chosen(&chain).await;
    assert_eq!(name, "environment");
    assert_eq!(c.access_key_id, "ENV");
    assert_eq!(c.security_token, Some(Secret::new("env-token")));
    // An id without a secret is no source at all.
    let env = env_of(&[("ALIBABA_CLOUD_ACCESS_KEY_ID", "ENV")]);
    let chain = Chain::build(&env, Some(home.path().into()), offline());
    assert_eq!(chosen(&chain).await.0, "profile");
}

#[tokio::test]
async fn oidc_comes_before_files_and_rereads_the_token_file_at_renewal() {
    let sim = sim().await;
    control(
        &sim,
        "/_sim/oidc-providers",
        serde_json::json!({"ProviderArn": OIDC_PROVIDER, "Token": "jwt-one"}),
    )
    .await;
    let home = tempfile::tempdir().expect("tmp");
    cli_config(
        home.path(),
        serde_json::json!({"current": "default", "profiles": [
            {"name": "default", "mode": "AK", "access_key_id": "CLI", "access_key_secret": "c"}]}),
    );
    let token_file = home.path().join("token");
    write(&token_file, "jwt-one\n");
    let env = env_of(&[
        ("ALIBABA_CLOUD_ROLE_ARN", ROLE),
        ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", OIDC_PROVIDER),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.to_str().expect("utf8"),
        ),
        ("ALIBABA_CLOUD_ROLE_SESSION_NAME", "rrsa-session"),
    ]);
    let (clock, minutes) = test_clock();
    let chain = Chain::build(
        &env,
        Some(home.path().into()),
        sources(&sim.endpoint(), "http://127.0.0.1:9", clock),
    );
    let (name, first) = chosen(&chain).await;
    assert_eq!(name, "oidc_role_arn");
    assert!(first.access_key_id.starts_with("STS."));
    assert!(first.security_token.is_some());
    let calls = sim_requests(&sim, "AssumeRoleWithOIDC").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["params"]["RoleSessionName"], "rrsa-session");
    assert_eq!(calls[0]["params"]["RoleArn"], ROLE);
    assert_eq!(calls[0]["params"]["OIDCToken"], "[redacted]");
    assert!(
        calls[0]["access_key_id"].is_null(),
        "anonymous: {}",
        calls[0]
    );
    // The platform rotates the token; the provider only accepts the new one now.
    control(
        &sim,
        "/_sim/oidc-providers",
        serde_json::json!({"ProviderArn": OIDC_PROVIDER, "Token": "jwt-two"}),
    )
    .await;
    write(&token_file, "jwt-two");
    minutes.store(30, Ordering::SeqCst);
    assert_eq!(chain.credentials().await.expect("cached"), first);
    minutes.store(50, Ordering::SeqCst);
    let renewed = chain.credentials().await.expect("renewed");
    assert_ne!(renewed.access_key_id, first.access_key_id);
    assert_eq!(sim_requests(&sim, "AssumeRoleWithOIDC").await.len(), 2);
    // An unknown provider is a credential error from STS (no fallback to the CLI profile).
    let env = env_of(&[
        ("ALIBABA_CLOUD_ROLE_ARN", ROLE),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::1:oidc-provider/unknown",
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token_file.to_str().expect("utf8"),
        ),
    ]);
    let oidc = Oidc::new(
        sources(&sim.endpoint(), "http://127.0.0.1:9", system_clock()).sts,
        RoleRequest::new(ROLE),
        env("ALIBABA_CLOUD_OIDC_PROVIDER_ARN").expect("set"),
        token_file.clone(),
        system_clock(),
    );
    match oidc.credentials().await {
        Err(ApiError::Credentials { code, .. }) => {
            assert_eq!(code.as_deref(), Some("EntityNotExist.OIDCProvider"));
        }
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn partial_oidc_variables_are_no_source() {
    let env = env_of(&[("ALIBABA_CLOUD_ROLE_ARN", ROLE)]);
    let chain = Chain::build(&env, None, offline());
    assert!(!chain.candidates().contains(&"oidc_role_arn"));
}

#[tokio::test]
async fn cli_config_comes_before_the_profile_file_and_follows_current_or_the_profile_variable() {
    let home = tempfile::tempdir().expect("tmp");
    ini(
        home.path(),
        "[default]\ntype = access_key\naccess_key_id = FILE\naccess_key_secret = f\n",
    );
    cli_config(
        home.path(),
        serde_json::json!({"current": "work", "profiles": [
            {"name": "default", "mode": "AK", "access_key_id": "CLI-DEFAULT", "access_key_secret": "c"},
            {"name": "work", "mode": "StsToken", "access_key_id": "CLI-WORK", "access_key_secret": "w", "sts_token": "tok"},
        ]}),
    );
    let chain = Chain::build(&env_of(&[]), Some(home.path().into()), offline());
    let (name, c) = chosen(&chain).await;
    assert_eq!(name, "cli_profile");
    assert_eq!(c.access_key_id, "CLI-WORK");
    assert_eq!(c.security_token, Some(Secret::new("tok")));
    let env = env_of(&[("ALIBABA_CLOUD_PROFILE", "default")]);
    let chain = Chain::build(&env, Some(home.path().into()), offline());
    assert_eq!(chosen(&chain).await.1.access_key_id, "CLI-DEFAULT");
    // Disabled: the profile file answers.
    let env = env_of(&[("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "true")]);
    let chain = Chain::build(&env, Some(home.path().into()), offline());
    assert_eq!(
        chosen(&chain).await,
        ("profile", Credentials::static_key("FILE", "f"))
    );
    // A CLI profile that cannot be used falls through to the next source.
    cli_config(
        home.path(),
        serde_json::json!({"current": "x", "profiles": [
        {"name": "x", "mode": "CloudSSO"}]}),
    );
    let chain = Chain::build(&env_of(&[]), Some(home.path().into()), offline());
    assert_eq!(chosen(&chain).await.0, "profile");
}

#[tokio::test]
async fn cli_config_ram_role_arn_assumes_the_role_with_its_keys() {
    let sim = sim().await;
    let home = tempfile::tempdir().expect("tmp");
    cli_config(
        home.path(),
        serde_json::json!({"current": "r", "profiles": [
            {"name": "r", "mode": "RamRoleArn", "access_key_id": BASE_ID, "access_key_secret": BASE_SECRET,
             "ram_role_arn": ROLE, "ram_session_name": "cli-session", "expired_seconds": 900}]}),
    );
    let chain = Chain::build(
        &env_of(&[]),
        Some(home.path().into()),
        sources(&sim.endpoint(), "http://127.0.0.1:9", system_clock()),
    );
    let (name, c) = chosen(&chain).await;
    assert_eq!(name, "cli_profile");
    assert!(c.access_key_id.starts_with("STS."));
    let calls = sim_requests(&sim, "AssumeRole").await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["access_key_id"], BASE_ID);
    assert_eq!(calls[0]["params"]["RoleSessionName"], "cli-session");
    assert_eq!(calls[0]["params"]["DurationSeconds"], "900");
    sim.shutdown().await;
}

#[tokio::test]
async fn profile_file_types_names_and_locations() {
    let sim = sim().await;
    let (metadata, meta) = fake_metadata(60).await;
    let home = tempfile::tempdir().expect("tmp");
    let text = format!(
        "# comment\n[default]\ntype = access_key\naccess_key_id = AK\naccess_key_secret = \"ak-secret\"\n\n\
         [sts]\ntype = sts\naccess_key_id = STSKEY\naccess_key_secret = s\nsecurity_token = tok\n\n\
         [role]\ntype = ram_role_arn\naccess_key_id = {BASE_ID}\naccess_key_secret = {BASE_SECRET}\n\
         role_arn = {ROLE}\nrole_session_name = ini-session\n\n\
         [ecs]\ntype = ecs_ram_role\nrole_name = EcsRole\n"
    );
    // Python's name (credentials.ini) is read when the usual one is absent.
    write(&home.path().join(".alibabacloud/credentials.ini"), &text);
    let chain_for = |profile: &str| {
        let env = env_of(&[
            ("ALIBABA_CLOUD_PROFILE", profile),
            ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
        ]);
        Chain::build(
            &env,
            Some(home.path().into()),
            sources(&sim.endpoint(), &metadata, system_clock()),
        )
    };
    assert_eq!(
        chosen(&chain_for("default")).await,
        ("profile", Credentials::static_key("AK", "ak-secret"))
    );
    let c = chosen(&chain_for("sts")).await.1;
    assert_eq!(
        (c.access_key_id.as_str(), c.security_token),
        ("STSKEY", Some(Secret::new("tok")))
    );
    let c = chosen(&chain_for("role")).await.1;
    assert!(c.access_key_id.starts_with("STS."));
    let calls = sim_requests(&sim, "AssumeRole").await;
    assert_eq!(calls[0]["params"]["RoleSessionName"], "ini-session");
    // ecs_ram_role from the profile file works even with the chain's own metadata source disabled.
    let c = chosen(&chain_for("ecs")).await.1;
    assert!(c.access_key_id.starts_with("STS.meta"));
    assert_eq!(
        meta.role_lists.load(Ordering::SeqCst),
        0,
        "role name was given"
    );
    // ALIBABA_CLOUD_CREDENTIALS_FILE wins over the home directory.
    let other = home.path().join("elsewhere.ini");
    write(
        &other,
        "[default]\ntype = access_key\naccess_key_id = ELSEWHERE\naccess_key_secret = e\n",
    );
    let env = env_of(&[
        (
            "ALIBABA_CLOUD_CREDENTIALS_FILE",
            other.to_str().expect("utf8"),
        ),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
    ]);
    let chain = Chain::build(&env, Some(home.path().into()), offline());
    assert_eq!(chosen(&chain).await.1.access_key_id, "ELSEWHERE");
    // An unknown profile with nothing after it: a credential error naming the sources.
    let err = chain_for("missing")
        .credentials()
        .await
        .expect_err("no profile");
    match err {
        ApiError::Credentials { message, code } => {
            assert_eq!(code.as_deref(), Some("Credentials.Unavailable"));
            assert!(message.contains("no profile [missing]"), "{message}");
            assert!(!message.contains(BASE_SECRET) && !message.contains("ak-secret"));
        }
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

#[test]
fn ini_parsing_is_forgiving() {
    let s = crate::credentials::profile::parse_ini("; c\n[ a ]\n k = v = w \nbare\n[b]\nx=\"q\"\n");
    assert_eq!(s["a"]["k"], "v = w");
    assert_eq!(s["b"]["x"], "q");
}

#[tokio::test]
async fn metadata_service_is_tried_after_files_with_imdsv2_and_role_discovery() {
    let (metadata, meta) = fake_metadata(60).await;
    let home = tempfile::tempdir().expect("tmp");
    let chain = Chain::build(
        &env_of(&[]),
        Some(home.path().into()),
        sources("http://127.0.0.1:9", &metadata, system_clock()),
    );
    let (name, c) = chosen(&chain).await;
    assert_eq!(name, "ecs_ram_role");
    assert_eq!(c.access_key_id, "STS.meta0");
    assert_eq!(c.security_token, Some(Secret::new(META_TOKEN)));
    assert_eq!(meta.tokens.load(Ordering::SeqCst), 1);
    assert_eq!(meta.role_lists.load(Ordering::SeqCst), 1);
    // ALIBABA_CLOUD_ECS_METADATA names the role: no discovery.
    let env = env_of(&[("ALIBABA_CLOUD_ECS_METADATA", "EcsRole")]);
    let chain = Chain::build(
        &env,
        None,
        sources("http://127.0.0.1:9", &metadata, system_clock()),
    );
    chosen(&chain).await;
    assert_eq!(meta.role_lists.load(Ordering::SeqCst), 1);
    // Disabled: not in the chain.
    let env = env_of(&[("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "TRUE")]);
    let chain = Chain::build(&env, None, offline());
    assert!(!chain.candidates().contains(&"ecs_ram_role"));
}

#[tokio::test]
async fn earlier_sources_keep_the_metadata_service_untouched() {
    let (metadata, meta) = fake_metadata(60).await;
    let home = tempfile::tempdir().expect("tmp");
    ini(
        home.path(),
        "[default]\ntype = access_key\naccess_key_id = FILE\naccess_key_secret = f\n",
    );
    let chain = Chain::build(
        &env_of(&[]),
        Some(home.path().into()),
        sources("http://127.0.0.1:9", &metadata, system_clock()),
    );
    assert_eq!(chosen(&chain).await.0, "profile");
    assert_eq!(meta.tokens.load(Ordering::SeqCst), 0);
    assert_eq!(meta.fetches.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn failing_metadata_service_is_a_credential_error_without_secrets() {
    let (metadata, meta) = fake_metadata(60).await;
    let unreachable = EcsRamRole::new(
        reqwest::Client::new(),
        "http://127.0.0.1:9",
        Some("EcsRole".into()),
        false,
        system_clock(),
    );
    let strict = EcsRamRole::new(
        reqwest::Client::new(),
        "http://127.0.0.1:9",
        None,
        true,
        system_clock(),
    );
    for (what, p) in [("unreachable", unreachable), ("imdsv2 only", strict)] {
        match p.credentials().await {
            Err(ApiError::Credentials { code, message }) => {
                assert_eq!(
                    code.as_deref(),
                    Some("MetadataService.Unavailable"),
                    "{what}"
                );
                assert!(!message.contains("127.0.0.1:9/"), "{what}: {message}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    for (mode, expect) in [(1, "HTTP 500"), (2, "unreadable"), (3, "not \"Success\"")] {
        meta.mode.store(mode, Ordering::SeqCst);
        let p = EcsRamRole::new(
            reqwest::Client::new(),
            &metadata,
            None,
            false,
            system_clock(),
        );
        let err = p.credentials().await.expect_err("failing service");
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, ApiError::Credentials { .. }), "{shown}");
        assert!(shown.contains(expect), "{mode}: {shown}");
        assert!(!shown.contains(META_SECRET), "{mode}: {shown}");
    }
    // Through the chain too: no source works, the command would wait.
    meta.mode.store(1, Ordering::SeqCst);
    let chain = Chain::build(
        &env_of(&[]),
        None,
        sources("http://127.0.0.1:9", &metadata, system_clock()),
    );
    assert!(matches!(
        chain.credentials().await,
        Err(ApiError::Credentials { .. })
    ));
    // The service recovers: the next call finds it.
    meta.mode.store(0, Ordering::SeqCst);
    assert_eq!(chosen(&chain).await.0, "ecs_ram_role");
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_one_fetch_and_renewal_follows_the_rule() {
    let (metadata, meta) = fake_metadata(60).await;
    let (clock, minutes) = test_clock();
    let env = env_of(&[("ALIBABA_CLOUD_ECS_METADATA", "EcsRole")]);
    let chain = Arc::new(Chain::build(
        &env,
        None,
        sources("http://127.0.0.1:9", &metadata, clock),
    ));
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let chain = Arc::clone(&chain);
            tokio::spawn(async move { chain.credentials().await })
        })
        .collect();
    for c in futures::future::join_all(calls).await {
        assert_eq!(
            c.expect("join").expect("credentials").access_key_id,
            "STS.meta0"
        );
    }
    assert_eq!(meta.fetches.load(Ordering::SeqCst), 1);
    // One hour of lifetime: renewed once less than 15 minutes are left.
    minutes.store(44, Ordering::SeqCst);
    assert_eq!(
        chain.credentials().await.expect("c").access_key_id,
        "STS.meta0"
    );
    minutes.store(46, Ordering::SeqCst);
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let chain = Arc::clone(&chain);
            tokio::spawn(async move { chain.credentials().await })
        })
        .collect();
    for c in futures::future::join_all(calls).await {
        c.expect("join").expect("credentials");
    }
    assert_eq!(meta.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn credentials_uri_is_the_last_source() {
    let (base, meta) = fake_metadata(60).await;
    let uri = format!("{base}/uri");
    let env = env_of(&[
        ("ALIBABA_CLOUD_CREDENTIALS_URI", uri.as_str()),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
    ]);
    let chain = Chain::build(&env, None, offline());
    assert_eq!(chain.candidates().last(), Some(&"credentials_uri"));
    let (name, c) = chosen(&chain).await;
    assert_eq!(name, "credentials_uri");
    assert_eq!(c.access_key_id, "STS.uri0");
    chain.credentials().await.expect("cached");
    assert_eq!(meta.fetches.load(Ordering::SeqCst), 1);
    // Without the variable it is not in the chain.
    assert!(
        !Chain::build(&env_of(&[]), None, offline())
            .candidates()
            .contains(&"credentials_uri")
    );
}

#[tokio::test]
async fn nothing_configured_is_a_credential_error() {
    let env = env_of(&[("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")]);
    let chain = Chain::build(&env, None, offline());
    assert_eq!(chain.candidates(), vec!["cli_profile", "profile"]);
    assert_eq!(chain.name(), "default_chain");
    assert!(matches!(
        chain.credentials().await,
        Err(ApiError::Credentials { .. })
    ));
}
