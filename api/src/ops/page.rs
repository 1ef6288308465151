//! `/ops`: the operators' page and the JSON it polls. Everything here needs `ADMIN_TOKEN`
//! (Bearer, or the Basic password a browser prompts for): 401 without it.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use shared::metrics::QueueDepths;
use shared::state_machine::TxState;

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
struct Worker {
    name: String,
    last_seen: i64,
}

#[derive(Serialize)]
struct Summary {
    queue: Option<QueueDepths>,
    workers: Vec<Worker>,
    transactions: BTreeMap<&'static str, i64>,
    throughput: Vec<shared::ops::MinuteCount>,
    failures: Vec<shared::ops::Failure>,
    dead: Vec<DeadJob>,
}

pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Err(e) = require_admin(&state, &headers) {
        return Ok(e.into_response());
    }
    let ns = &state.settings.queue_namespace;
    // Redis may be down while Postgres answers (or the reverse): show what can be read.
    let queue = shared::metrics::queue_depths(&state.redis, ns).await.ok();
    let workers = workers(&state).await.unwrap_or_default();
    let dead = queue::dead_jobs(&state, 50).await.unwrap_or_default();
    let mut conn = state.db.get().await?;
    let counts = shared::transactions::count_by_state(&mut conn).await?;
    let transactions = TxState::ALL
        .iter()
        .map(|s| {
            (
                s.as_str(),
                counts
                    .iter()
                    .find(|(n, _)| n == s.as_str())
                    .map_or(0, |(_, c)| *c),
            )
        })
        .collect();
    let throughput = shared::ops::finished_per_minute(&mut conn, 15).await?;
    let failures = shared::ops::recent_failures(&mut conn, 20).await?;
    Ok(axum::Json(Summary {
        queue,
        workers,
        transactions,
        throughput,
        failures,
        dead,
    })
    .into_response())
}

async fn workers(state: &AppState) -> redis::RedisResult<Vec<Worker>> {
    let key = shared::queue::queue_config(&state.settings.queue_namespace).workers_set();
    let mut conn = state.redis.clone();
    let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await?;
    Ok(pairs
        .into_iter()
        .map(|(name, score)| Worker {
            name,
            last_seen: score as i64,
        })
        .collect())
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
