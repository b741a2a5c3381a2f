use super::*;

fn key(region: &str) -> PaceKey {
    PaceKey {
        region: region.to_owned(),
        account: None,
    }
}

/// Waits for admission like the retrier does; returns when it was admitted.
async fn call(limiter: &Arc<RateLimiter>, k: &PaceKey, lane: Lane) -> Duration {
    let start = Instant::now();
    if let Admission::Wait(ticket) = limiter.admit(k, lane) {
        ticket.await.expect("admitted");
    }
    start.elapsed()
}

#[tokio::test(start_paused = true)]
async fn bursts_then_paces_per_region() {
    let l = Arc::new(RateLimiter::new(10, 5));
    let hz = key("cn-hangzhou");
    for _ in 0..5 {
        assert!(matches!(l.admit(&hz, Lane::Bulk), Admission::Now));
    }
    // The 6th call waits for one token (100 ms at 10/s).
    assert_eq!(call(&l, &hz, Lane::Bulk).await, Duration::from_millis(100));
    // Another region has its own bucket.
    assert!(matches!(
        l.admit(&key("cn-beijing"), Lane::Bulk),
        Admission::Now
    ));
    // After two seconds the bucket refilled (capped at the burst).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        assert!(matches!(l.admit(&hz, Lane::Bulk), Admission::Now));
    }
}

#[tokio::test(start_paused = true)]
async fn sustained_rate_is_respected() {
    let l = Arc::new(RateLimiter::new(20, 1));
    let k = key("r");
    let start = Instant::now();
    let calls: Vec<_> = (0..41)
        .map(|_| {
            let l = Arc::clone(&l);
            let k = k.clone();
            tokio::spawn(async move { call(&l, &k, Lane::Bulk).await })
        })
        .collect();
    for c in calls {
        c.await.expect("joins");
    }
    // 41 calls at 20/s with a burst of 1: the last starts at 2 s.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[test]
fn zero_means_unlimited() {
    let l = Arc::new(RateLimiter::new(0, 0));
    for _ in 0..1000 {
        assert!(matches!(l.admit(&key("r"), Lane::Bulk), Admission::Now));
    }
}

/// A leak-alert's call is admitted before bulk calls already queued: it waits
/// for the next token, not for the backlog.
#[tokio::test(start_paused = true)]
async fn a_security_call_takes_the_next_token_before_queued_bulk_calls() {
    let l = Arc::new(RateLimiter::new(10, 1));
    let k = key("cn-hangzhou");
    assert!(matches!(l.admit(&k, Lane::Bulk), Admission::Now));
    let bulk: Vec<_> = (0..20)
        .map(|_| {
            let l = Arc::clone(&l);
            let k = k.clone();
            tokio::spawn(async move { call(&l, &k, Lane::Bulk).await })
        })
        .collect();
    tokio::task::yield_now().await;
    // Twenty bulk calls queued (2 s of tokens); the security call gets the next one.
    let waited = call(&l, &k, Lane::Security).await;
    assert_eq!(waited, Duration::from_millis(100));
    let mut bulk_waits = Vec::new();
    for b in bulk {
        bulk_waits.push(b.await.expect("joins"));
    }
    bulk_waits.sort();
    // The bulk calls lost one token's time to it, and kept their order otherwise.
    assert_eq!(bulk_waits[0], Duration::from_millis(200));
    assert_eq!(bulk_waits[19], Duration::from_millis(2100));
    // With nobody queued, a security call with a free token goes at once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(matches!(l.admit(&k, Lane::Security), Admission::Now));
}

/// A caller that gives up (shutdown) drops its ticket; its token is not spent.
#[tokio::test(start_paused = true)]
async fn a_dropped_ticket_spends_no_token() {
    let l = Arc::new(RateLimiter::new(10, 1));
    let k = key("r");
    assert!(matches!(l.admit(&k, Lane::Bulk), Admission::Now));
    drop(l.admit(&k, Lane::Bulk));
    assert_eq!(call(&l, &k, Lane::Bulk).await, Duration::from_millis(100));
}

/// Throttling lowers the allowed rate once per burst of answers, and
/// successes bring it back along CUBIC's curve, never past the ceiling.
#[tokio::test(start_paused = true)]
async fn throttling_lowers_the_rate_and_it_recovers() {
    let l = Arc::new(RateLimiter::new(100, 10));
    let k = key("cn-hangzhou");
    assert_eq!(l.allowed_rate(&k), 100.0);
    assert!(matches!(l.admit(&k, Lane::Bulk), Admission::Now));
    l.throttled(&k, Lane::Bulk);
    l.throttled(&k, Lane::Bulk);
    l.throttled(&k, Lane::Security);
    assert!(
        (l.allowed_rate(&k) - 70.0).abs() < 1e-9,
        "one decrease per burst"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    l.throttled(&k, Lane::Bulk);
    assert!(
        (l.allowed_rate(&k) - 49.0).abs() < 1e-9,
        "a later throttle lowers again"
    );
    // Recovery: K = cbrt(70 * 0.3 / 0.4) ≈ 3.74 s back to 70, then beyond.
    let mut trace = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        l.succeeded(&k);
        trace.push(l.allowed_rate(&k));
    }
    assert!(
        trace.windows(2).all(|w| w[1] >= w[0]),
        "recovery never drops: {trace:?}"
    );
    assert!(
        trace[0] > 55.0,
        "quick while far below the old rate: {trace:?}"
    );
    assert!(
        (trace[3] - 70.0).abs() < 1.0,
        "about the old rate after K: {trace:?}"
    );
    assert!(trace[3] - trace[2] < 1.0, "careful near it: {trace:?}");
    assert!(trace[6] > 75.0, "then probing past it: {trace:?}");
    assert_eq!(
        trace[11], 100.0,
        "back at the ceiling, not past it: {trace:?}"
    );
    // At the ceiling, successes change nothing.
    l.succeeded(&k);
    assert_eq!(l.allowed_rate(&k), 100.0);
}

#[test]
fn the_cubic_curve_starts_at_beta_and_returns_at_k() {
    let w = 100.0;
    assert!((cubic(w, 0.0) - w * BETA).abs() < 1e-9);
    let k = (w * (1.0 - BETA) / SCALE).cbrt();
    assert!((cubic(w, k) - w).abs() < 1e-9);
    assert!(cubic(w, k + 1.0) > w);
}
