//! Read-only `/v1` handlers: retrieve, search and list PaymentIntents, and Stripe's 404
//! for routes the simulator does not implement.

use axum::extract::{OriginalUri, Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Sim;
use crate::errors::{ApiError, json_response};
use crate::faults::draw_latency;
use crate::intent::PaymentIntent;
use crate::params::parse_form;
use crate::search;

const PATH: &str = "/v1/payment_intents";

/// Draws (and counts) the latency for a request that is not a create.
async fn latency(sim: &Sim) {
    let delay = {
        let mut inner = sim.shared.lock();
        let inner = &mut *inner;
        let delay = draw_latency(&inner.faults, &mut inner.rng);
        if !delay.is_zero() {
            inner.stats.faults.latency += 1;
        }
        delay
    };
    tokio::time::sleep(delay).await;
}
pub async fn retrieve(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    sim.shared.lock().stats.calls.retrieve += 1;
    let fail = {
        use rand::RngExt;
        let mut inner = sim.shared.lock();
        let inner = &mut *inner;
        let p = inner.faults.read_error_500;
        let hit = p > 0.0 && inner.rng.random::<f64>() < p;
        if hit {
            inner.stats.faults.read_error_500 += 1;
        }
        hit
    };
    latency(&sim).await;
    if fail {
        return ApiError::server_error().into_response();
    }
    let found = sim.shared.lock().get(&id).map(PaymentIntent::to_json);
    match found {
        Some(pi) => json_response(StatusCode::OK, pi.to_string()),
        None => ApiError::no_such("payment_intent", &id, "intent", StatusCode::NOT_FOUND)
            .into_response(),
    }
}

/// Reads `limit` (1..=100, default 10).
fn limit(params: &[(String, String)]) -> Result<usize, ApiError> {
    match params.iter().rev().find(|(k, _)| k == "limit") {
        None => Ok(10),
        Some((_, v)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_request(
                    StatusCode::BAD_REQUEST,
                    None,
                    "This value must be between 1 and 100 (it currently is out of range).",
                )
                .param("limit")
            }),
    }
}

pub async fn search(State(sim): State<Sim>, RawQuery(query): RawQuery) -> Response {
    sim.shared.lock().stats.calls.search += 1;
    latency(&sim).await;
    let result = (|| {
        let params = parse_form(query.unwrap_or_default().as_bytes())?;
        let get = |name: &str| {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let q = get("query").ok_or_else(|| ApiError::missing_param("query"))?;
        let clauses = search::parse(&q).map_err(|m| {
            ApiError::invalid_request(StatusCode::BAD_REQUEST, None, m).param("query")
        })?;
        let limit = limit(&params)?;
        // Page tokens are plain offsets: opaque enough for a client that only echoes them.
        let offset = get("page")
            .map(|p| p.parse::<usize>().unwrap_or(0))
            .unwrap_or(0);
        let inner = sim.shared.lock();
        // The search index lags behind writes (Faults::search_lag_ms).
        let now = std::time::Instant::now();
        let matching: Vec<_> = inner
            .intents()
            .iter()
            .rev()
            .filter(|pi| pi.searchable_at <= now)
            .filter(|pi| clauses.iter().all(|c| c.matches(pi)))
            .collect();
        let page: Vec<_> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|pi| pi.to_json())
            .collect();
        let has_more = matching.len() > offset + page.len();
        Ok::<_, ApiError>(json!({
            "object": "search_result",
            "data": page,
            "has_more": has_more,
            "next_page": has_more.then(|| (offset + limit).to_string()),
            "url": "/v1/payment_intents/search",
        }))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, body.to_string()),
        Err(e) => e.into_response(),
    }
}

pub async fn list(State(sim): State<Sim>, RawQuery(query): RawQuery) -> Response {
    sim.shared.lock().stats.calls.list += 1;
    latency(&sim).await;
    let result = (|| {
        let params = parse_form(query.unwrap_or_default().as_bytes())?;
        let limit = limit(&params)?;
        let after = params
            .iter()
            .rev()
            .find(|(k, _)| k == "starting_after")
            .map(|(_, v)| v);
        let window = created_window(&params)?;
        let inner = sim.shared.lock();
        // Newest first, as Stripe lists; list is a consistent read: no lag.
        let all: Vec<_> = inner
            .intents()
            .iter()
            .rev()
            .filter(|pi| window.contains(pi.created))
            .collect();
        let start = match after {
            None => 0,
            Some(id) => all
                .iter()
                .position(|pi| &pi.id == id)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    ApiError::no_such(
                        "payment_intent",
                        id,
                        "starting_after",
                        StatusCode::BAD_REQUEST,
                    )
                })?,
        };
        let page: Vec<_> = all
            .iter()
            .skip(start)
            .take(limit)
            .map(|pi| pi.to_json())
            .collect();
        let has_more = all.len() > start + page.len();
        Ok::<_, ApiError>(json!({
            "object": "list",
            "data": page,
            "has_more": has_more,
            "url": PATH,
        }))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, body.to_string()),
        Err(e) => e.into_response(),
    }
}

/// `created`, `created[gte]`, `created[gt]`, `created[lte]`, `created[lt]` (Unix seconds).
struct Window {
    from: i64,
    to: i64,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
        self.from <= t && t <= self.to
    }
}

fn created_window(params: &[(String, String)]) -> Result<Window, ApiError> {
    let mut w = Window {
        from: i64::MIN,
        to: i64::MAX,
    };
    for (k, v) in params {
        let bound = match k.as_str() {
            "created" | "created[gte]" | "created[gt]" | "created[lte]" | "created[lt]" => k,
            _ => continue,
        };
        let t: i64 = v.parse().map_err(|_| {
            ApiError::invalid_request(
                StatusCode::BAD_REQUEST,
                Some("parameter_invalid_integer"),
                format!("Invalid integer: {v}"),
            )
            .param(bound)
        })?;
        match bound.as_str() {
            "created" => (w.from, w.to) = (t, t),
            "created[gte]" => w.from = w.from.max(t),
            "created[gt]" => w.from = w.from.max(t.saturating_add(1)),
            "created[lte]" => w.to = w.to.min(t),
            _ => w.to = w.to.min(t.saturating_sub(1)),
        }
    }
    Ok(w)
}

pub async fn unknown_route(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    ApiError::invalid_request(
        StatusCode::NOT_FOUND,
        None,
        format!(
            "Unrecognized request URL ({method}: {}). The simulator implements \
             /v1/payment_intents only.",
            uri.path()
        ),
    )
    .into_response()
}
