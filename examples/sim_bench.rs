//! Load generator for the simulator: many concurrent signed calls for a while,
//! then the rate. Run the simulator in another process (ideally pinned to its own
//! core) and point this at it:
//! `cargo run --release --example sim_bench -- http://127.0.0.1:8080 64 10 acs3-hmac-sha256`.

use lifecycle_worker::credentials::Credentials;
use lifecycle_worker::ecs::sign::{self, SignatureVersion, SigningInput};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let version: SignatureVersion = args
        .get(4)
        .and_then(|s| s.parse().ok())
        .unwrap_or(SignatureVersion::Acs3HmacSha256);
    let host = endpoint.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let creds = Arc::new(Credentials::static_key("testid", "testsecret"));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, ok, failed, creds) =
            (client.clone(), ok.clone(), failed.clone(), creds.clone());
        let (endpoint, host) = (endpoint.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let params = vec![
                ("RegionId".to_owned(), "cn-hangzhou".to_owned()),
                ("InstanceId.1".to_owned(), "mi-hz01web0001".to_owned()),
            ];
            while Instant::now() < deadline {
                let (nonce, ts) = (sign::new_nonce(), sign::timestamp_now());
                let signed = sign::sign(
                    version,
                    &creds,
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
                let mut req = client.post(format!("{endpoint}/?{}", signed.query));
                for (k, v) in &signed.headers {
                    req = req.header(k, v);
                }
                let good = match req.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let counter = if good { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "{version}: {ok} ok, {failed} failed in {seconds}s = {:.0} req/s",
        ok as f64 / seconds as f64
    );
}
