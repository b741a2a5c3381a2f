//! The simulator over real HTTP, signed with `ecs::sign`: every operation, error and fault.

use lifecycle_worker::credentials::Credentials;
use lifecycle_worker::ecs::model::{
    DescribeActivationsResponse, DescribeManagedInstancesResponse, ErrorEnvelope,
};
use lifecycle_worker::ecs::sign::{self, SignatureVersion, SigningInput};
use lifecycle_worker::secret::Secret;
use lifecycle_worker::simulator::{
    FaultSettings, Seed, SimulatorConfig, SimulatorHandle, StateView, start,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ACS3: SignatureVersion = SignatureVersion::Acs3HmacSha256;
const RPC: SignatureVersion = SignatureVersion::RpcHmacSha1;
const HZ: &str = "cn-hangzhou";
const USED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F12340001";
const UNUSED: &str = "4ECEEE12-56F1-4FBC-9AB1-890F12340003";

struct Sim {
    handle: SimulatorHandle,
    http: reqwest::Client,
    creds: Credentials,
}

struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["Code"].as_str().unwrap_or("OK")
    }
}

async fn sim_with(faults: FaultSettings) -> Sim {
    let seed = Seed::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/config/seed.json"));
    let config = SimulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        seed: seed.ok(),
        keys: vec![("testid".into(), Secret::new("testsecret"))],
        allowed_regions: vec![HZ.into(), "cn-beijing".into()],
        faults,
    };
    match start(config).await {
        Ok(handle) => Sim {
            handle,
            http: reqwest::Client::new(),
            creds: Credentials::static_key("testid", "testsecret"),
        },
        Err(e) => panic!("simulator did not start: {e}"),
    }
}

async fn sim() -> Sim {
    sim_with(FaultSettings::default()).await
}

fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

impl Sim {
    async fn raw(
        &self,
        version: SignatureVersion,
        creds: &Credentials,
        action: &str,
        params: &[(&str, &str)],
        nonce: &str,
        timestamp: &str,
    ) -> Result<Reply, reqwest::Error> {
        let host = self.handle.addr().to_string();
        let params = owned(params);
        let signed = sign::sign(
            version,
            creds,
            &SigningInput {
                action,
                version: "2014-05-26",
                host: &host,
                params: &params,
                nonce,
                timestamp,
                extra_signed_headers: &[("accept".into(), "application/json".into())],
            },
        );
        let mut req = self
            .http
            .post(format!("{}/?{}", self.handle.endpoint(), signed.query));
        for (k, v) in &signed.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("x-acs-retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.json::<Value>().await?;
        Ok(Reply {
            status,
            body,
            retry_after,
        })
    }

    async fn call_as(
        &self,
        version: SignatureVersion,
        creds: &Credentials,
        action: &str,
        params: &[(&str, &str)],
    ) -> Reply {
        let r = self
            .raw(
                version,
                creds,
                action,
                params,
                &sign::new_nonce(),
                &sign::timestamp_now(),
            )
            .await;
        match r {
            Ok(r) => r,
            Err(e) => panic!("{action}: transport error {e}"),
        }
    }

    async fn call(
        &self,
        version: SignatureVersion,
        action: &str,
        params: &[(&str, &str)],
    ) -> Reply {
        self.call_as(version, &self.creds, action, params).await
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.handle.endpoint()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
            Err(e) => panic!("control {path}: {e}"),
        }
    }

    async fn state(&self) -> StateView {
        let (_, v) = self
            .control(reqwest::Method::GET, "/_sim/state", None)
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }

    async fn faults(&self, f: Value) {
        let (status, body) = self
            .control(reqwest::Method::POST, "/_sim/faults", Some(f))
            .await;
        assert_eq!(status, 204, "{body}");
    }
}

fn instances(r: &Reply) -> DescribeManagedInstancesResponse {
    serde_json::from_value(r.body.clone()).unwrap_or_default()
}

