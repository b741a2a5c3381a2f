//! OpenTelemetry across the broker (issue 5, item 1): a command published with
//! a known `traceparent` is carried out by a worker assembled in-process, with
//! an in-memory span exporter; the exported spans and the propagated context
//! must agree.
//!
//! One test in this file: it installs the global tracing subscriber.

#[allow(dead_code)] // the end-to-end support; this test uses a part of it
#[path = "e2e/support/mod.rs"]
mod support;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use lifecycle_worker::credentials::Credentials;
use lifecycle_worker::credentials::identities::Identities;
use lifecycle_worker::credentials::provider::Static;
use lifecycle_worker::credentials::sts::StsClient;
use lifecycle_worker::ecs::client::{EcsClient, Timeouts, http_client};
use lifecycle_worker::ecs::endpoint::Endpoint;
use lifecycle_worker::health::Health;
use lifecycle_worker::metrics::Metrics;
use lifecycle_worker::settings::Settings;
use lifecycle_worker::telemetry;
use lifecycle_worker::worker::Worker;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN: &str = "00f067aa0ba902b7";
const T: Duration = Duration::from_secs(30);

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_owned()))
        .map(|kv| &kv.value)
}

fn attr_str(span: &SpanData, key: &str) -> String {
    attr(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default()
}

fn tree(spans: &[SpanData]) -> String {
    let mut lines = Vec::new();
    fn walk(spans: &[SpanData], parent: SpanId, depth: usize, lines: &mut Vec<String>) {
        for s in spans.iter().filter(|s| s.parent_span_id == parent) {
            let id = s.span_context.span_id();
            let mut extra = String::new();
            for k in ["ecs.attempt", "ecs.error_code", "outcome"] {
                if let Some(v) = attr(s, k) {
                    extra.push_str(&format!(" {k}={v}"));
                }
            }
            lines.push(format!(
                "{}{} [{:?} span={:016x} parent={:016x}]{}",
                "  ".repeat(depth),
                s.name,
                s.span_kind,
                id,
                s.parent_span_id,
                extra
            ));
            walk(spans, id, depth + 1, lines);
        }
    }
    let publisher = SpanId::from_hex(PUBLISHER_SPAN).expect("hex");
    lines.push(format!(
        "publisher (remote) [trace={TRACE_ID} span={PUBLISHER_SPAN}]"
    ));
    walk(spans, publisher, 1, &mut lines);
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_span_continues_the_publishers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(telemetry::otel_layer(&provider))
        .init();
    assert!(telemetry::otel_enabled());

    let env = Env::new(seed_instances(1)).await;
    env.declare_durable_events_queue("otel-test-events").await;
    // One transient failure: the first DeregisterManagedInstance attempt fails,
    // the immediate retry succeeds.
    env.set_faults(json!({"fail_next": [{
        "action": "DeregisterManagedInstance", "count": 1,
        "code": "InternalError.Dispatch", "status": 500
    }]}))
    .await;

    // The worker, assembled as `cli::run` does, in this process.
    let vars: Vec<(String, String)> = [
        ("LIFECYCLE__AMQP__URL", env.vhost.url()),
        ("LIFECYCLE__ECS__ENDPOINT", env.sim.endpoint()),
        ("LIFECYCLE__RETRY__INITIAL_INTERVAL_MS", "50".to_owned()),
        ("LIFECYCLE__RETRY__MAX_INTERVAL_MS", "100".to_owned()),
        ("LIFECYCLE__RETRY__MAX_ELAPSED_MS", "2000".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::load(&[], vars).expect("settings");
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        request: Duration::from_secs(10),
    };
    let endpoint = Endpoint::from_setting(&env.sim.endpoint()).expect("endpoint");
    let ecs = EcsClient::new(endpoint, settings.ecs.signature, timeouts).expect("ecs client");
    let sts = StsClient::new(
        http_client(timeouts).expect("http"),
        &settings.sts.endpoint,
        settings.ecs.signature,
    )
    .expect("sts");
    let identities = Arc::new(Identities::new(
        Arc::new(Static(Some(Credentials::static_key(KEY_ID, KEY_SECRET)))),
        Default::default(),
        sts,
    ));
    let health = Health::new();
    let shutdown = CancellationToken::new();
    let limiter = Arc::new(lifecycle_worker::ecs::rate_limit::RateLimiter::new(0, 1));
    let worker = Worker::new(
        Arc::new(settings),
        ecs,
        identities,
        limiter,
        Metrics::new(),
        health.clone(),
        shutdown.clone(),
    );
    let running = tokio::spawn(worker.run());
    let deadline = Instant::now() + T;
    while !health.readiness().ready {
        assert!(Instant::now() < deadline, "worker not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let id = new_id("otel");
    let traceparent = format!("00-{TRACE_ID}-{PUBLISHER_SPAN}-01");
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(traceparent.as_str().into()),
    );
    headers.insert(
        "tracestate".into(),
        AMQPValue::LongString("congo=t61rcWkgMzE".into()),
    );
    env.publish(
        "decommission",
        &decommission(&id, &inst(0)),
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(id.as_str().into())
            .with_headers(headers),
    )
    .await;
    env.wait_for("completion", T, |e| completed(e, &id, "succeeded"))
        .await;
    shutdown.cancel();
    running.await.expect("worker stops");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let trace_tree = tree(&spans);
    println!("trace tree:\n{trace_tree}");

    // The command span: a consumer span under the publisher's span.
    let trace_id = TraceId::from_hex(TRACE_ID).expect("hex");
    let command = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer && attr_str(s, "command_id") == id)
        .unwrap_or_else(|| panic!("no command span:\n{trace_tree}"));
    assert_eq!(command.span_context.trace_id(), trace_id);
    assert_eq!(
        command.parent_span_id,
        SpanId::from_hex(PUBLISHER_SPAN).expect("hex")
    );
    assert!(command.parent_span_is_remote);
    assert_eq!(
        command.span_context.trace_state().header(),
        "congo=t61rcWkgMzE"
    );
    for (k, v) in [
        ("messaging.system", "rabbitmq"),
        ("messaging.operation.type", "process"),
        ("messaging.rabbitmq.destination.routing_key", "decommission"),
        ("messaging.message.id", id.as_str()),
        ("kind", "decommission"),
        ("region", REGION),
        ("outcome", "succeeded"),
    ] {
        assert_eq!(attr_str(command, k), v, "{k} on the command span");
    }
    assert_eq!(attr_str(command, "target"), format!("instance:{}", inst(0)));
    let destination = attr_str(command, "messaging.destination.name");
    assert!(
        destination.starts_with("lifecycle.commands:decommission"),
        "{destination}"
    );
    assert_eq!(command.name, format!("process {destination}"));

    // ECS attempts: client spans, children of the command span.
    let command_span = command.span_context.span_id();
    let attempts: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client)
        .collect();
    assert_eq!(attempts.len(), 2, "{trace_tree}");
    for (n, a) in attempts.iter().enumerate() {
        assert_eq!(a.parent_span_id, command_span, "{trace_tree}");
        assert_eq!(a.span_context.trace_id(), trace_id);
        assert_eq!(a.name, "DeregisterManagedInstance");
        assert_eq!(attr_str(a, "ecs.action"), "DeregisterManagedInstance");
        assert_eq!(attr_str(a, "cloud.region"), REGION);
        assert_eq!(attr(a, "ecs.attempt"), Some(&Value::I64(n as i64 + 1)));
        assert!(
            !attr_str(a, "ecs.request_id").is_empty(),
            "RequestId: {a:?}"
        );
    }
    assert_eq!(
        attr_str(attempts[0], "ecs.error_code"),
        "InternalError.Dispatch"
    );
    assert_eq!(
        attr(attempts[0], "http.response.status_code"),
        Some(&Value::I64(500))
    );
    assert!(attr(attempts[1], "ecs.error_code").is_none());

    // Every event of the command names the command span as its parent.
    let expected = format!("00-{TRACE_ID}-{command_span:016x}-01");
    let events = env.drain_queue("otel-test-events").await;
    let ours: Vec<_> = events
        .iter()
        .filter(|d| {
            serde_json::from_slice::<serde_json::Value>(&d.data)
                .is_ok_and(|v| v["command_id"] == json!(id))
        })
        .collect();
    assert!(ours.len() >= 2, "instance event + completion");
    for d in ours {
        assert_eq!(header_str(d, "traceparent").as_deref(), Some(&*expected));
        assert_eq!(
            header_str(d, "tracestate").as_deref(),
            Some("congo=t61rcWkgMzE")
        );
    }
    let _ = provider.shutdown();
}
