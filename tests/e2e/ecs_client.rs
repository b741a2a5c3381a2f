//! The ECS client against the simulator over real HTTP, both signature kinds:
//! every operation, and how each error path reaches the classification.

use lifecycle_worker::command::{InstanceId, RegionId};
use lifecycle_worker::credentials::Credentials;
use lifecycle_worker::domain::cloud::{Cloud, InstanceFilter};
use lifecycle_worker::domain::error::{ApiAction, ApiError, ErrorClass, TransportKind, classify};
use lifecycle_worker::ecs::client::{EcsClient, Timeouts, TracedClient};
use lifecycle_worker::ecs::endpoint::Endpoint;
use lifecycle_worker::ecs::sign::SignatureVersion;
use lifecycle_worker::secret::Secret;
use lifecycle_worker::simulator::{self, FaultSettings, Seed, SimulatorConfig, SimulatorHandle};
use std::time::Duration;

const USED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F12340001";
const UNUSED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F12340003";

async fn sim() -> SimulatorHandle {
    let seed = Seed::from_file("config/seed.json").expect("sample seed");
    simulator::start(SimulatorConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        seed: Some(seed),
        keys: vec![("testid".into(), Secret::new("testsecret"))],
        allowed_regions: vec!["cn-hangzhou".into(), "cn-beijing".into()],
        faults: FaultSettings::default(),
    })
    .await
    .expect("simulator starts")
}

/// A client plus the credentials its calls are signed with.
struct Client {
    ecs: EcsClient,
    creds: Credentials,
}

impl Client {
    fn traced(&self, traceparent: Option<String>) -> TracedClient<'_> {
        self.ecs.traced(self.creds.clone(), traceparent)
    }
}

fn client(sim: &SimulatorHandle, version: SignatureVersion, secret: &str) -> Client {
    let ecs = EcsClient::new(
        Endpoint::from_setting(&sim.endpoint()).expect("endpoint"),
        version,
        Timeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(2),
        },
    )
    .expect("client");
    Client {
        ecs,
        creds: Credentials::static_key("testid", secret),
    }
}

fn region(r: &str) -> RegionId {
    RegionId::parse(r).expect("region")
}

fn code(e: &ApiError) -> &str {
    e.code()
}

async fn post_faults(sim: &SimulatorHandle, body: serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.endpoint()))
        .json(&body)
        .send()
        .await
        .expect("faults");
    assert!(r.status().is_success(), "{:?}", r.text().await);
}