#[tokio::test]
async fn describe_pages_to_the_end_with_both_signatures() {
    let s = sim().await;
    for version in [ACS3, RPC] {
        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut p = vec![("RegionId", HZ), ("MaxResults", "4")];
            if let Some(t) = token.as_deref() {
                p.push(("NextToken", t));
            }
            let r = s.call(version, "DescribeManagedInstances", &p).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let page = instances(&r);
            assert!(!page.request_id.is_empty());
            seen.extend(page.instances.into_iter().map(|i| i.instance_id));
            pages += 1;
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!((pages, seen.len()), (2, 6), "{version}");
        let bad = s
            .call(
                version,
                "DescribeManagedInstances",
                &[("RegionId", HZ), ("NextToken", "zz!")],
            )
            .await;
        assert_eq!((bad.status, bad.code()), (400, "InvalidParameter"));
        let big = s
            .call(
                version,
                "DescribeManagedInstances",
                &[("RegionId", HZ), ("MaxResults", "51")],
            )
            .await;
        assert_eq!(big.status, 400);
    }
    // Default page size is 10: everything on one page, no token.
    let r = s
        .call(ACS3, "DescribeManagedInstances", &[("RegionId", HZ)])
        .await;
    let page = instances(&r);
    assert_eq!((page.instances.len(), page.next_token), (6, None));
    // The seed's string-typed numbers and booleans came through as the model expects.
    let web2 = page
        .instances
        .iter()
        .find(|i| i.instance_id == "mi-hz01web0002");
    assert_eq!(web2.and_then(|i| i.invocation_count), Some(2));
    assert_eq!(web2.and_then(|i| i.connected), Some(true));
    // Another allowed region is simply empty.
    let r = s
        .call(
            RPC,
            "DescribeManagedInstances",
            &[("RegionId", "cn-beijing")],
        )
        .await;
    assert_eq!(instances(&r).instances.len(), 0);
    s.handle.shutdown().await;
}

#[tokio::test]
async fn describe_filters() {
    let s = sim().await;
    let ids = |r: Reply| -> Vec<String> {
        instances(&r)
            .instances
            .into_iter()
            .map(|i| i.instance_id)
            .collect()
    };
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![("InstanceIp", "47.96.1.22")], vec!["mi-hz01db00002"]),
        (vec![("InstanceIp", "10.0.0.13")], vec!["mi-hz01web0003"]),
        (
            vec![("MachineId", "e03231b37ab14e53b5795ad625fc0004")],
            vec!["mi-hz01web0004"],
        ),
        (vec![("InstanceName", "db-1")], vec!["mi-hz01db00001"]),
        (
            vec![
                ("InstanceId.1", "mi-hz01web0001"),
                ("InstanceId.2", "mi-hz01db00001"),
            ],
            vec!["mi-hz01db00001", "mi-hz01web0001"],
        ),
        (
            vec![("ActivationId", "4ECEEE12-56F1-4FBC-9AB1-890F12340002")],
            vec!["mi-hz01db00001", "mi-hz01db00002"],
        ),
        (vec![("InstanceIp", "192.0.2.1")], vec![]),
    ];
    for (filter, want) in cases {
        let mut p = vec![("RegionId", HZ)];
        p.extend(filter.iter().copied());
        let got = ids(s.call(ACS3, "DescribeManagedInstances", &p).await);
        assert_eq!(got, want, "{filter:?}");
    }
    let r = s
        .call(
            RPC,
            "DescribeActivations",
            &[("RegionId", HZ), ("ActivationId", UNUSED)],
        )
        .await;
    let acts: DescribeActivationsResponse = serde_json::from_value(r.body).unwrap_or_default();
    assert_eq!(acts.activation_list.len(), 1);
    assert_eq!(
        acts.activation_list
            .first()
            .and_then(|a| a.registered_count),
        Some(0)
    );
    let r = s
        .call(
            ACS3,
            "DescribeActivations",
            &[("RegionId", HZ), ("MaxResults", "2")],
        )
        .await;
    let acts: DescribeActivationsResponse = serde_json::from_value(r.body).unwrap_or_default();
    assert_eq!(acts.activation_list.len(), 2);
    assert!(acts.next_token.is_some());
}

