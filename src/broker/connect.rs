//! Opening a broker connection, plain or TLS (`amqps://`).
//!
//! TLS uses rustls. The server is verified against the system roots, or
//! against `amqp.tls_ca_file` when set (a private CA); `amqp.tls_client_cert_file`
//! and `amqp.tls_client_key_file` (PEM, PKCS#8 key) add a client certificate
//! for brokers that authenticate clients by certificate.

use crate::settings::AmqpSettings;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

/// The largest AMQP frame the worker asks for, unless the URL names one
/// (`?frame_max=`); the broker may lower it, never raise it.
///
/// lapin keeps a send and a receive buffer of 32 frames per connection, zero
/// filled: at RabbitMQ's default of 128 KiB that is 8 MiB of resident memory
/// for messages of a few KiB (events are 1–2 KiB). At 8 KiB it is 512 KiB,
/// and a command near the 64 KiB limit simply travels in eight body frames.
pub const DEFAULT_FRAME_MAX: u32 = 8 * 1024;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A TLS file could not be read.
    #[error("{key}: cannot read {path}: {reason}")]
    TlsFile {
        /// The setting naming the file.
        key: &'static str,
        /// The path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The URL is not an AMQP URL (the message never repeats it: it holds a password).
    #[error("amqp.url is not a valid AMQP URL")]
    Url,
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
    /// The attempt (TCP, TLS, AMQP handshake) outlasted `amqp.connect_timeout_ms`.
    #[error("no connection within amqp.connect_timeout_ms ({0} ms)")]
    Timeout(u64),
    /// Every node of a multi-node `amqp.url` failed in one round; each node
    /// by its position in the list and its failure.
    #[error("no node of amqp.url answered ({0})")]
    AllNodes(String),
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| ConnectError::TlsFile {
        key,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The TLS settings as lapin takes them.
pub fn tls_config(amqp: &AmqpSettings) -> Result<OwnedTLSConfig, ConnectError> {
    let cert_chain = if amqp.tls_ca_file.is_empty() {
        None
    } else {
        let pem = read("amqp.tls_ca_file", &amqp.tls_ca_file)?;
        Some(String::from_utf8_lossy(&pem).into_owned())
    };
    let identity = match (
        amqp.tls_client_cert_file.is_empty(),
        amqp.tls_client_key_file.is_empty(),
    ) {
        (true, true) => None,
        _ => Some(OwnedIdentity::PKCS8 {
            pem: read("amqp.tls_client_cert_file", &amqp.tls_client_cert_file)?,
            key: read("amqp.tls_client_key_file", &amqp.tls_client_key_file)?,
        }),
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The nodes of `amqp.url` (comma-separated) as lapin takes them, in the
/// order written, each asking for [`DEFAULT_FRAME_MAX`] and the configured
/// heartbeat unless its URL says otherwise.
pub fn uris(amqp: &AmqpSettings) -> Result<Vec<AMQPUri>, ConnectError> {
    amqp.url
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let mut uri: AMQPUri = u.parse().map_err(|_| ConnectError::Url)?;
            uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
            uri.query.heartbeat.get_or_insert(amqp.heartbeat_s);
            Ok(uri)
        })
        .collect()
}

/// The first node of `amqp.url`, for messages that name where the worker
/// connects (host, port, vhost; never the credentials).
pub fn uri(amqp: &AmqpSettings) -> Result<AMQPUri, ConnectError> {
    uris(amqp)?.into_iter().next().ok_or(ConnectError::Url)
}

/// A fresh random order of `n` nodes for one reconnect round: workers that
/// lose the same node spread over the others instead of all moving to the
/// next one in the list.
pub fn round_order(n: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rng());
    order
}

/// Where a connection landed: the node's position in `amqp.url`, from 1.
pub struct Connected {
    /// The connection.
    pub connection: Connection,
    /// 1-based index of the node in `amqp.url` (no host, no credentials).
    pub node: usize,
}

/// One round over every node of `amqp.url` in a fresh random order, each
/// attempt (TCP, TLS, AMQP handshake) bounded by `amqp.connect_timeout_ms`;
/// the first node that answers wins. The connection is named (operators find
/// it in `rabbitmqctl list_connections`).
pub async fn connect_any(amqp: &AmqpSettings, name: &str) -> Result<Connected, ConnectError> {
    let uris = uris(amqp)?;
    let tls = tls_config(amqp)?;
    let mut failures = Vec::new();
    for index in round_order(uris.len()) {
        match attempt(amqp, name, uris[index].clone(), tls.clone()).await {
            Ok(connection) => {
                return Ok(Connected {
                    connection,
                    node: index + 1,
                });
            }
            Err(e) if uris.len() == 1 => return Err(e),
            Err(e) => failures.push(format!("node {}: {e}", index + 1)),
        }
    }
    Err(ConnectError::AllNodes(failures.join("; ")))
}

/// [`connect_any`] without saying which node answered.
pub async fn connect(amqp: &AmqpSettings, name: &str) -> Result<Connection, ConnectError> {
    Ok(connect_any(amqp, name).await?.connection)
}

async fn attempt(
    amqp: &AmqpSettings,
    name: &str,
    uri: AMQPUri,
    tls: OwnedTLSConfig,
) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    let attempt = Connection::connect_uri_with_config(uri, props, tls, runtime);
    let limit = std::time::Duration::from_millis(amqp.connect_timeout_ms);
    match tokio::time::timeout(limit, attempt).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(ConnectError::Timeout(amqp.connect_timeout_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::settings::Settings;

    fn amqp(url: &str) -> AmqpSettings {
        let no_env: [(String, String); 0] = [];
        let mut amqp = Settings::load(&[], no_env).expect("defaults load").amqp;
        amqp.url = Secret::new(url.to_owned());
        amqp
    }

    #[test]
    fn asks_for_small_frames_unless_the_url_names_a_size() {
        let default = uri(&amqp("amqp://guest:guest@127.0.0.1:5672/%2f")).expect("parses");
        assert_eq!(default.query.frame_max, Some(DEFAULT_FRAME_MAX));
        let named = uri(&amqp("amqp://u:p@broker:5672/v?frame_max=131072")).expect("parses");
        assert_eq!(named.query.frame_max, Some(131_072));
        assert_eq!(named.vhost, "v");
    }

    /// A listener that accepts TCP and never speaks AMQP: lapin alone would
    /// wait forever; the attempt ends at `amqp.connect_timeout_ms`.
    #[tokio::test]
    async fn a_silent_broker_times_out() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = silent.local_addr().expect("addr").port();
        let mut amqp = amqp(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"));
        amqp.connect_timeout_ms = 300;
        let started = std::time::Instant::now();
        let e = connect(&amqp, "test").await.err();
        assert!(matches!(e, Some(ConnectError::Timeout(300))), "{e:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        drop(silent);
    }

    #[test]
    fn a_cluster_is_a_comma_separated_list_each_with_the_heartbeat() {
        let mut settings = amqp(
            "amqp://u:p@10.0.0.1:5672/v, amqp://u:p@10.0.0.2:5672/v,amqp://u:p@10.0.0.3:5672/v?heartbeat=3",
        );
        settings.heartbeat_s = 7;
        let nodes = uris(&settings).expect("parses");
        let hosts: Vec<&str> = nodes.iter().map(|u| u.authority.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let beats: Vec<_> = nodes.iter().map(|u| u.query.heartbeat).collect();
        assert_eq!(beats, [Some(7), Some(7), Some(3)]);
        assert!(
            nodes
                .iter()
                .all(|u| u.query.frame_max == Some(DEFAULT_FRAME_MAX))
        );
    }

    #[test]
    fn each_round_is_a_permutation_in_a_fresh_order() {
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut order = round_order(3);
            firsts.insert(order[0]);
            order.sort_unstable();
            assert_eq!(order, [0, 1, 2]);
        }
        assert_eq!(firsts.len(), 3, "every node comes first in some round");
    }

    /// A dead node and a silent node cost one bounded attempt each; the round
    /// goes on to the node that answers (here RabbitMQ on 5672, when it runs).
    #[tokio::test]
    async fn a_round_skips_dead_and_silent_nodes_and_names_them_when_all_fail() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        let dead_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let mut settings = amqp(&format!(
            "amqp://guest:secret-pw@127.0.0.1:{dead_port}/%2f,amqp://guest:secret-pw@127.0.0.1:{silent_port}/%2f"
        ));
        settings.connect_timeout_ms = 300;
        let started = std::time::Instant::now();
        let e = connect_any(&settings, "test")
            .await
            .err()
            .expect("no node answers");
        let text = e.to_string();
        assert!(
            text.contains("node 1: ") && text.contains("node 2: "),
            "{text}"
        );
        assert!(text.contains("300 ms"), "{text}");
        assert!(!text.contains("secret-pw"), "{text}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        drop(silent);
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let e = uri(&amqp("amqp://user:hunter2@[::1")).expect_err("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
