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

/// A leak-alert's call never waits behind bulk calls: with bulk calls queued
/// (2 s of tokens), it goes at once on borrowed tokens, and once it has
/// borrowed all it may, it takes the next token before the queued bulk calls.
#[tokio::test(start_paused = true)]
async fn a_security_call_goes_before_queued_bulk_calls() {
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
    let borrowed = SECURITY_BORROW as usize;
    for _ in 0..borrowed {
        assert_eq!(call(&l, &k, Lane::Security).await, Duration::ZERO);
    }
    // Borrowed out: the next security call waits for the next token, which it
    // takes before the twenty bulk calls queued before it.
    let waited = call(&l, &k, Lane::Security).await;
    assert_eq!(waited, Duration::from_millis(100 * (borrowed as u64 + 1)));
    let mut bulk_waits = Vec::new();
    for b in bulk {
        bulk_waits.push(b.await.expect("joins"));
    }
    bulk_waits.sort();
    // The bulk lane paid back the borrowed tokens and the one taken ahead of it.
    let paid = 100 * (borrowed as u64 + 1);
    assert_eq!(bulk_waits[0], Duration::from_millis(100 + paid));
    assert_eq!(bulk_waits[19], Duration::from_millis(2000 + paid));
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

/// Throttling lowers the allowed rate by half the throttled fraction each
/// window; windows without throttling add a twentieth of the ceiling.
#[tokio::test(start_paused = true)]
async fn throttling_lowers_the_rate_and_it_recovers() {
    let l = Arc::new(RateLimiter::new(100, 10));
    let k = key("cn-hangzhou");
    assert_eq!(l.allowed_rate(&k), 100.0);
    // One window: 10 answers, 6 throttled (f = 0.6): 100 · 0.7 + 5 = 75.
    for i in 0..10 {
        if i < 6 {
            l.throttled(&k, Lane::Bulk);
        } else {
            l.succeeded(&k);
        }
    }
    tokio::time::sleep(WINDOW).await;
    l.succeeded(&k);
    assert!(
        (l.allowed_rate(&k) - 75.0).abs() < 1e-9,
        "{}",
        l.allowed_rate(&k)
    );
    // Then only successes: +5 per window, up to the ceiling and no further.
    let mut trace = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(WINDOW).await;
        l.succeeded(&k);
        trace.push(l.allowed_rate(&k));
    }
    assert_eq!(trace, [80.0, 85.0, 90.0, 95.0, 100.0, 100.0, 100.0, 100.0]);
}

/// A throttling fraction that does not depend on the rate makes the rate
/// settle (at ceiling / (10 f)), not fall to the floor.
#[tokio::test(start_paused = true)]
async fn a_constant_throttling_fraction_settles_the_rate() {
    let l = Arc::new(RateLimiter::new(100, 10));
    let k = key("cn-hangzhou");
    let mut trace = Vec::new();
    for _ in 0..120 {
        for i in 0..10 {
            if i < 3 {
                l.throttled(&k, Lane::Bulk);
            } else {
                l.succeeded(&k);
            }
        }
        tokio::time::sleep(WINDOW).await;
        trace.push(l.allowed_rate(&k));
    }
    let settled = &trace[60..];
    assert!(
        settled.iter().all(|r| (r - 100.0 / 3.0).abs() < 1.0),
        "settles near 33/s: {trace:?}"
    );
}

/// A quota below the ceiling (throttling only above it) is found and held.
#[tokio::test(start_paused = true)]
async fn a_quota_below_the_ceiling_is_found() {
    let l = Arc::new(RateLimiter::new(100, 10));
    let k = key("cn-hangzhou");
    let quota = 40.0;
    let mut trace = Vec::new();
    for _ in 0..60 {
        let rate = l.allowed_rate(&k);
        // One window's worth of calls at the allowed rate; the API throttles the excess.
        let calls = rate.round().max(1.0) as u32;
        let over = ((rate - quota).max(0.0)).round() as u32;
        for i in 0..calls {
            if i < over {
                l.throttled(&k, Lane::Bulk);
            } else {
                l.succeeded(&k);
            }
        }
        tokio::time::sleep(WINDOW).await;
        trace.push(rate);
    }
    let settled = &trace[30..];
    assert!(
        settled.iter().all(|r| (30.0..=50.0).contains(r)),
        "holds near the 40/s quota: {trace:?}"
    );
}

#[test]
fn the_aimd_step() {
    assert!(
        (aimd(100.0, 0.0, 100.0, 1.0) - 100.0).abs() < 1e-9,
        "capped at the ceiling"
    );
    assert!((aimd(50.0, 0.0, 100.0, 1.0) - 55.0).abs() < 1e-9);
    assert!((aimd(50.0, 1.0, 100.0, 1.0) - 30.0).abs() < 1e-9);
    assert!(
        (aimd(50.0, 0.0, 100.0, 3.0) - 65.0).abs() < 1e-9,
        "idle windows still recover"
    );
    assert!(
        (aimd(0.6, 1.0, 100.0, 0.0) - 0.5).abs() < 1e-9,
        "never below the floor"
    );
}