#[tokio::test]
async fn every_operation_with_both_signatures() {
    for version in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RpcHmacSha1,
    ] {
        let sim = sim().await;
        let c = client(&sim, version, "testsecret");
        let cloud = c.traced(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ));
        let hz = region("cn-hangzhou");

        let page = cloud
            .describe_instances(&hz, &InstanceFilter::ActivationId(USED.into()), None)
            .await
            .expect("describe");
        assert!(!page.value.instances.is_empty(), "{version:?}");
        assert!(page.request_id.is_some());

        // Paging followed to the end through NextToken.
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let p = cloud
                .describe_instances(&hz, &InstanceFilter::All, token.as_deref())
                .await
                .expect("page");
            all.extend(p.value.instances);
            match p.value.next_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert!(all.len() >= 5, "{}", all.len());

        let act = cloud
            .describe_activation(&hz, UNUSED)
            .await
            .expect("describe activation")
            .value
            .expect("exists");
        assert_eq!(act.registered_count, Some(0));
        let disabled = cloud
            .disable_activation(&hz, UNUSED)
            .await
            .expect("disable");
        assert_eq!(disabled.value.and_then(|a| a.disabled), Some(true));
        cloud.delete_activation(&hz, UNUSED).await.expect("delete");
        let again = cloud
            .delete_activation(&hz, UNUSED)
            .await
            .expect_err("gone");
        assert_eq!(code(&again), "ActivationId.NotFound");
        assert_eq!(
            classify(ApiAction::DeleteActivation, &again),
            ErrorClass::AlreadyDone
        );

        let in_use = cloud
            .delete_activation(&hz, USED)
            .await
            .expect_err("in use");
        assert_eq!(code(&in_use), "ActivationId.InUse");
        assert_eq!(
            classify(ApiAction::DeleteActivation, &in_use),
            ErrorClass::Permanent
        );

        let id = InstanceId::parse(&all[0].instance_id).expect("id");
        let first = cloud
            .deregister(&hz, &id, "tok-1")
            .await
            .expect("deregister");
        assert_eq!(
            first.value.map(|i| i.instance_id),
            Some(id.as_str().to_owned())
        );
        // Same token, same parameters: the first answer is replayed, no error.
        cloud.deregister(&hz, &id, "tok-1").await.expect("replayed");
        let gone = cloud.deregister(&hz, &id, "tok-2").await.expect_err("gone");
        assert_eq!(code(&gone), "InvalidInstance.NotFound");
        assert_eq!(gone.http_status(), Some(404));
        assert_eq!(
            classify(ApiAction::DeregisterManagedInstance, &gone),
            ErrorClass::AlreadyDone
        );

        let missing = cloud
            .disable_activation(&hz, "00000000-0000-0000-0000-000000000000")
            .await
            .expect_err("missing");
        assert_eq!(
            classify(ApiAction::DisableActivation, &missing),
            ErrorClass::Permanent
        );

        let other = cloud
            .disable_activation(&region("cn-shanghai"), USED)
            .await
            .expect_err("region");
        assert_eq!(code(&other), "RegionId.ApiNotSupported");
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn wrong_secret_and_revoked_key_are_credential_failures() {
    let sim = sim().await;
    let hz = region("cn-hangzhou");
    for version in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RpcHmacSha1,
    ] {
        let c = client(&sim, version, "wrong-secret");
        let e = c
            .traced(None)
            .disable_activation(&hz, USED)
            .await
            .expect_err("bad secret");
        assert_eq!(code(&e), "SignatureDoesNotMatch", "{version:?}");
        assert_eq!(
            classify(ApiAction::DisableActivation, &e),
            ErrorClass::Credential
        );
        assert!(!format!("{e:?}").contains("wrong-secret"));
    }
    let r = reqwest::Client::new()
        .delete(format!("{}/_sim/keys/testid", sim.endpoint()))
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success());
    let c = client(&sim, SignatureVersion::Acs3HmacSha256, "testsecret");
    let e = c
        .traced(None)
        .disable_activation(&hz, USED)
        .await
        .expect_err("revoked");
    assert!(code(&e).starts_with("InvalidAccessKeyId"), "{e:?}");
    assert_eq!(
        classify(ApiAction::DisableActivation, &e),
        ErrorClass::Credential
    );
    assert!(!format!("{e:?} {e}").contains("testsecret"));
}

#[tokio::test]
async fn faults_reach_the_classification_with_retry_after() {
    let sim = sim().await;
    let hz = region("cn-hangzhou");
    let c = client(&sim, SignatureVersion::Acs3HmacSha256, "testsecret");
    let cloud = c.traced(None);
    post_faults(
        &sim,
        serde_json::json!({"fail_next": [
            {"action": "DisableActivation", "count": 1, "code": "Throttling.User", "status": 400, "retry_after_ms": 1500},
            {"action": "DisableActivation", "count": 1, "code": "InternalError.Dispatch", "status": 500}
        ]}),
    )
    .await;
    let e = cloud
        .disable_activation(&hz, USED)
        .await
        .expect_err("throttled");
    assert_eq!(
        classify(ApiAction::DisableActivation, &e),
        ErrorClass::Transient {
            throttled: true,
            retry_after: Some(Duration::from_millis(1500))
        }
    );
    let e = cloud
        .disable_activation(&hz, USED)
        .await
        .expect_err("dispatch");
    assert_eq!(code(&e), "InternalError.Dispatch");
    assert_eq!(e.http_status(), Some(500));
    assert!(e.request_id().is_some());
    // Each attempt is signed afresh: the third call succeeds (no SignatureNonceUsed).
    cloud.disable_activation(&hz, USED).await.expect("recovers");

    post_faults(&sim, serde_json::json!({"latency_ms": 3000})).await;
    let e = cloud
        .disable_activation(&hz, USED)
        .await
        .expect_err("timeout");
    assert!(
        matches!(
            e,
            ApiError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn connection_refused_is_a_transient_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let c = EcsClient::new(
        Endpoint::from_setting(&format!("http://127.0.0.1:{port}")).expect("endpoint"),
        SignatureVersion::Acs3HmacSha256,
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
        },
    )
    .expect("client");
    let e = c
        .traced(Credentials::static_key("testid", "testsecret"), None)
        .disable_activation(&region("cn-hangzhou"), USED)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            e,
            ApiError::Transport {
                kind: TransportKind::Connect,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        classify(ApiAction::DisableActivation, &e),
        ErrorClass::Transient { .. }
    ));
}

