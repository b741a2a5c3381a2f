//! The renewal rule for temporary credentials, shared by role sessions per
//! account ([`super::identities`]) and by the temporary sources of the default
//! chain (OIDC, `ram_role_arn` profiles, the ECS metadata service, a
//! credentials URI).
//!
//! Renew when less than a quarter of the lifetime or 15 minutes is left,
//! whichever is less; one renewal at a time (callers queue behind it and reuse
//! its result, so a burst of commands is one fetch). When a renewal fails while
//! the cached credentials have not expired yet, they are still used (and the
//! next caller tries again); once expired, the failure is the caller's.

use super::Credentials;
use super::sts::Session;
use crate::domain::error::ApiError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::warn;

/// Renew when less than this is left, or a quarter of the lifetime if smaller.
pub const RENEW_MARGIN: Duration = Duration::from_secs(15 * 60);

/// What time it is (injectable so tests can move it).
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// True when a session obtained at `obtained_at` and expiring at `expires_at`
/// should be renewed at `now`.
pub fn needs_renewal(
    obtained_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    let lifetime: time::Duration = expires_at - obtained_at;
    let cap = time::Duration::try_from(RENEW_MARGIN).unwrap_or(time::Duration::ZERO);
    let quarter: time::Duration = lifetime / 4_i32;
    expires_at - now < quarter.min(cap)
}

#[derive(Debug, Clone)]
struct Cached {
    session: Session,
    obtained_at: OffsetDateTime,
}

#[derive(Debug, Default)]
struct Slot {
    cached: Option<Cached>,
    /// The last fetch's failure, shared with those who waited for it.
    failure: Option<ApiError>,
}

/// One cached session, renewed ahead of expiry, one renewal at a time.
///
/// Callers that wait while a renewal runs reuse its result, its failure
/// included: when STS is slow or refusing, a burst of commands is one STS
/// call, not one call each in turn behind the lock.
pub struct SessionCache {
    slot: tokio::sync::Mutex<Slot>,
    /// Fetches finished so far, read on arrival (before waiting for the
    /// lock): a caller that sees more when it gets the lock waited through a
    /// fetch and reuses its result.
    finished: std::sync::atomic::AtomicU64,
    clock: Clock,
}

impl SessionCache {
    /// An empty cache reading time from `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            slot: tokio::sync::Mutex::new(Slot::default()),
            finished: std::sync::atomic::AtomicU64::new(0),
            clock,
        }
    }

    /// The cached credentials, or new ones from `fetch` when renewal is due.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Credentials, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Session, ApiError>>,
    {
        use std::sync::atomic::Ordering;
        let seen = self.finished.load(Ordering::Acquire);
        // Held across the fetch: concurrent callers wait and then reuse its result.
        let mut slot = self.slot.lock().await;
        let now = (self.clock)();
        if let Some(c) = slot
            .cached
            .as_ref()
            .filter(|c| !needs_renewal(c.obtained_at, c.session.expires_at, now))
        {
            return Ok(c.session.credentials.clone());
        }
        // A fetch finished while we waited for it, and failed: its answer is ours.
        if self.finished.load(Ordering::Acquire) > seen
            && let Some(e) = &slot.failure
        {
            return valid_or(slot.cached.as_ref(), now, e.clone());
        }
        let result = fetch().await;
        self.finished.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(session) => {
                let credentials = session.credentials.clone();
                slot.cached = Some(Cached {
                    session,
                    obtained_at: now,
                });
                slot.failure = None;
                Ok(credentials)
            }
            Err(e) => {
                slot.failure = Some(e.clone());
                valid_or(slot.cached.as_ref(), now, e)
            }
        }
    }
}

/// The cached credentials while they have not expired, else the failure.
fn valid_or(
    cached: Option<&Cached>,
    now: OffsetDateTime,
    e: ApiError,
) -> Result<Credentials, ApiError> {
    match cached.filter(|c| c.session.expires_at > now) {
        Some(c) => {
            warn!(error = %e, "renewing temporary credentials failed; the current ones are still valid");
            Ok(c.session.credentials.clone())
        }
        None => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    #[test]
    fn renewal_margin_is_a_quarter_or_fifteen_minutes_whichever_is_less() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let min = time::Duration::minutes;
        let due = |lifetime: i64, at: i64| needs_renewal(t0, t0 + min(lifetime), t0 + min(at));
        // One hour: 15 min margin (a quarter is also 15).
        assert!(!due(60, 44));
        assert!(due(60, 46));
        // Twelve hours: 15 min margin (a quarter would be 3 h).
        assert!(!due(720, 700));
        assert!(due(720, 706));
        // Twenty minutes: a quarter (5 min) is less than 15.
        assert!(!due(20, 14));
        assert!(due(20, 16));
    }

    fn session(n: usize, expires_at: OffsetDateTime) -> Session {
        Session {
            credentials: Credentials::static_key(format!("STS.{n}"), "s"),
            expires_at,
        }
    }

    /// Many callers arrive while STS hangs and then fails: one STS call, and
    /// every waiter gets its failure at once instead of calling STS in turn.
    #[tokio::test(start_paused = true)]
    async fn waiters_share_a_failed_renewal() {
        let cache = Arc::new(SessionCache::new(system_clock()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = Arc::clone(&cache);
            let fetches = Arc::clone(&fetches);
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Err::<Session, _>(ApiError::Credentials {
                            message: "STS timed out".into(),
                            code: Some("Transport.Timeout".into()),
                        })
                    })
                    .await
            }));
        }
        let started = tokio::time::Instant::now();
        for t in tasks {
            assert!(t.await.expect("joins").is_err());
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            1,
            "one STS call for the burst"
        );
        assert!(
            started.elapsed() < Duration::from_secs(11),
            "{:?}",
            started.elapsed()
        );
        // A caller arriving afterwards tries again.
        let again = cache
            .get(|| async {
                Ok(session(
                    9,
                    OffsetDateTime::now_utc() + time::Duration::hours(1),
                ))
            })
            .await;
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn renews_on_the_controlled_clock_and_keeps_valid_ones_when_renewal_fails() {
        let now = Arc::new(AtomicI64::new(0));
        let clock: Clock = {
            let now = Arc::clone(&now);
            Arc::new(move || {
                OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(now.load(Ordering::SeqCst))
            })
        };
        let at = |m: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(m);
        let cache = SessionCache::new(clock);
        let fetches = AtomicUsize::new(0);
        let fetch = |ok: bool, expires: OffsetDateTime| {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            async move {
                if ok {
                    Ok(session(n, expires))
                } else {
                    Err(ApiError::Credentials {
                        message: "down".into(),
                        code: None,
                    })
                }
            }
        };
        let c = cache.get(|| fetch(true, at(60))).await.expect("first");
        assert_eq!(c.access_key_id, "STS.0");
        now.store(44, Ordering::SeqCst);
        let c = cache.get(|| fetch(true, at(200))).await.expect("cached");
        assert_eq!(c.access_key_id, "STS.0");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // In the renewal window, a failure still yields the valid session.
        now.store(50, Ordering::SeqCst);
        let c = cache.get(|| fetch(false, at(0))).await.expect("stale ok");
        assert_eq!(c.access_key_id, "STS.0");
        // Renewal succeeds: new session.
        let c = cache.get(|| fetch(true, at(110))).await.expect("renewed");
        assert_eq!(c.access_key_id, "STS.2");
        // Expired and the renewal fails: a credential error.
        now.store(120, Ordering::SeqCst);
        assert!(matches!(
            cache.get(|| fetch(false, at(0))).await,
            Err(ApiError::Credentials { .. })
        ));
    }
}
