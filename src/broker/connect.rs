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

/// The broker URL as lapin takes it, asking for [`DEFAULT_FRAME_MAX`] unless
/// the URL says otherwise.
pub fn uri(amqp: &AmqpSettings) -> Result<AMQPUri, ConnectError> {
    let mut uri: AMQPUri = amqp.url.expose().parse().map_err(|_| ConnectError::Url)?;
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    Ok(uri)
}

/// Connects with the configured URL and TLS material, naming the connection
/// (operators find it in `rabbitmqctl list_connections`), within
/// `amqp.connect_timeout_ms`.
pub async fn connect(amqp: &AmqpSettings, name: &str) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    let tls = tls_config(amqp)?;
    let attempt = Connection::connect_uri_with_config(uri(amqp)?, props, tls, runtime);
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
    fn a_bad_url_is_refused_without_repeating_it() {
        let e = uri(&amqp("amqp://user:hunter2@[::1")).expect_err("refused");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