#[tokio::test]
async fn deregister_once_with_client_token_replay_and_mismatch() {
    let s = sim().await;
    let id = "mi-hz01web0001";
    let p = [
        ("RegionId", HZ),
        ("InstanceId", id),
        ("ClientToken", "cmd-1"),
    ];
    let first = s.call(ACS3, "DeregisterManagedInstance", &p).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["Instance"]["InstanceId"], id);
    let replay = s.call(RPC, "DeregisterManagedInstance", &p).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body["Instance"], first.body["Instance"]);
    assert_ne!(replay.body["RequestId"], first.body["RequestId"]);
    let other = [
        ("RegionId", HZ),
        ("InstanceId", "mi-hz01web0002"),
        ("ClientToken", "cmd-1"),
    ];
    let mismatch = s.call(ACS3, "DeregisterManagedInstance", &other).await;
    assert_eq!(
        (mismatch.status, mismatch.code()),
        (400, "IdempotentParameterMismatch")
    );
    let again = s.call(ACS3, "DeregisterManagedInstance", &p[..2]).await;
    assert_eq!(
        (again.status, again.code()),
        (404, "InvalidInstance.NotFound")
    );
    let env: ErrorEnvelope = serde_json::from_value(again.body).unwrap_or_default();
    assert!(!env.request_id.is_empty() && !env.host_id.is_empty() && !env.recommend.is_empty());
    let state = s.state().await;
    assert_eq!(state.deregistrations.get(id), Some(&1));
    assert_eq!(state.deregistrations.len(), 1);
    assert!(state.instances.iter().all(|i| i.instance.instance_id != id));
    let act = state
        .activations
        .iter()
        .find(|a| a.activation.activation_id == USED);
    assert_eq!(act.and_then(|a| a.activation.deregistered_count), Some(1));
    let missing = s
        .call(ACS3, "DeregisterManagedInstance", &[("RegionId", HZ)])
        .await;
    assert_eq!((missing.status, missing.code()), (400, "MissingParameter"));
}

#[tokio::test]
async fn activations_disable_and_delete() {
    let s = sim().await;
    for _ in 0..2 {
        let r = s
            .call(
                ACS3,
                "DisableActivation",
                &[("RegionId", HZ), ("ActivationId", USED)],
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body["Activation"]["Disabled"], true);
    }
    let nf = s
        .call(
            RPC,
            "DisableActivation",
            &[("RegionId", HZ), ("ActivationId", "nope")],
        )
        .await;
    assert_eq!((nf.status, nf.code()), (404, "ActivationId.NotFound"));
    // In use: it registered instances, even once they are all gone.
    let del = [("RegionId", HZ), ("ActivationId", USED)];
    let r = s.call(ACS3, "DeleteActivation", &del).await;
    assert_eq!((r.status, r.code()), (403, "ActivationId.InUse"));
    let unused = [("RegionId", HZ), ("ActivationId", UNUSED)];
    let r = s.call(RPC, "DeleteActivation", &unused).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["Activation"]["ActivationId"], UNUSED);
    let r = s.call(ACS3, "DeleteActivation", &unused).await;
    assert_eq!((r.status, r.code()), (404, "ActivationId.NotFound"));
}

#[tokio::test]
async fn region_action_and_parameter_errors() {
    let s = sim().await;
    let r = s
        .call(
            ACS3,
            "DescribeManagedInstances",
            &[("RegionId", "cn-shanghai")],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "RegionId.ApiNotSupported"));
    let r = s.call(RPC, "DescribeManagedInstances", &[]).await;
    assert_eq!((r.status, r.code()), (400, "MissingParameter"));
    let r = s.call(ACS3, "RunCommand", &[("RegionId", HZ)]).await;
    assert_eq!((r.status, r.code()), (404, "InvalidAction.NotFound"));
}

