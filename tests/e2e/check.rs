//! `lifecycle-worker check`, the preflight (CONTRACT section 7), as an operator
//! runs it: environment variables only, against the real broker and the
//! simulator. It says `ok` or `FAIL` per check with the service's own code and
//! message, exits 0 / 1 / 2, never prints a secret, and never changes anything
//! in the cloud (the simulator's request log shows every call it made).

use crate::support::*;
use serde_json::json;

const ACCOUNT: &str = "1234567890";
const DENIED: &str = "2222222222";

fn role(account: &str) -> String {
    format!("acs:ram::{account}:role/lifecycle-worker")
}

/// The environment `check` gets in these tests: one allowed region (the
/// simulator serves one), STS at the simulator, two mapped accounts.
async fn env_with_roles() -> (Env, String, String) {
    let env = Env::new(seed_instances(2)).await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(ACCOUNT)})),
    )
    .await;
    env.sim_send(
        reqwest::Method::POST,
        "/_sim/roles",
        Some(json!({"RoleArn": role(DENIED), "Denied": true})),
    )
    .await;
    let roles = format!("{ACCOUNT}={}", role(ACCOUNT));
    let sts = env.sim.endpoint();
    (env, roles, sts)
}

fn lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_keys_pass_every_check_and_nothing_is_changed() {
    let (env, roles, sts) = env_with_roles().await;
    let before = env.sim_get("/_sim/state").await;
    for signature in ["acs3-hmac-sha256", "hmac-sha1"] {
        let (code, out, err) = env
            .run_cli_with(
                &["check"],
                &[
                    ("LIFECYCLE__SECURITY__ALLOWED_REGIONS", REGION),
                    ("LIFECYCLE__ACCOUNTS__ROLES", roles.as_str()),
                    ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
                    ("LIFECYCLE__ECS__SIGNATURE", signature),
                ],
            )
            .await;
        assert_eq!(code, Some(0), "{signature}\n{out}\n{err}");
        let lines = lines(&out);
        assert_eq!(lines.len(), 3, "one line per check: {out}");
        assert!(lines[0].starts_with("ok   broker: "), "{out}");
        assert!(
            lines[1].starts_with(&format!(
                "ok   ecs {REGION}: DescribeManagedInstances accepted, signed with {signature}"
            )),
            "{out}"
        );
        assert!(
            lines[2].starts_with(&format!("ok   account {ACCOUNT}: role {}", role(ACCOUNT))),
            "{out}"
        );
    }
    // Read-only: every call the simulator saw is a describe with MaxResults 1
    // or an AssumeRole; the world is as it was.
    let requests = env.requests().await;
    assert!(!requests.is_empty());
    for r in &requests {
        match r["action"].as_str() {
            Some("DescribeManagedInstances") => assert_eq!(r["params"]["MaxResults"], "1", "{r}"),
            Some("AssumeRole") => {}
            other => panic!("check made a {other:?} call: {r}"),
        }
    }
    assert_eq!(env.sim_get("/_sim/state").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_with_the_services_string_to_sign_and_no_secret() {
    let (env, roles, sts) = env_with_roles().await;
    let wrong = "wrong-secret-value-4f1d";
    let (code, out, err) = env
        .run_cli_with(
            &["check"],
            &[
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", wrong),
                ("LIFECYCLE__SECURITY__ALLOWED_REGIONS", REGION),
                ("LIFECYCLE__ACCOUNTS__ROLES", roles.as_str()),
                ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
            ],
        )
        .await;
    assert_eq!(code, Some(1), "{out}\n{err}");
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "every check runs: {out}");
    assert!(lines[0].starts_with("ok   broker"), "{out}");
    assert!(
        lines[1].starts_with(&format!(
            "FAIL ecs {REGION}: SignatureDoesNotMatch: The request signature does not conform to Aliyun standards. server string to sign is:ACS3-HMAC-SHA256\\n"
        )),
        "{out}"
    );
    assert!(lines[1].contains("credentials from environment"), "{out}");
    assert!(
        lines[2].starts_with(&format!("FAIL account {ACCOUNT}: SignatureDoesNotMatch")),
        "{out}"
    );
    for secret in [wrong, KEY_SECRET] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_a_denied_role_and_a_dead_broker_each_fail_their_own_line() {
    let (env, _, sts) = env_with_roles().await;
    let roles = format!("{ACCOUNT}={}, {DENIED}={}", role(ACCOUNT), role(DENIED));
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let (code, out, err) = env
        .run_cli_with(
            &["check"],
            &[
                ("LIFECYCLE__AMQP__URL", dead.as_str()),
                ("LIFECYCLE__SECURITY__ALLOWED_REGIONS", REGION),
                ("LIFECYCLE__ACCOUNTS__ROLES", roles.as_str()),
                ("LIFECYCLE__STS__ENDPOINT", sts.as_str()),
            ],
        )
        .await;
    assert_eq!(
        code,
        Some(1),
        "an unreachable broker is a failed check, not a settings error\n{out}\n{err}"
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("FAIL broker: cannot connect to 127.0.0.1:"),
        "{out}"
    );
    assert!(
        !lines[0].contains("guest:guest"),
        "no credentials of the URL: {out}"
    );
    assert!(lines[1].starts_with(&format!("ok   ecs {REGION}")), "{out}");
    assert!(
        lines[2].starts_with(&format!("ok   account {ACCOUNT}")),
        "{out}"
    );
    assert!(
        lines[3].starts_with(&format!("FAIL account {DENIED}: NoPermission: ")),
        "{out}"
    );

    let (code, out, _) = env
        .run_cli_with(
            &["check"],
            &[
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-unknown"),
                ("LIFECYCLE__SECURITY__ALLOWED_REGIONS", REGION),
            ],
        )
        .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        lines_of(&out, 1).starts_with(&format!("FAIL ecs {REGION}: InvalidAccessKeyId.NotFound: ")),
        "{out}"
    );
    let (code, _, err) = env
        .run_cli_with(&["check"], &[("LIFECYCLE__AMQP__PREFETCH", "many")])
        .await;
    assert_eq!(code, Some(2), "bad settings exit 2 as `run` does: {err}");
    assert!(err.contains("amqp.prefetch"), "{err}");
}

fn lines_of(out: &str, i: usize) -> &str {
    lines(out).get(i).copied().unwrap_or_default()
}
