//! `POST /v1/payment_intents`: validation, idempotency keys, fault injection, and the
//! charge outcome of each test payment method.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Sim;
use crate::errors::{ApiError, json_response};
use crate::faults::{AfterFault, EarlyFault, draw_plan};
use crate::idempotency::{Begin, MAX_KEY_LEN, StoredResponse, fingerprint};
use crate::intent::{Behavior, PaymentIntent, behavior_of, new_id};
use crate::middleware::{ApiKey, RequestId};
use crate::params::{CreateParams, parse_form};
use crate::server::KillSwitch;
use crate::state::Inner;

const PATH: &str = "/v1/payment_intents";

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `http://host` of this request, for links back to the simulator (the 3DS page).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

pub async fn create(
    State(sim): State<Sim>,
    Extension(ApiKey(api_key)): Extension<ApiKey>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    kill: Option<Extension<KillSwitch>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sim.shared.lock().stats.calls.create += 1;
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= MAX_KEY_LEN => Some(k.to_owned()),
        Some(_) => {
            return ApiError::invalid_request(
                StatusCode::BAD_REQUEST,
                None,
                format!(
                    "Invalid Idempotency-Key: keys must be 1 to {MAX_KEY_LEN} visible ASCII \
                     characters long."
                ),
            )
            .into_response();
        }
    };
    let req = CreateRequest {
        sim,
        api_key,
        request_id,
        key: key.clone(),
        base_url: base_url(&headers),
        kill: kill.map(|Extension(k)| k),
    };
    let mut resp = req.run(&body).await;
    // Stripe echoes the key on every response to a request that carried one.
    if let Some(value) = key.and_then(|k| HeaderValue::from_str(&k).ok()) {
        resp.headers_mut().insert("idempotency-key", value);
    }
    resp
}

struct CreateRequest {
    sim: Sim,
    api_key: String,
    request_id: String,
    key: Option<String>,
    base_url: String,
    kill: Option<KillSwitch>,
}

/// Forgets the in-flight marker if execution never stored a response (the task
/// panicked or the runtime shut down), so the key does not answer 409 forever.
struct InFlightGuard {
    sim: Sim,
    api_key: String,
    key: Option<String>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(key) = &self.key {
            self.sim
                .shared
                .lock()
                .idempotency
                .abandon(&self.api_key, key);
        }
    }
}

impl CreateRequest {
    async fn run(self, body: &[u8]) -> Response {
        let plan = {
            let mut inner = self.sim.shared.lock();
            let inner = &mut *inner;
            let plan = draw_plan(&inner.faults, &mut inner.rng);
            let counts = &mut inner.stats.faults;
            if !plan.latency.is_zero() {
                counts.latency += 1;
            }
            match plan.early {
                Some(EarlyFault::RateLimit) => counts.rate_limit_429 += 1,
                Some(EarlyFault::Conflict) => counts.conflict_409 += 1,
                Some(EarlyFault::Error500) => counts.error_500_before += 1,
                None => {}
            }
            (plan, inner.faults.retry_after_secs)
        };
        let (plan, retry_after) = plan;
        let early_answer = |error: ApiError| async move {
            tokio::time::sleep(plan.latency).await;
            error.into_response()
        };

        // Faults that answer before the idempotency layer: nothing executes or is stored.
        match plan.early {
            Some(EarlyFault::RateLimit) => {
                return early_answer(ApiError::rate_limited(retry_after)).await;
            }
            Some(EarlyFault::Conflict) => {
                return early_answer(ApiError::key_in_use(self.key.as_deref().unwrap_or(""))).await;
            }
            Some(EarlyFault::Error500) => return early_answer(ApiError::server_error()).await,
            None => {}
        }

        let params = match parse_form(body) {
            Ok(p) => p,
            Err(e) => return early_answer(e).await,
        };
        let validated = validate(&params);

        if let Some(key) = &self.key {
            let begin = self.sim.shared.lock().idempotency.begin(
                &self.api_key,
                key,
                &fingerprint("POST", PATH, &params),
                Instant::now(),
            );
            match begin {
                Begin::Execute => {}
                Begin::Replay(stored) => {
                    tokio::time::sleep(plan.latency).await;
                    return replay(stored);
                }
                Begin::Mismatch => return early_answer(ApiError::key_reused(key)).await,
                Begin::InFlight => return early_answer(ApiError::key_in_use(key)).await,
            }
        }
        let (params, behavior) = match validated {
            Ok(v) => v,
            Err(e) => {
                // Validation failures are not stored: the key stays free.
                if let Some(key) = &self.key {
                    self.sim
                        .shared
                        .lock()
                        .idempotency
                        .abandon(&self.api_key, key);
                }
                return early_answer(e).await;
            }
        };

        // Execute in a task of its own: like Stripe, a request that started executing
        // finishes and stores its result even if the client hangs up meanwhile.
        let guard = InFlightGuard {
            sim: self.sim.clone(),
            api_key: self.api_key.clone(),
            key: self.key.clone(),
        };
        let request_id = self.request_id.clone();
        let base_url = self.base_url.clone();
        let after = plan.after;
        let latency = plan.latency;
        let task = tokio::spawn(async move {
            let mut guard = guard;
            tokio::time::sleep(latency).await;
            let mut inner = guard.sim.shared.lock();
            let (status, body) =
                execute(&mut inner, params, behavior, guard.key.clone(), &base_url);
            let (status, body) = if after == Some(AfterFault::Error500) {
                inner.stats.faults.error_500_after += 1;
                let e = ApiError::server_error();
                (e.status, e.body())
            } else {
                (status, body)
            };
            let stored = StoredResponse {
                status: status.as_u16(),
                body,
                request_id,
            };
            if let Some(key) = guard.key.take() {
                inner
                    .idempotency
                    .complete(&guard.api_key, &key, stored.clone());
            }
            stored
        });
        let stored = match task.await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "payment intent execution failed");
                return ApiError::server_error().into_response();
            }
        };

        let mut hang = plan.hang;
        if after == Some(AfterFault::Drop) {
            self.sim.shared.lock().stats.faults.drop_after += 1;
            if let Some(kill) = &self.kill {
                kill.pull();
                // The connection task drops this future with the connection.
                std::future::pending::<()>().await;
            }
            // Served without our accept loop: hold the answer back instead.
            hang = Some(hang.unwrap_or(Duration::from_millis(self.sim.faults().hang_ms)));
        }
        if let Some(hang) = hang {
            if after != Some(AfterFault::Drop) {
                self.sim.shared.lock().stats.faults.hang += 1;
            }
            tokio::time::sleep(hang).await;
        }
        stored_response(&stored)
    }
}