#[tokio::test]
async fn authentication_errors() {
    let s = sim().await;
    let p = [("RegionId", HZ)];
    let a = "DescribeActivations";
    for version in [ACS3, RPC] {
        let nonce = sign::new_nonce();
        let ts = sign::timestamp_now();
        let first = s.raw(version, &s.creds, a, &p, &nonce, &ts).await.ok();
        assert_eq!(first.map(|r| r.status), Some(200));
        let reused = s.raw(version, &s.creds, a, &p, &nonce, &ts).await.ok();
        assert_eq!(
            reused.as_ref().map(|r| (r.status, r.code())),
            Some((400, "SignatureNonceUsed"))
        );
        let old =
            sign::format_timestamp(time::OffsetDateTime::now_utc() - time::Duration::minutes(20));
        let stale = s
            .raw(version, &s.creds, a, &p, &sign::new_nonce(), &old)
            .await
            .ok();
        assert_eq!(
            stale.as_ref().map(|r| (r.status, r.code())),
            Some((400, "InvalidTimeStamp.Expired"))
        );
        let wrong = Credentials::static_key("testid", "not-the-secret");
        let r = s.call_as(version, &wrong, a, &p).await;
        assert_eq!((r.status, r.code()), (400, "SignatureDoesNotMatch"));
        let unknown = Credentials::static_key("nobody", "x");
        let r = s.call_as(version, &unknown, a, &p).await;
        assert_eq!((r.status, r.code()), (404, "InvalidAccessKeyId.NotFound"));
    }
    // Keys come and go through the control plane.
    let (st, _) = s
        .control(
            reqwest::Method::POST,
            "/_sim/keys",
            Some(json!({"AccessKeyId": "k2", "AccessKeySecret": "s2"})),
        )
        .await;
    assert_eq!(st, 204);
    let k2 = Credentials::static_key("k2", "s2");
    assert_eq!(s.call_as(RPC, &k2, a, &p).await.status, 200);
    let (st, _) = s
        .control(reqwest::Method::DELETE, "/_sim/keys/k2", None)
        .await;
    assert_eq!(st, 204);
    let r = s.call_as(ACS3, &k2, a, &p).await;
    assert_eq!((r.status, r.code()), (404, "InvalidAccessKeyId.NotFound"));
    // Unsigned calls are incomplete.
    let resp = s
        .http
        .post(format!(
            "{}/?Action=DescribeActivations",
            s.handle.endpoint()
        ))
        .send()
        .await;
    let code = match resp {
        Ok(r) => r.json::<Value>().await.ok().map(|b| b["Code"].clone()),
        Err(_) => None,
    };
    assert_eq!(code, Some(json!("IncompleteSignature")));
}

#[tokio::test]
async fn rpc_parameters_in_a_form_body() {
    let s = sim().await;
    let params = owned(&[("RegionId", HZ), ("InstanceId.1", "mi-hz01db00001")]);
    let (nonce, ts) = (sign::new_nonce(), sign::timestamp_now());
    let host = s.handle.addr().to_string();
    let signed = sign::sign(
        RPC,
        &s.creds,
        &SigningInput {
            action: "DescribeManagedInstances",
            version: "2014-05-26",
            host: &host,
            params: &params,
            nonce: &nonce,
            timestamp: &ts,
            extra_signed_headers: &[],
        },
    );
    let resp = s
        .http
        .post(s.handle.endpoint())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(signed.query)
        .send()
        .await;
    let body = match resp {
        Ok(r) => r.json::<Value>().await.unwrap_or(Value::Null),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        body["Instances"][0]["InstanceId"], "mi-hz01db00001",
        "{body}"
    );
}

