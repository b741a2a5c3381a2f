//! `amqps://` with rustls: a private CA bundle and a client certificate from
//! settings.
//!
//! RabbitMQ here has no TLS listener (enabling one means restarting the broker
//! every other test uses), so the test puts a TLS terminator in front of it: a
//! rustls server that requires a client certificate from the test CA and
//! forwards the decrypted stream to 127.0.0.1:5672. The worker's whole AMQP
//! session therefore runs over TLS, with server verification against the CA
//! file and client authentication by certificate.

use crate::support::*;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};

struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("ca");
    Ca {
        pem: cert.pem(),
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate signed by `ca`: (cert DER, cert PEM, key PKCS#8 DER, key PEM).
fn leaf(
    ca: &Ca,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
) -> (CertificateDer<'static>, String, Vec<u8>, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca.issuer).expect("leaf");
    (
        cert.der().clone(),
        cert.pem(),
        key.serialize_der(),
        key.serialize_pem(),
    )
}

/// Starts the TLS terminator; returns its port, the count of completed
/// handshakes and the count of refused ones.
async fn tls_proxy(ca: &Ca) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (cert, _, key, _) = leaf(ca, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let provider = Arc::new(crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).expect("root");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    let refusals = refused.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    refusals.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                }
            });
        }
    });
    (port, handshakes, refused)
}

/// Waits until the terminator has refused two more handshakes than `before`:
/// the worker tried, failed, and tried again.
async fn wait_refused_twice(refused: &AtomicUsize, before: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::SeqCst) < before + 2 {
        assert!(Instant::now() < deadline, "the worker never retried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_private_ca_and_client_certificate() {
    let env = Env::new(seed_instances(1)).await;
    let ca = new_ca();
    let (port, handshakes, refused) = tls_proxy(&ca).await;
    let (_, client_pem, _, client_key_pem) = leaf(
        &ca,
        &["lifecycle-worker"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let dir = env.tmp.path();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let ca_file = write("ca.pem", &ca.pem);
    let cert_file = write("client.pem", &client_pem);
    let key_file = write("client.key", &client_key_pem);
    let url = format!("amqps://guest:guest@localhost:{port}/{}", env.vhost.name);

    // Verified server, authenticated client: the worker works end to end over TLS.
    let w = env
        .start_worker(&[
            ("LIFECYCLE__AMQP__URL", url.as_str()),
            ("LIFECYCLE__AMQP__TLS_CA_FILE", ca_file.as_str()),
            ("LIFECYCLE__AMQP__TLS_CLIENT_CERT_FILE", cert_file.as_str()),
            ("LIFECYCLE__AMQP__TLS_CLIENT_KEY_FILE", key_file.as_str()),
        ])
        .await;
    assert!(handshakes.load(Ordering::SeqCst) >= 1);
    let id = new_id("tls");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    env.wait_for("completion over TLS", Duration::from_secs(30), |e| {
        completed(e, &id, "succeeded")
    })
    .await;
    drop(w);

    // A server certificate from another CA is refused: never ready.
    let other = new_ca();
    let other_file = write("other-ca.pem", &other.pem);
    let before = handshakes.load(Ordering::SeqCst);
    let refused_before = refused.load(Ordering::SeqCst);
    let w = env
        .spawn_worker(&[
            ("LIFECYCLE__AMQP__URL", url.as_str()),
            ("LIFECYCLE__AMQP__TLS_CA_FILE", other_file.as_str()),
            ("LIFECYCLE__AMQP__TLS_CLIENT_CERT_FILE", cert_file.as_str()),
            ("LIFECYCLE__AMQP__TLS_CLIENT_KEY_FILE", key_file.as_str()),
        ])
        .await;
    wait_refused_twice(&refused, refused_before).await;
    assert_ne!(w.readyz().await.map(|r| r.0), Some(200), "{}", w.stderr());
    assert_eq!(handshakes.load(Ordering::SeqCst), before);
    drop(w);

    // Without a client certificate the terminator refuses the session: never ready.
    let refused_before = refused.load(Ordering::SeqCst);
    let w = env
        .spawn_worker(&[
            ("LIFECYCLE__AMQP__URL", url.as_str()),
            ("LIFECYCLE__AMQP__TLS_CA_FILE", ca_file.as_str()),
        ])
        .await;
    wait_refused_twice(&refused, refused_before).await;
    assert_ne!(w.readyz().await.map(|r| r.0), Some(200), "{}", w.stderr());
    assert_eq!(handshakes.load(Ordering::SeqCst), before);
}
