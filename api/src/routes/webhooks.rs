//! `POST /webhooks/stripe`: Stripe's events. The body is taken as raw bytes, because the
//! signature is over exactly those bytes; [`crate::webhooks`] does the rest.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::webhooks::{self, Receipt};

#[utoipa::path(
    post,
    path = "/webhooks/stripe",
    tag = "webhooks",
    request_body(content = Object, description = "A Stripe event, verified against \
                 Stripe-Signature over the raw bytes"),
    params(("Stripe-Signature" = String, Header,
            description = "`t=<unix>,v1=<hex HMAC-SHA256 of \"{t}.{body}\">`")),
    responses(
        (status = 200, description = "Processed (or a repeat: `duplicate: true`)", body = Object),
        (status = 400, description = "Bad or missing signature, stale timestamp, or not an event",
         body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "STRIPE_WEBHOOK_SECRET unset, or Postgres unreachable",
         body = ErrorBody),
    ),
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    Ok(Json(
        match webhooks::receive(&state, signature, &body).await? {
            Receipt::Processed => json!({ "received": true }),
            Receipt::Duplicate => json!({ "received": true, "duplicate": true }),
        },
    ))
}