/// Every request the worker sends, read as raw bytes at a TCP listener (no
/// HTTP library in between that could fold repeated lines): no header field
/// name appears twice. ECS and STS, both signature kinds, with and without a
/// security token, and the anonymous OIDC exchange. (The official SDK's own
/// verification of the same requests is `tests/wire/`, run by `.ci/run`.)
#[tokio::test]
async fn no_request_repeats_a_header_field() {
    use lifecycle_worker::credentials::sts::{RoleRequest, StsClient};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = heads_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                let body = br#"{"RequestId":"raw","Code":"Raw","Message":"captured"}"#;
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body).await;
            });
        }
    });
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        request: Duration::from_secs(2),
    };
    let hz = region("cn-hangzhou");
    let mut with_token = Credentials::static_key("testid", "testsecret");
    with_token.security_token = Some(Secret::new("tok/en+=="));
    let mut sent = Vec::new();
    for version in [
        SignatureVersion::Acs3HmacSha256,
        SignatureVersion::RpcHmacSha1,
    ] {
        for creds in [
            Credentials::static_key("testid", "testsecret"),
            with_token.clone(),
        ] {
            let ecs = EcsClient::new(
                Endpoint::from_setting(&endpoint).expect("endpoint"),
                version,
                timeouts,
            )
            .expect("client");
            let traced = ecs.traced(
                creds.clone(),
                Some(format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16))),
            );
            let _ = traced
                .describe_instances(&hz, &InstanceFilter::InstanceIp("2001:db8::1".into()), None)
                .await;
            let _ = traced
                .deregister(
                    &hz,
                    &InstanceId::parse("mi-raw01").expect("id"),
                    "raw:token.1",
                )
                .await;
            let sts = StsClient::new(
                lifecycle_worker::ecs::client::http_client(timeouts).expect("http"),
                &endpoint,
                version,
            )
            .expect("sts");
            let _ = sts.assume_role(&creds, "acs:ram::123:role/raw").await;
            sent.push(format!(
                "{version:?} token={}",
                creds.security_token.is_some()
            ));
        }
    }
    let sts = StsClient::new(
        lifecycle_worker::ecs::client::http_client(timeouts).expect("http"),
        &endpoint,
        SignatureVersion::Acs3HmacSha256,
    )
    .expect("sts");
    let _ = sts
        .assume_role_with_oidc(
            &RoleRequest::new("acs:ram::123:role/raw"),
            "acs:ram::123:oidc-provider/raw",
            &Secret::new("eyJ.raw"),
        )
        .await;
    // 2 kinds x 2 credentials x 3 calls, and the OIDC exchange.
    let mut count = 0;
    while let Ok(head) = heads.try_recv() {
        count += 1;
        let mut names: Vec<String> = head
            .split("\r\n")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| l.split(':').next().unwrap_or_default().to_ascii_lowercase())
            .collect();
        let total = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), total, "a header field repeats in:\n{head}");
        if head.contains("ACS3-HMAC-SHA256") {
            assert!(names.contains(&"accept".to_owned()), "{head}");
        }
    }
    assert_eq!(count, 13, "requests captured ({sent:?})");
}