#[tokio::test]
async fn faults_fail_next_rate_latency_and_outage() {
    let s = sim().await;
    let p = [("RegionId", HZ)];
    let a = "DescribeActivations";
    s.faults(json!({"fail_next": [
        {"action": a, "count": 2, "code": "Throttling.User", "status": 400, "retry_after_ms": 250}
    ]}))
    .await;
    let other = s.call(ACS3, "DescribeManagedInstances", &p).await;
    assert_eq!(other.status, 200);
    for _ in 0..2 {
        let r = s.call(ACS3, a, &p).await;
        assert_eq!((r.status, r.code()), (400, "Throttling.User"));
        assert_eq!(r.retry_after.as_deref(), Some("250"));
    }
    assert_eq!(s.call(ACS3, a, &p).await.status, 200);

    s.faults(json!({"dispatch_error_rate": 1.0})).await;
    let r = s.call(RPC, a, &p).await;
    assert_eq!((r.status, r.code()), (500, "InternalError.Dispatch"));
    s.faults(json!({"action_error_rates": {"DisableActivation": 1.0}}))
        .await;
    assert_eq!(s.call(RPC, a, &p).await.status, 200);

    s.faults(json!({"latency_ms": 300})).await;
    let t = Instant::now();
    assert_eq!(s.call(ACS3, a, &p).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    s.faults(json!({"outage": "unavailable"})).await;
    let r = s.call(ACS3, a, &p).await;
    assert_eq!((r.status, r.code()), (503, "ServiceUnavailable"));

    s.faults(json!({"outage": "refuse"})).await;
    let refused = s
        .raw(
            ACS3,
            &s.creds,
            a,
            &p,
            &sign::new_nonce(),
            &sign::timestamp_now(),
        )
        .await;
    assert!(refused.is_err());
    let fresh = reqwest::Client::new()
        .post(format!("{}/", s.handle.endpoint()))
        .send()
        .await;
    assert!(fresh.is_err());

    let (st, _) = s
        .control(reqwest::Method::DELETE, "/_sim/faults", None)
        .await;
    assert_eq!(st, 204);
    assert_eq!(s.call(ACS3, a, &p).await.status, 200);
    let (st, _) = s
        .control(
            reqwest::Method::POST,
            "/_sim/faults",
            Some(json!({"throttle_rate": 2})),
        )
        .await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn faults_from_config_and_control_plane_log_and_state() {
    let s = sim_with(FaultSettings {
        dispatch_error_rate: 1.0,
        ..FaultSettings::default()
    })
    .await;
    let r = s
        .call(ACS3, "DescribeActivations", &[("RegionId", HZ)])
        .await;
    assert_eq!(r.code(), "InternalError.Dispatch");
    s.control(reqwest::Method::DELETE, "/_sim/faults", None)
        .await;
    let r = s
        .call(RPC, "DescribeActivations", &[("RegionId", HZ)])
        .await;
    assert_eq!(r.status, 200);
    let (_, log) = s
        .control(reqwest::Method::GET, "/_sim/requests", None)
        .await;
    let log = log.as_array().cloned().unwrap_or_default();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["code"], "InternalError.Dispatch");
    assert_eq!(log[0]["http_status"], 500);
    assert_eq!(log[1]["code"], "OK");
    assert_eq!(log[1]["signature_version"], "hmac-sha1");
    assert_eq!(log[1]["access_key_id"], "testid");
    assert_eq!(log[1]["params"]["RegionId"], HZ);
    assert_eq!(log[1]["seq"], 2);
    s.control(reqwest::Method::DELETE, "/_sim/requests", None)
        .await;
    let (_, log) = s
        .control(reqwest::Method::GET, "/_sim/requests", None)
        .await;
    assert_eq!(log.as_array().map(Vec::len), Some(0));

    let seed =
        json!({"Instances": [{"RegionId": HZ, "InstanceId": "mi-only", "InvocationCount": "3"}]});
    let (st, _) = s
        .control(reqwest::Method::PUT, "/_sim/state", Some(seed))
        .await;
    assert_eq!(st, 204);
    let state = s.state().await;
    assert_eq!(state.instances.len(), 1);
    assert_eq!(state.activations.len(), 0);
    let (st, _) = s
        .control(
            reqwest::Method::PUT,
            "/_sim/state",
            Some(json!({"Instances": 5})),
        )
        .await;
    assert_eq!(st, 400);
}
