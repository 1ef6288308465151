//! `/healthz` (the process answers) and `/readyz` (its dependencies answer too).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process answers", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 only when both Postgres and Redis answer within a second; a load balancer stops sending
/// payments to an instance that could not record them.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Postgres and Redis answer", body = Object),
        (status = 503, description = "One of them does not", body = Object),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let limit = Duration::from_secs(1);
    let pg = tokio::time::timeout(limit, async {
        let mut conn = state.db.get().await.map_err(|e| e.to_string())?;
        diesel::sql_query("SELECT 1")
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())
    });
    let mut redis = state.redis.clone();
    let rd = tokio::time::timeout(limit, async move {
        redis::cmd("PING")
            .query_async::<String>(&mut redis)
            .await
            .map_err(|e| e.to_string())
    });
    let (pg, rd) = tokio::join!(pg, rd);
    let pg_ok = matches!(pg, Ok(Ok(_)));
    let redis_ok = matches!(rd, Ok(Ok(_)));
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let status = if pg_ok && redis_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "postgres": word(pg_ok), "redis": word(redis_ok) })),
    )
}
