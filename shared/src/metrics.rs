//! Prometheus metrics shared by both binaries: one process-wide recorder, rendered by each
//! binary's `/metrics`, and the payments-per-state gauges computed from Postgres when scraped
//! (the queue's come from `crate::queue::stats`). Names follow Prometheus conventions (`_total`,
//! `_seconds`); docs/operations.md says what each one means.

use std::sync::OnceLock;

use diesel_async::AsyncPgConnection;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds, from 1 ms (an api request) to 30 s (a slow Stripe call).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram observations are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use. `None` only if another recorder was
/// installed first (then this process exports nothing rather than failing).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            // Histograms keep every observation until they are drained into their buckets,
            // which rendering `/metrics` does: a process nobody scrapes would grow by each
            // Stripe call's duration forever. Drained here every few seconds instead.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

/// Sets `payments_transactions{state}` from Postgres.
pub async fn export_transaction_counts(conn: &mut AsyncPgConnection) {
    match crate::transactions::count_by_state(conn).await {
        Ok(counts) => {
            for (st, n) in counts {
                metrics::gauge!("payments_transactions", "state" => st.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "transaction counts unavailable"),
    }
}

/// Sets `payments_discrepancies{kind}`, `payments_outcome_unknown` and
/// `payments_outcome_unknown_oldest_seconds` from Postgres.
pub async fn export_truth(conn: &mut AsyncPgConnection) {
    match crate::discrepancies::count_by_kind(conn).await {
        Ok(counts) => {
            for (kind, n) in counts {
                metrics::gauge!("payments_discrepancies", "kind" => kind).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "discrepancy counts unavailable"),
    }
    match crate::transactions::outcome_unknown(conn).await {
        Ok((n, oldest)) => {
            metrics::gauge!("payments_outcome_unknown").set(n as f64);
            let age = oldest.map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64());
            metrics::gauge!("payments_outcome_unknown_oldest_seconds").set(age.max(0.0));
        }
        Err(e) => tracing::warn!(error = %e, "unknown outcomes unavailable"),
    }
    match crate::merchant_webhooks::health(conn).await {
        Ok(endpoints) => {
            for e in endpoints {
                let url = crate::merchant_webhooks::redacted(&e.url);
                metrics::gauge!("payments_merchant_webhook_pending", "url" => url.clone())
                    .set(e.pending as f64);
                metrics::gauge!("payments_merchant_webhook_failing", "url" => url.clone())
                    .set(e.failing as f64);
                metrics::gauge!("payments_merchant_webhook_gave_up", "url" => url.clone())
                    .set(e.failed as f64);
                let age = e
                    .oldest_pending
                    .map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64());
                metrics::gauge!("payments_merchant_webhook_oldest_pending_seconds", "url" => url)
                    .set(age.max(0.0));
            }
        }
        Err(e) => tracing::warn!(error = %e, "webhook deliveries unavailable"),
    }
}

/// The text exposition of every metric recorded in this process.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
