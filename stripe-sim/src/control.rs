//! `/sim/*` control routes for tests and external checkers: ledger, faults, stats, reset,
//! webhook deliveries, a customer confirming an intent after the fact, and refunds and
//! disputes (which only emit their webhook).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Sim;
use crate::faults::Faults;

pub async fn ledger(State(sim): State<Sim>) -> Response {
    Json(sim.ledger()).into_response()
}

pub async fn get_faults(State(sim): State<Sim>) -> Response {
    Json(sim.faults()).into_response()
}

/// Replaces the whole fault configuration (missing fields take their defaults).
pub async fn set_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    // Parsed by hand so a typo in a field name gets a readable 400, not axum's 422.
    let faults = match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return bad_request(e);
    }
    tracing::info!(?faults, "faults replaced");
    sim.set_faults(faults.clone());
    Json(faults).into_response()
}

pub async fn stats(State(sim): State<Sim>) -> Response {
    Json(sim.stats()).into_response()
}

pub async fn reset(State(sim): State<Sim>) -> Response {
    sim.reset();
    Json(json!({ "reset": true })).into_response()
}

/// Every webhook event and its delivery attempts, oldest first.
pub async fn webhooks(State(sim): State<Sim>) -> Response {
    Json(json!({ "deliveries": sim.webhook_deliveries() })).into_response()
}

/// `POST /sim/payment_intents/{id}/customer_confirm` (optional form field `payment_method`):
/// the customer confirms the intent after the fact.
pub async fn customer_confirm(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let params = crate::params::parse_form(&body).unwrap_or_default();
    let pm = params
        .iter()
        .find(|(k, _)| k == "payment_method")
        .map(|(_, v)| v.as_str());
    match sim.customer_confirm(&id, pm) {
        Ok(status) => Json(json!({ "id": id, "status": status })).into_response(),
        Err(message) => bad_request(message),
    }
}

pub async fn refund(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    after_charge(sim.refund_charge(&id), "charge.refunded")
}

pub async fn dispute(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    after_charge(sim.dispute_charge(&id), "charge.dispute.created")
}

fn after_charge(result: Result<(), String>, event_type: &str) -> Response {
    match result {
        Ok(()) => Json(json!({ "emitted": event_type })).into_response(),
        Err(message) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "message": message } })),
        )
            .into_response(),
    }
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": { "message": message } })),
    )
        .into_response()
}
