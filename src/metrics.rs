//! Prometheus metrics (CONTRACT section 8). Every label value comes from a
//! closed set (kinds, outcomes, actions, reason codes) or is squeezed into one:
//! never an id, an address or free text.

use crate::domain::error::{ApiAction, ApiError};
use crate::ecs::rate_limit::{Lane, PaceObserver};
use crate::retry::AttemptObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `kind` + `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindOutcome {
    /// Command kind.
    pub kind: String,
    /// Terminal outcome (`rejected` included).
    pub outcome: String,
}

/// `kind` + `reason`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindReason {
    /// Command kind.
    pub kind: String,
    /// A short reason code.
    pub reason: String,
}

/// `action` + `code`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionCode {
    /// ECS action.
    pub action: String,
    /// `OK` or the error code.
    pub code: String,
}

/// `lane`: `security` (leak-alerts) or `bulk` (offboarding).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabel {
    /// The priority lane.
    pub lane: String,
}

/// `region` (from the allow-list: bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabel {
    /// The API region.
    pub region: String,
}

/// `action`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// ECS action.
    pub action: String,
}

/// `connection`: `consuming` or `publishing`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabel {
    /// Which of the session's two connections.
    pub connection: &'static str,
}

/// All metrics of the worker.
pub struct Metrics {
    registry: Registry,
    /// Commands that reached their terminal event, by kind and outcome.
    pub commands: Family<KindOutcome, Counter>,
    /// Rejections by kind and reason.
    pub rejections: Family<KindReason, Counter>,
    /// ECS calls by action and result code.
    pub ecs_calls: Family<ActionCode, Counter>,
    /// ECS call latency.
    pub ecs_latency: Family<ActionLabel, Histogram>,
    /// Immediate retries by action.
    pub retries: Family<ActionLabel, Counter>,
    /// Delayed redeliveries (and credential parks) by kind and reason.
    pub redeliveries: Family<KindReason, Counter>,
    /// Commands held now, working or waiting for a slot, a lock or confirms.
    pub in_flight: Gauge,
    /// Broker (re)connections after the first.
    pub reconnects: Counter,
    /// The node each connection is on, by position in `amqp.url` (0: none).
    pub broker_node: Family<ConnectionLabel, Gauge>,
    /// 1 when ready.
    pub ready: Gauge,
    /// Events published with no queue bound to receive them.
    pub unroutable_events: Counter,
    /// Mapped accounts whose role cannot be used right now.
    pub degraded_accounts: Gauge,
    /// ECS calls that waited for the client-side rate limit, by lane.
    pub rate_limited_calls: Family<LaneLabel, Counter>,
    /// Total time ECS calls waited for the rate limit, by lane.
    pub rate_limit_wait_seconds: Family<LaneLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// The configured ceiling (calls per second per region and account; 0 = none).
    pub rate_limit: Gauge,
    /// `Throttling*` answers, by lane.
    pub throttles: Family<LaneLabel, Counter>,
    /// The adaptive rate allowed now, by region (the lowest of its accounts).
    pub allowed_rate: Family<RegionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Transient failures sent straight to delayed redelivery because the
    /// shared retry budget was empty, by action.
    pub retry_budget_exhausted: Family<ActionLabel, Counter>,
    /// 1 while the worker's own credentials are known bad (commands parked).
    pub credentials_failing: Gauge,
    /// Age of the oldest leak-alert held now (0 when none), set at each scrape.
    leak_alert_oldest: Gauge<f64, AtomicU64>,
    /// The leak-alerts held now, by receipt instant.
    leak_alerts_held: Arc<Held>,
}

/// Deliveries held now, each with the instant it was received.
#[derive(Debug, Default)]
struct Held {
    next: AtomicU64,
    since: Mutex<HashMap<u64, Instant>>,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        self.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn oldest_age(&self, now: Instant) -> Duration {
        self.lock()
            .values()
            .map(|since| now.saturating_duration_since(*since))
            .max()
            .unwrap_or_default()
    }
}

/// A leak-alert held from receipt until it is settled; dropping it ends the
/// hold. Security response is the one thing that must not wait, so how long
/// the oldest one has been unfinished is exported
/// (`lifecycle_leak_alert_oldest_age_seconds`) for an alert to watch.
#[derive(Debug)]
pub struct LeakAlertHold {
    held: Arc<Held>,
    id: u64,
}

impl Drop for LeakAlertHold {
    fn drop(&mut self) {
        self.held.lock().remove(&self.id);
    }
}

/// The ECS actions, for series that start at 0.
const ACTIONS: [ApiAction; 5] = [
    ApiAction::DeregisterManagedInstance,
    ApiAction::DisableActivation,
    ApiAction::DeleteActivation,
    ApiAction::DescribeManagedInstances,
    ApiAction::DescribeActivations,
];

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// Registers every metric under the `lifecycle` prefix.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("lifecycle");
        let commands = Family::<KindOutcome, Counter>::default();
        let rejections = Family::<KindReason, Counter>::default();
        let ecs_calls = Family::<ActionCode, Counter>::default();
        let ecs_latency = Family::<ActionLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let retries = Family::<ActionLabel, Counter>::default();
        let redeliveries = Family::<KindReason, Counter>::default();
        let in_flight = Gauge::default();
        let reconnects = Counter::default();
        let broker_node = Family::<ConnectionLabel, Gauge>::default();
        let ready = Gauge::default();
        let unroutable_events = Counter::default();
        let degraded_accounts = Gauge::default();
        let rate_limited_calls = Family::<LaneLabel, Counter>::default();
        let rate_limit_wait_seconds =
            Family::<LaneLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        let rate_limit = Gauge::default();
        let throttles = Family::<LaneLabel, Counter>::default();
        let allowed_rate =
            Family::<RegionLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let retry_budget_exhausted = Family::<ActionLabel, Counter>::default();
        let credentials_failing = Gauge::default();
        let leak_alert_oldest = Gauge::<f64, AtomicU64>::default();
        // Series an alert takes `increase()` of exist from the start at 0: a series
        // born at 1 shows no increase, so the first event would go unseen.
        for action in ACTIONS {
            let _ = retry_budget_exhausted.get_or_create(&ActionLabel {
                action: action.as_str().to_owned(),
            });
        }
        for lane in [Lane::Security, Lane::Bulk] {
            let label = LaneLabel {
                lane: lane.as_str().to_owned(),
            };
            let _ = rate_limited_calls.get_or_create(&label);
            let _ = rate_limit_wait_seconds.get_or_create(&label);
            let _ = throttles.get_or_create(&label);
        }
        for reason in ["transient", "credentials"] {
            let _ = redeliveries.get_or_create(&KindReason {
                kind: "leak-alert".to_owned(),
                reason: reason.to_owned(),
            });
        }
        registry.register(
            "retry_budget_exhausted",
            "Transient failures sent straight to delayed redelivery because the shared retry budget was empty, by action",
            retry_budget_exhausted.clone(),
        );
        registry.register(
            "credentials_failing",
            "1 while the worker's own credentials are known bad: commands are parked in delayed retry",
            credentials_failing.clone(),
        );
        registry.register(
            "leak_alert_oldest_age_seconds",
            "Seconds since the oldest leak-alert held now was received (0 when none)",
            leak_alert_oldest.clone(),
        );
        registry.register(
            "ecs_rate_limited_calls",
            "ECS calls that waited for the client-side rate limit",
            rate_limited_calls.clone(),
        );
        registry.register(
            "ecs_rate_limit_wait_seconds",
            "Time ECS calls waited for the client-side rate limit",
            rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "ecs_rate_limit_per_second",
            "Configured ceiling of ECS calls per second per region and account (0 = no limit)",
            rate_limit.clone(),
        );
        registry.register(
            "ecs_throttles",
            "Throttling answers from the ECS API, by priority lane",
            throttles.clone(),
        );
        registry.register(
            "ecs_allowed_rate_per_second",
            "ECS calls per second allowed now by the adaptive rate, by region (lowest account)",
            allowed_rate.clone(),
        );
        registry.register(
            "commands",
            "Commands handled, by kind and terminal outcome (rejected included)",
            commands.clone(),
        );
        registry.register(
            "rejections",
            "Rejected commands by reason",
            rejections.clone(),
        );
        registry.register(
            "ecs_calls",
            "ECS API calls by action and result code",
            ecs_calls.clone(),
        );
        registry.register(
            "ecs_call_duration_seconds",
            "ECS API call latency",
            ecs_latency.clone(),
        );
        registry.register(
            "ecs_retries",
            "Immediate ECS retries by action",
            retries.clone(),
        );
        registry.register(
            "redeliveries",
            "Commands sent to delayed redelivery, by kind and reason",
            redeliveries.clone(),
        );
        registry.register(
            "commands_in_flight",
            "Commands held, working or waiting (unacknowledged deliveries being handled)",
            in_flight.clone(),
        );
        registry.register(
            "broker_reconnects",
            "Broker reconnections",
            reconnects.clone(),
        );
        registry.register(
            "broker_node",
            "The broker node each connection is on, by position in amqp.url (0: not connected)",
            broker_node.clone(),
        );
        registry.register("ready", "1 when the worker is ready", ready.clone());
        registry.register(
            "unroutable_events",
            "Events no queue was bound to receive",
            unroutable_events.clone(),
        );
        registry.register(
            "degraded_accounts",
            "Mapped accounts whose role cannot be used; their commands wait",
            degraded_accounts.clone(),
        );
        Arc::new(Self {
            registry,
            commands,
            rejections,
            ecs_calls,
            ecs_latency,
            retries,
            redeliveries,
            in_flight,
            reconnects,
            broker_node,
            ready,
            unroutable_events,
            degraded_accounts,
            rate_limited_calls,
            rate_limit_wait_seconds,
            rate_limit,
            throttles,
            allowed_rate,
            retry_budget_exhausted,
            credentials_failing,
            leak_alert_oldest,
            leak_alerts_held: Arc::default(),
        })
    }

    /// Starts holding a leak-alert received now (see [`LeakAlertHold`]).
    pub fn hold_leak_alert(&self) -> LeakAlertHold {
        let held = Arc::clone(&self.leak_alerts_held);
        let id = held.next.fetch_add(1, Ordering::Relaxed);
        held.lock().insert(id, Instant::now());
        LeakAlertHold { held, id }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.leak_alert_oldest.set(
            self.leak_alerts_held
                .oldest_age(Instant::now())
                .as_secs_f64(),
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a terminal outcome.
    pub fn command(&self, kind: &str, outcome: &str) {
        self.commands
            .get_or_create(&KindOutcome {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// Keeps API error codes usable as labels: API codes are short dotted words;
/// anything else becomes `other`.
pub fn code_label(code: &str) -> String {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if ok {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

impl PaceObserver for Metrics {
    fn waited(&self, lane: Lane, wait: Duration) {
        let label = LaneLabel {
            lane: lane.as_str().to_owned(),
        };
        self.rate_limited_calls.get_or_create(&label).inc();
        self.rate_limit_wait_seconds
            .get_or_create(&label)
            .inc_by(wait.as_secs_f64());
    }

    fn throttled(&self, lane: Lane) {
        self.throttles
            .get_or_create(&LaneLabel {
                lane: lane.as_str().to_owned(),
            })
            .inc();
    }

    fn allowed_rate(&self, region: &str, rate: f64) {
        self.allowed_rate
            .get_or_create(&RegionLabel {
                region: region.to_owned(),
            })
            .set(rate);
    }
}

impl AttemptObserver for Metrics {
    fn attempt(&self, action: ApiAction, error: Option<&ApiError>, elapsed: Duration) {
        let code = error.map_or_else(|| "OK".to_owned(), |e| code_label(e.code()));
        self.ecs_calls
            .get_or_create(&ActionCode {
                action: action.as_str().to_owned(),
                code,
            })
            .inc();
        self.ecs_latency
            .get_or_create(&ActionLabel {
                action: action.as_str().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    fn retry(&self, action: ApiAction, _wait: Duration) {
        self.retries
            .get_or_create(&ActionLabel {
                action: action.as_str().to_owned(),
            })
            .inc();
    }

    fn budget_exhausted(&self, action: ApiAction) {
        self.retry_budget_exhausted
            .get_or_create(&ActionLabel {
                action: action.as_str().to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let m = Metrics::new();
        m.command("decommission", "succeeded");
        m.attempt(
            ApiAction::DisableActivation,
            Some(&ApiError::Api {
                http_status: 500,
                code: "weird code with spaces mi-123".into(),
                message: String::new(),
                request_id: None,
                retry_after: None,
            }),
            Duration::from_millis(3),
        );
        let text = m.render();
        assert!(
            text.contains(r#"lifecycle_commands_total{kind="decommission",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"lifecycle_ecs_calls_total{action="DisableActivation",code="other"} 1"#
            ),
            "{text}"
        );
        assert!(!text.contains("mi-123"));
    }

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn retry_budget_exhaustion_is_counted_by_action() {
        let m = Metrics::new();
        m.budget_exhausted(ApiAction::DisableActivation);
        m.budget_exhausted(ApiAction::DisableActivation);
        let text = m.render();
        let series = r#"lifecycle_retry_budget_exhausted_total{action="DisableActivation"}"#;
        assert_eq!(sample(&text, series), Some(2.0), "{text}");
        let other = r#"lifecycle_retry_budget_exhausted_total{action="DeleteActivation"}"#;
        assert_eq!(
            sample(&text, other),
            Some(0.0),
            "exported at 0 from the start: {text}"
        );
        let redelivered = r#"lifecycle_redeliveries_total{kind="leak-alert",reason="transient"}"#;
        assert_eq!(sample(&text, redelivered), Some(0.0), "{text}");
    }

    #[test]
    fn the_oldest_held_leak_alert_sets_the_age_until_it_is_released() {
        let m = Metrics::new();
        let age = |m: &Metrics| sample(&m.render(), "lifecycle_leak_alert_oldest_age_seconds");
        assert_eq!(age(&m), Some(0.0), "nothing held");
        let first = m.hold_leak_alert();
        std::thread::sleep(Duration::from_millis(30));
        let second = m.hold_leak_alert();
        let oldest = age(&m).expect("exported");
        assert!(oldest >= 0.03, "the first one's age, got {oldest}");
        drop(first);
        let now = age(&m).expect("exported");
        assert!(now < oldest, "the second is younger: {now} vs {oldest}");
        drop(second);
        assert_eq!(age(&m), Some(0.0), "released");
    }
}
