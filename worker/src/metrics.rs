//! The worker's `/metrics` (Prometheus text) and `/healthz`, on `WORKER_METRICS_ADDR`.
//!
//! Counters and histograms are recorded where things happen (jobs, Stripe calls, the sweeper);
//! queue depths and the circuit breaker's state are read when scraped.

use std::net::SocketAddr;
use std::sync::Arc;

use apalis_redis::ConnectionManager;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::jobs::stripe_charge::ChargeContext;
use crate::stripe::breaker::BreakerState;

#[derive(Clone)]
struct MetricsState {
    ctx: Arc<ChargeContext>,
    redis: ConnectionManager,
    namespace: String,
}

/// Binds `addr` and serves until `stop`. A bind failure (two workers on one host with the same
/// fixed port) is logged, not fatal: charging matters more than being scraped.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<ChargeContext>,
    redis: ConnectionManager,
    namespace: String,
    stop: CancellationToken,
) {
    shared::metrics::handle();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot serve worker metrics");
            return;
        }
    };
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "worker metrics listening");
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(MetricsState {
            ctx,
            redis,
            namespace,
        });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "worker metrics server stopped");
    }
}

async fn metrics(State(s): State<MetricsState>) -> String {
    shared::metrics::export_queue_depths(&s.redis, &s.namespace).await;
    let state = match s.ctx.stripe.breaker.state() {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    };
    metrics::gauge!("payments_stripe_circuit_state").set(state);
    shared::metrics::render()
}
