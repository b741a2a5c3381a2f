//! The broker's view of client connections, for closing them under a worker.

use crate::vhost::rabbitmqctl;

/// Broker-side ids (`<rabbit@host.1.2.3>`, what `rabbitmqctl close_connection`
/// takes) of the connections on `vhost` whose client named them `name`
/// (the worker names its two `lifecycle-worker` and `lifecycle-worker-publisher`).
pub async fn connections_named(vhost: &str, name: &str) -> Vec<String> {
    let out = tokio::task::spawn_blocking(|| {
        rabbitmqctl(&[
            "-q",
            "list_connections",
            "pid",
            "vhost",
            "client_properties",
        ])
    })
    .await
    .expect("rabbitmqctl list_connections");
    let named = format!("{{\"connection_name\",\"{name}\"}}");
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(vhost))
        .filter(|l| l.contains(&named))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|p| p.starts_with('<'))
        .collect()
}
