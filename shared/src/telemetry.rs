//! Tracing set-up shared by the binaries: `RUST_LOG` filters, `LOG_FORMAT=json` for machines,
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span exported as OpenTelemetry traces
//! (OTLP over HTTP/protobuf; `OTEL_SERVICE_NAME` names the service, else the binary). A payment
//! is one trace: the api's request span, the job (its context travels in the `StripeCharge`
//! payload as a W3C `traceparent`, [`traceparent`] and [`continue_trace`]), the worker's claim,
//! Stripe calls and record. Off by default: nothing is exported and jobs carry nothing extra.

use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The provider spans are exported through, kept to flush it at exit ([`shutdown`]).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

pub fn init(default_filter: &str) {
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.trim().is_empty() => match otlp_provider() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("OTEL_EXPORTER_OTLP_ENDPOINT: traces are not exported: {e}");
                None
            }
        },
        _ => None,
    };
    init_with(default_filter, provider);
}

/// [`init`] with the spans going to `provider` (tests give one with their own exporter).
pub fn init_with(default_filter: &str, provider: Option<SdkTracerProvider>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let otel = provider.map(|p| {
        let layer = tracing_opentelemetry::layer().with_tracer(p.tracer("payments"));
        let _ = PROVIDER.set(p);
        layer
    });
    let fmt = tracing_subscriber::fmt::layer().with_target(true);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    // try_init: a second call (tests starting several services in one process) is harmless.
    let _ = if json {
        registry.with(fmt.json()).try_init()
    } else {
        registry.with(fmt).try_init()
    };
}

fn otlp_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").ok().unwrap_or_else(|| {
        std::env::args()
            .next()
            .and_then(|a| a.rsplit('/').next().map(str::to_owned))
            .unwrap_or_else(|| "payments".into())
    });
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build())
}

/// Sends the spans still buffered; call before the process exits.
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
}

/// The current span's trace context as a W3C `traceparent`, to carry in a job; `None` when
/// traces are not exported.
pub fn traceparent() -> Option<String> {
    PROVIDER.get()?;
    let cx = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` part of the trace `traceparent` names (a job's, from the api). Call it before
/// the span is entered.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if PROVIDER.get().is_none() {
        return;
    }
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// At most one log line per `every` for a failure that repeats (a pool reconnecting every few
/// hundred milliseconds, a limiter whose Redis is down), with the count of the lines left out.
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(left_out)` when this occurrence should be logged, `None` when it is counted.
    pub fn ready(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if state
            .0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            state.1 += 1;
            return None;
        }
        state.0 = Some(now);
        Some(std::mem::take(&mut state.1))
    }
}
