//! One trace per payment when traces are exported: the api's request, the job (its context in
//! the `StripeCharge` payload), the worker's claim, the Stripe calls and the record, all under
//! one trace id, the job a child of the request. The spans go to a sink of the test's own,
//! plugged into the SDK as any exporter is (what `OTEL_EXPORTER_OTLP_ENDPOINT` would send).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestApp;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

/// Keeps every span exported.
#[derive(Clone, Debug, Default)]
struct Sink(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Sink {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_is_one_trace_from_the_post_to_the_record() {
    let sink = Sink::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(sink.clone())
        .build();
    // Before the app: its own init then finds the subscriber in place.
    shared::telemetry::init_with("info", Some(provider.clone()));
    let app = TestApp::spawn().await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_state(&id, &["complete"], Duration::from_secs(20))
        .await;
    // The job's span ends just after the record: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        provider.force_flush().unwrap();
        let spans = sink.0.lock().unwrap().clone();
        if let Some(job) = spans.iter().find(|s| {
            s.name == "stripe_charge" && attr(s, "transaction_id").as_deref() == Some(&id)
        }) {
            break job.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no job span");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let trace = job.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);
    let spans: Vec<SpanData> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .cloned()
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    for wanted in [
        "http",
        "create",
        "stripe_charge",
        "claim",
        "stripe",
        "record",
    ] {
        assert!(
            names.contains(&wanted),
            "no `{wanted}` span in the trace: {names:?}"
        );
    }
    let request = spans
        .iter()
        .find(|s| s.name == "http" && attr(s, "method").as_deref() == Some("POST"))
        .expect("the POST's span");
    assert_eq!(attr(request, "path").as_deref(), Some("/transactions"));
    // The job continues the request: its parent is a span of the api's, across Redis.
    assert_ne!(job.parent_span_id, SpanId::INVALID);
    assert!(
        spans
            .iter()
            .any(|s| s.span_context.span_id() == job.parent_span_id),
        "the job's parent is not in the trace"
    );
    let calls: Vec<String> = spans
        .iter()
        .filter(|s| s.name == "stripe")
        .filter_map(|s| attr(s, "call"))
        .collect();
    assert!(calls.contains(&"create".to_owned()) && calls.contains(&"confirm".to_owned()));
    let record = spans.iter().find(|s| s.name == "record").unwrap();
    assert_eq!(attr(record, "outcome").as_deref(), Some("complete"));
}
