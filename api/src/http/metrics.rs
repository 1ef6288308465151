//! HTTP metrics: `payments_http_requests_total{route,method,status}` and
//! `payments_http_request_duration_seconds{route,method}`, labelled by the route *pattern*
//! (`/transactions/{id}`), never the raw path, so ids cannot explode the label set.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::ops::auth::require_admin;
use crate::state::AppState;

pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("payments_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("payments_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics` (admin token required): everything this process recorded, plus queue depths
/// and payments per state read now.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = require_admin(&state, &headers) {
        return e.into_response();
    }
    let dead_after = state.settings.worker.presumed_dead_after();
    shared::queue::stats::export(&mut state.redis.clone(), &state.keys, dead_after).await;
    if let Ok(mut conn) = state.db.get().await {
        shared::metrics::export_transaction_counts(&mut conn).await;
        shared::metrics::export_truth(&mut conn).await;
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        shared::metrics::render(),
    )
        .into_response()
}
