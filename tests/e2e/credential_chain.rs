//! The worker binary without static keys finds its credentials through the
//! default chain: a `ram_role_arn` profile file (AssumeRole against the
//! simulator's STS), or the ECS instance RAM role from a fake metadata service;
//! either way a decommission completes and no secret reaches the log.

use crate::support::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use serde_json::{Value, json};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const ROLE: &str = "acs:ram::1234567890:role/lifecycle-worker";

/// No static keys for the worker: empty values count as unset.
const NO_KEYS: [(&str, &str); 2] = [
    ("ALIBABA_CLOUD_ACCESS_KEY_ID", ""),
    ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ""),
];

fn deregistration(reqs: &[Value], instance: &str) -> Value {
    reqs.iter()
        .find(|r| {
            r["action"] == "DeregisterManagedInstance" && r["params"]["InstanceId"] == instance
        })
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ram_role_arn_profile_file_drives_a_decommission() {
    let env = Env::new(seed_instances(1)).await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": ROLE})),
    )
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\ntype = access_key\naccess_key_id = unused\naccess_key_secret = unused\n\n\
             [offboarding]\ntype = ram_role_arn\naccess_key_id = {KEY_ID}\n\
             access_key_secret = {KEY_SECRET}\nrole_arn = {ROLE}\nrole_session_name = e2e\n"
        ),
    )
    .expect("profile file");
    let sts = env.sim.endpoint();
    let file = file.display().to_string();
    let mut extra = NO_KEYS.to_vec();
    extra.extend([
        ("ALIBABA_CLOUD_CREDENTIALS_FILE", file.as_str()),
        ("ALIBABA_CLOUD_PROFILE", "offboarding"),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
        ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
    ]);
    let w = env.start_process(&extra).await;

    let id = new_id("profile");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    env.wait_for("the decommission", T, |e| completed(e, &id, "succeeded"))
        .await;

    let reqs = env.requests().await;
    let d = deregistration(&reqs, &inst(0));
    assert_eq!(d["role_arn"], ROLE, "{d}");
    assert!(
        d["access_key_id"]
            .as_str()
            .is_some_and(|k| k.starts_with("STS.")),
        "{d}"
    );
    let assumed: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["action"] == "AssumeRole")
        .collect();
    assert_eq!(assumed.len(), 1, "{assumed:?}");
    assert_eq!(assumed[0]["access_key_id"], KEY_ID);
    assert_eq!(assumed[0]["params"]["RoleSessionName"], "e2e");

    let log = w.stderr();
    assert!(log.contains("credential source in use"), "{log}");
    assert!(log.contains("profile"), "{log}");
    assert!(!log.contains(KEY_SECRET), "secret in the log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_ram_role_from_the_metadata_service_drives_a_decommission() {
    let env = Env::new(seed_instances(1)).await;
    // The instance role's (temporary) key, as the simulator knows it.
    const META_ID: &str = "STS.instance-role";
    const META_SECRET: &str = "instance-role-secret";
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/keys",
        Some(json!({"AccessKeyId": META_ID, "AccessKeySecret": META_SECRET})),
    )
    .await;
    let expiration = (time::OffsetDateTime::now_utc() + time::Duration::hours(6))
        .replace_nanosecond(0)
        .expect("ns")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("fmt");
    let router = Router::new()
        .route("/latest/api/token", put(|| async { "imds-token" }))
        .route(
            "/latest/meta-data/ram/security-credentials/",
            get(|| async { "OffboardingRole" }),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/OffboardingRole",
            get(move |h: HeaderMap| {
                let expiration = expiration.clone();
                async move {
                    if h.get("x-aliyun-ecs-metadata-token")
                        .is_none_or(|t| t != "imds-token")
                    {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    let body = json!({
                        "AccessKeyId": META_ID,
                        "AccessKeySecret": META_SECRET,
                        "SecurityToken": "instance-role-token",
                        "Expiration": expiration,
                        "Code": "Success",
                    });
                    (StatusCode::OK, body.to_string())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metadata = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let mut extra = NO_KEYS.to_vec();
    extra.push((
        "LIFECYCLE__CREDENTIALS__METADATA_ENDPOINT",
        metadata.as_str(),
    ));
    // The harness disables the metadata source by default; this test points it at the fake.
    extra.push(("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "false"));
    let w = env.start_process(&extra).await;

    let id = new_id("imds");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    env.wait_for("the decommission", T, |e| completed(e, &id, "succeeded"))
        .await;
    let d = deregistration(&env.requests().await, &inst(0));
    assert_eq!(d["access_key_id"], META_ID, "{d}");

    let log = w.stderr();
    assert!(log.contains("ecs_ram_role"), "{log}");
    assert!(!log.contains(META_SECRET), "secret in the log: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_simulator_still_runs_without_any_keys() {
    let env = Env::new(seed_instances(1)).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut extra = NO_KEYS.to_vec();
    extra.extend([
        ("LIFECYCLE__SIMULATOR__ENABLED", "true"),
        ("LIFECYCLE__SIMULATOR__LISTEN", listen.as_str()),
        ("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true"),
    ]);
    let w = env.start_process(&extra).await;
    let id = new_id("local");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    // The embedded simulator's world is empty: the instance is already gone.
    env.wait_for("the decommission", T, |e| {
        e.iter()
            .any(|ev| ev.command_id() == id && ev.ty() == "command.completed")
    })
    .await;
    let log = w.stderr();
    assert!(log.contains("static credentials in use"), "{log}");
    assert!(!log.contains("default credential chain"), "{log}");
}
