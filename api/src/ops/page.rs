//! `/ops`: the operators' page and the JSON it polls. Everything here needs `ADMIN_TOKEN`
//! (Bearer, or the Basic password a browser prompts for): 401 without it.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use shared::queue::stats::{self, QueueStats};

use crate::error::ApiError;
use crate::ops::auth::require_admin;
use crate::ops::queue::{self, DeadJob};
use crate::pages::{self, assets, escape, fill};
use crate::state::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = require_admin(&state, &headers) {
        return e.into_response();
    }
    let body = fill(
        include_str!("../../static/ops.html"),
        &[
            ("version", assets::version()),
            ("queue", &escape(&state.settings.charge_queue())),
        ],
    );
    pages::html(StatusCode::OK, body, CSP)
}

#[derive(Serialize)]
struct Summary {
    queue: Option<QueueStats>,
    transactions: BTreeMap<&'static str, i64>,
    throughput: Vec<shared::ops::MinuteCount>,
    failures: Vec<shared::ops::Failure>,
    discrepancies: Vec<shared::discrepancies::Discrepancy>,
    /// Payments whose confirm went unanswered, being resolved against Stripe.
    outcome_unknown: i64,
    dead: Vec<DeadJob>,
    webhooks: Vec<shared::merchant_webhooks::EndpointHealth>,
}

pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Err(e) = require_admin(&state, &headers) {
        return Ok(e.into_response());
    }
    // Redis may be down while Postgres answers (or the reverse): show what can be read.
    let dead_after = state.settings.worker.presumed_dead_after();
    let mut redis = state.redis.clone();
    let queue = stats::stats(&mut redis, &state.keys, dead_after).await.ok();
    let dead = queue::dead_jobs(&state, 50).await.unwrap_or_default();
    let mut conn = state.db.get().await?;
    let counts = shared::transactions::count_by_state(&mut conn).await?;
    let transactions = counts.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
    let throughput = shared::ops::finished_per_minute(&mut conn, 15).await?;
    let failures = shared::ops::recent_failures(&mut conn, 20).await?;
    let week_ago = chrono::Utc::now() - chrono::TimeDelta::days(7);
    let discrepancies = shared::discrepancies::since(&mut conn, week_ago, 20).await?;
    let (outcome_unknown, _) = shared::transactions::outcome_unknown(&mut conn).await?;
    let webhooks = shared::merchant_webhooks::health(&mut conn).await?;
    Ok(axum::Json(Summary {
        queue,
        transactions,
        throughput,
        failures,
        discrepancies,
        outcome_unknown,
        dead,
        webhooks,
    })
    .into_response())
}

pub async fn retry_dead(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    if let Err(e) = require_admin(&state, &headers) {
        return Ok(e.into_response());
    }
    if task_id.len() > 64
        || !task_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(ApiError::NotFound("dead job"));
    }
    match queue::retry(&state, &task_id).await {
        Ok(true) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(json!({"retried": task_id})),
        )
            .into_response()),
        Ok(false) => Err(ApiError::NotFound("dead job")),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}
