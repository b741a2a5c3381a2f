//! `lifecycle-worker check`: the preflight of CONTRACT section 7.
//!
//! It takes the settings `run` takes and proves, before going live, what `run`
//! will need: the broker is reachable and the topology declarable (the same
//! idempotent declarations `run` makes), and in every allowed region a call
//! signed with the credentials `run` would use is accepted; for every mapped
//! account, the role is assumed and the same call accepted there. Every check
//! runs even when an earlier one failed, and each prints one line: `ok` or
//! `FAIL` with the service's own code and message, never a secret.
//!
//! Nothing in the cloud changes: the only ECS call is
//! `DescribeManagedInstances` with `MaxResults` 1 (the test suite checks the
//! simulator's request log for anything else); STS `AssumeRole` only issues
//! temporary keys.

use crate::app::CloudAccess;
use crate::broker::connect::{Connected, connect_any, uris};
use crate::broker::topology::Topology;
use crate::domain::error::ApiError;
use crate::settings::Settings;
use std::time::Duration;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What was checked (`broker`, `ecs cn-hangzhou`, `account 123...`).
    pub subject: String,
    /// `Ok(what was shown)` or `Err(why not)`.
    pub result: Result<String, String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One line per check: a service message may hold a newline (the
        // string-to-sign of SignatureDoesNotMatch), shown escaped.
        let (verdict, text) = match &self.result {
            Ok(text) => ("ok  ", text),
            Err(text) => ("FAIL", text),
        };
        write!(
            f,
            "{verdict} {}: {}",
            self.subject,
            text.replace('\r', "\\r").replace('\n', "\\n")
        )
    }
}

/// Runs every check, printing each line as it is decided; true when all passed.
pub async fn run(settings: &Settings) -> anyhow::Result<bool> {
    let mut all_ok = true;
    let mut print = |line: Line| {
        all_ok &= line.result.is_ok();
        println!("{line}");
    };
    print(broker(settings).await);
    let cloud = CloudAccess::build(settings).await?;
    for line in cloud_checks(settings, &cloud).await {
        print(line);
    }
    if let Some(sim) = cloud.simulator {
        sim.shutdown().await;
    }
    Ok(all_ok)
}

/// Connects, declares the topology as `run` does, and disconnects.
async fn broker(settings: &Settings) -> Line {
    let nodes: Vec<String> = uris(&settings.amqp)
        .map(|us| {
            us.iter()
                .map(|u| {
                    format!(
                        "{}:{} vhost {:?}",
                        u.authority.host, u.authority.port, u.vhost
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let at = |node: usize| nodes.get(node.wrapping_sub(1)).cloned().unwrap_or_default();
    let subject = "broker".to_owned();
    let limit = Duration::from_millis(settings.amqp.connect_timeout_ms);
    let result = async {
        let Connected { connection, node } = connect_any(&settings.amqp, "lifecycle-worker-check")
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", nodes.join(", ")))?;
        let at = if nodes.len() > 1 {
            format!("node {node} of {} ({})", nodes.len(), at(node))
        } else {
            at(node)
        };
        let topology = Topology::from_settings(settings);
        let declared = topology.declare(&connection);
        // A declaration can block on a broker in trouble (a frozen cluster member).
        let outcome = match tokio::time::timeout(limit, declared).await {
            Ok(Ok(d)) => Ok(match d.warning() {
                None => format!("connected to {at}, topology declared"),
                Some(w) => format!("connected to {at}, topology declared; note: {w}"),
            }),
            Ok(Err(e)) => Err(format!(
                "connected to {at}, cannot declare the topology: {e}"
            )),
            Err(_) => Err(format!(
                "connected to {at}, topology not declared within amqp.connect_timeout_ms"
            )),
        };
        let _ = connection.close(200, "check done".into()).await;
        outcome
    }
    .await;
    Line { subject, result }
}

/// The signed calls: every allowed region with the worker's own credentials,
/// then every mapped account in the first allowed region.
async fn cloud_checks(settings: &Settings, cloud: &CloudAccess) -> Vec<Line> {
    let signature = settings.ecs.signature;
    let mut lines = Vec::new();
    let own = cloud.identities.resolve(None).await;
    let source = cloud.identities.source(None);
    for region in &settings.security.allowed_regions.0 {
        let subject = format!("ecs {region}");
        let result = match &own {
            Ok(creds) => cloud.ecs.probe(creds, region).await.map_or_else(
                |e| Err(api_failure(&e, "DescribeManagedInstances", &source)),
                |rid| {
                    Ok(format!(
                        "DescribeManagedInstances accepted, signed with {signature}, credentials from {source}{}",
                        request_id(rid.as_deref())
                    ))
                },
            ),
            Err(e) => Err(api_failure(e, "ResolveCredentials", &source)),
        };
        lines.push(Line { subject, result });
    }
    let Some(first) = settings.security.allowed_regions.0.first() else {
        return lines;
    };
    for (account, role) in &settings.accounts.roles.0 {
        let subject = format!("account {account}");
        let source = cloud.identities.source(Some(account));
        let result = match cloud.identities.resolve(Some(account)).await {
            Ok(creds) => cloud.ecs.probe(&creds, first).await.map_or_else(
                |e| Err(api_failure(&e, "DescribeManagedInstances", &source)),
                |rid| {
                    Ok(format!(
                        "role {role} assumed; DescribeManagedInstances in {first} accepted{}",
                        request_id(rid.as_deref())
                    ))
                },
            ),
            Err(e) => Err(api_failure(&e, "AssumeRole", &source)),
        };
        lines.push(Line { subject, result });
    }
    lines
}

/// `Code: Message (action, credentials from source)`: the service's own words.
fn api_failure(e: &ApiError, action: &str, source: &str) -> String {
    let status = e
        .http_status()
        .map(|s| format!("HTTP {s}, "))
        .unwrap_or_default();
    format!(
        "{}: {} ({status}{action}, credentials from {source})",
        e.code(),
        e.message()
    )
}

fn request_id(rid: Option<&str>) -> String {
    rid.map(|r| format!(" (RequestId {r})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_line_with_its_verdict() {
        let failed = Line {
            subject: "ecs cn-hangzhou".into(),
            result: Err(
                "SignatureDoesNotMatch: server string to sign is:ACS3-HMAC-SHA256\nabc".into(),
            ),
        };
        assert_eq!(
            failed.to_string(),
            "FAIL ecs cn-hangzhou: SignatureDoesNotMatch: server string to sign is:ACS3-HMAC-SHA256\\nabc"
        );
        let passed = Line {
            subject: "broker".into(),
            result: Ok("connected".into()),
        };
        assert_eq!(passed.to_string(), "ok   broker: connected");
    }
}
