//! Opening a broker connection, plain or TLS (`amqps://`).
//!
//! TLS uses rustls. The server is verified against the system roots, or
//! against `amqp.tls_ca_file` when set (a private CA); `amqp.tls_client_cert_file`
//! and `amqp.tls_client_key_file` (PEM, PKCS#8 key) add a client certificate
//! for brokers that authenticate clients by certificate.

use crate::settings::AmqpSettings;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};

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
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Broker(#[from] lapin::Error),
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

/// Connects with the configured URL and TLS material, naming the connection
/// (operators find it in `rabbitmqctl list_connections`).
pub async fn connect(amqp: &AmqpSettings, name: &str) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime()?;
    let tls = tls_config(amqp)?;
    Ok(Connection::connect_with_config(amqp.url.expose(), props, tls, runtime).await?)
}
