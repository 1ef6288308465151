//! The worker's `/metrics` (Prometheus text) and `/healthz`, on `WORKER_METRICS_ADDR`.
//!
//! Counters and histograms are recorded where things happen (jobs, Stripe calls, the sweeper);
//! queue depths and the circuit breaker's state are read when scraped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apalis_redis::ConnectionManager;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use shared::queue::keys::Keys;
use tokio_util::sync::CancellationToken;

use crate::jobs::stripe_charge::ChargeContext;
use crate::stripe::breaker::BreakerState;

#[derive(Clone)]
struct MetricsState {
    ctx: Arc<ChargeContext>,
    redis: ConnectionManager,
    keys: Arc<Keys>,
    /// When a worker without a heartbeat is presumed dead.
    dead_after: Duration,
}

/// Binds `addr` and serves until `stop`. A bind failure (two workers on one host with the same
/// fixed port) is logged, not fatal: charging matters more than being scraped.
pub async fn serve(
    addr: SocketAddr,
    ctx: Arc<ChargeContext>,
    redis: ConnectionManager,
    keys: Keys,
    dead_after: Duration,
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
            keys: Arc::new(keys),
            dead_after,
        });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "worker metrics server stopped");
    }
}

async fn metrics(State(mut s): State<MetricsState>) -> String {
    shared::queue::stats::export(&mut s.redis, &s.keys, s.dead_after).await;
    let state = match s.ctx.stripe.breaker.state() {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    };
    metrics::gauge!("payments_stripe_circuit_state").set(state);
    shared::metrics::render()
}