fn stored_response(stored: &StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, stored.body.clone())
}

fn replay(stored: StoredResponse) -> Response {
    let mut resp = stored_response(&stored);
    let headers = resp.headers_mut();
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    if let Ok(v) = HeaderValue::from_str(&stored.request_id) {
        headers.insert("original-request", v);
    }
    resp
}

/// Checks parameters and payment method; nothing here is stored under a key.
fn validate(params: &[(String, String)]) -> Result<(CreateParams, Option<Behavior>), ApiError> {
    let p = CreateParams::parse(params)?;
    let behavior = match &p.payment_method {
        None => None,
        Some(pm) => Some(behavior_of(pm).ok_or_else(|| {
            ApiError::no_such(
                "PaymentMethod",
                pm,
                "payment_method",
                StatusCode::BAD_REQUEST,
            )
        })?),
    };
    Ok((p, behavior))
}

/// Creates (and, with `confirm`, confirms) the PaymentIntent; returns the answer.
fn execute(
    inner: &mut Inner,
    p: CreateParams,
    behavior: Option<Behavior>,
    key: Option<String>,
    base_url: &str,
) -> (StatusCode, String) {
    let id = new_id("pi_");
    let client_secret = format!("{id}_secret_{}", new_id(""));
    let mut pi = PaymentIntent {
        status: if p.payment_method.is_some() {
            "requires_confirmation"
        } else {
            "requires_payment_method"
        },
        id,
        amount: p.amount,
        currency: p.currency,
        created: now_unix(),
        client_secret,
        payment_method: p.payment_method,
        metadata: p.metadata,
        description: p.description,
        receipt_email: p.receipt_email,
        return_url: p.return_url,
        latest_charge: None,
        amount_received: 0,
        last_payment_error: None,
        next_action_url: None,
        behavior,
        idempotency_key: key,
        searchable_at: Instant::now() + Duration::from_millis(inner.faults.search_lag_ms),
    };
    let mut answer = None;
    if p.confirm {
        match behavior {
            Some(Behavior::Succeed) => {
                pi.succeed();
            }
            Some(Behavior::Decline(decline)) => {
                let mut error = decline.error(&new_id("ch_"));
                pi.fail(error.clone());
                error.payment_intent = Some(pi.to_json());
                answer = Some(ApiError::new(StatusCode::PAYMENT_REQUIRED, error));
            }
            Some(Behavior::ThreeDs { .. }) => {
                pi.status = "requires_action";
                pi.next_action_url = Some(format!(
                    "{base_url}/sim/3ds/{}?client_secret={}",
                    pi.id, pi.client_secret
                ));
            }
            // validate() refuses confirm without a payment method.
            None => {}
        }
    }
    tracing::info!(id = %pi.id, status = pi.status, amount = pi.amount, "payment intent created");
    let ok_body = pi.to_json().to_string();
    inner.insert(pi);
    match answer {
        Some(e) => (e.status, e.body()),
        None => (StatusCode::OK, ok_body),
    }
}
