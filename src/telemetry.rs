//! Logging and tracing setup: human lines on a terminal, JSON lines otherwise
//! (or as configured), filtered by `RUST_LOG` (default `info`); and, when
//! `telemetry.otlp_endpoint` is set, OpenTelemetry spans exported over OTLP
//! (gRPC). With no endpoint no OpenTelemetry layer is installed at all, so
//! tracing costs what it did before.
//!
//! The worker's spans become OpenTelemetry spans through `tracing-opentelemetry`:
//! the `command` span is a consumer span whose parent is the context extracted
//! from the command's AMQP headers ([`bind_command_span`]), and each ECS
//! attempt is a client span under it ([`ecs_attempt_span`]).

use crate::settings::{LogFormat, TelemetrySettings};
use crate::trace_context::TraceContext;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// True once an OpenTelemetry layer is installed (the binary with an OTLP
/// endpoint, or a test with an in-memory exporter).
static OTEL_ENABLED: AtomicBool = AtomicBool::new(false);

/// The instrumentation scope name of the worker's tracer.
pub const TRACER_NAME: &str = "lifecycle-worker";

/// Whether spans are being turned into OpenTelemetry spans.
pub fn otel_enabled() -> bool {
    OTEL_ENABLED.load(Ordering::Relaxed)
}

/// Keeps the tracer provider alive; [`Telemetry::shutdown`] flushes it.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes pending spans and stops the exporter (a no-op when export is off).
    /// Blocks while the last batch is exported: call it from a blocking context.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("lifecycle-worker: flushing traces failed: {e}");
        }
    }
}

/// The OpenTelemetry layer for `provider`, limited to this crate's spans at
/// `info` and above (`RUST_LOG` filters the log output only). Marks OTel as
/// enabled, so command spans take their ids from it.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    OTEL_ENABLED.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER_NAME))
        // Its `target` attribute (the module path) would shadow the command span's `target`.
        .with_target(false)
        .with_filter(Targets::new().with_target("lifecycle_worker", tracing::Level::INFO))
}

fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("lifecycle-worker")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Installs the global subscriber once (later calls are ignored). Call from
/// inside the Tokio runtime: the OTLP/gRPC exporter needs it.
pub fn init(settings: &TelemetrySettings) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=warn,lapin::returned_messages=error"));
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Colour only for a person at a terminal: escape codes in a log file or a
    // collector split `key=value` fields that operators search for.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = if json {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let endpoint = settings.otlp_endpoint.trim();
    if endpoint.is_empty() {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Telemetry::default();
    }
    match otlp_provider(endpoint) {
        Ok(provider) => {
            let otel = otel_layer(&provider);
            let _ = tracing_subscriber::registry()
                .with(fmt)
                .with(otel)
                .try_init();
            tracing::info!(endpoint, "exporting traces over OTLP");
            Telemetry {
                provider: Some(provider),
            }
        }
        Err(e) => {
            let _ = tracing_subscriber::registry().with(fmt).try_init();
            tracing::warn!(error = %e, "cannot set up OTLP export; traces are not exported");
            Telemetry::default()
        }
    }
}

/// Makes `span` (not yet entered) the continuation of `trace`: its parent is
/// the publisher's span from the command's `traceparent`, and, when OTel is on,
/// `trace` takes the span's own ids, so what the worker propagates (events,
/// retry copies, dead letters, ECS requests) names the exported span.
pub fn bind_command_span(span: &tracing::Span, trace: &mut TraceContext) {
    if !otel_enabled() {
        return;
    }
    if let Some(parent) = &trace.parent_span_id
        && let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
            TraceId::from_hex(&trace.trace_id),
            SpanId::from_hex(parent),
            u8::from_str_radix(&trace.flags, 16),
        )
    {
        let state = trace
            .tracestate
            .as_deref()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let remote = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    adopt(span, trace);
}

/// Copies `span`'s OTel ids into `trace` (when the span has them).
fn adopt(span: &tracing::Span, trace: &mut TraceContext) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        trace.trace_id = format!("{:032x}", sc.trace_id());
        trace.span_id = format!("{:016x}", sc.span_id());
        trace.flags = format!("{:02x}", sc.trace_flags().to_u8());
    }
}

/// The `traceparent` naming the current span, when OTel is on and a span is current.
pub fn current_traceparent() -> Option<String> {
    if !otel_enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// A client span for one ECS attempt (OTel RPC conventions). The transport
/// records the region, RequestId, HTTP status and error code into it.
pub fn ecs_attempt_span(action: &str, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "ecs",
        otel.name = action,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        rpc.system = "alibaba_cloud",
        rpc.service = "Ecs",
        rpc.method = action,
        ecs.action = action,
        ecs.attempt = i64::from(attempt),
        cloud.region = tracing::field::Empty,
        server.address = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        ecs.request_id = tracing::field::Empty,
        ecs.error_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}
