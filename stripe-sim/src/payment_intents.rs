//! The requests that change a PaymentIntent: `POST /v1/payment_intents` (create, and confirm
//! with `confirm=true`), `POST /v1/payment_intents/{id}/confirm` and `.../cancel`. Each goes
//! through the same pipeline Stripe's do: fault injection, the idempotency key (the first
//! answer stored and replayed, 500s included), execution in a task of its own that finishes
//! even if the client hangs up, then the faults that strike after execution.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Path};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Sim;
use crate::errors::{ApiError, json_response};
use crate::faults::{AfterFault, EarlyFault, FaultPlan, draw_plan};
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

/// What a mutating request does once it executes.
#[derive(Clone, Debug)]
enum Action {
    Create,
    Confirm(String),
    Cancel(String),
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Confirm(_) => "confirm",
            Action::Cancel(_) => "cancel",
        }
    }

    fn path(&self) -> String {
        match self {
            Action::Create => PATH.to_owned(),
            Action::Confirm(id) => format!("{PATH}/{id}/confirm"),
            Action::Cancel(id) => format!("{PATH}/{id}/cancel"),
        }
    }
}

/// Everything a mutating handler is given, whatever the action: an extractor of its own, so
/// the three handlers differ only in their action.
pub(crate) struct Incoming {
    sim: Sim,
    api_key: String,
    request_id: String,
    kill: Option<KillSwitch>,
    headers: HeaderMap,
    body: Bytes,
}

impl FromRequest<Sim> for Incoming {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, sim: &Sim) -> Result<Self, Response> {
        let ext = req.extensions();
        // The authentication layer always puts both there before a /v1 handler runs.
        let api_key = ext.get::<ApiKey>().map(|k| k.0.clone()).unwrap_or_default();
        let request_id = ext
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let kill = ext.get::<KillSwitch>().cloned();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, sim)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            sim: sim.clone(),
            api_key,
            request_id,
            kill,
            headers,
            body,
        })
    }
}

pub async fn create(incoming: Incoming) -> Response {
    incoming.sim.shared.lock().stats.calls.create += 1;
    mutate(incoming, Action::Create).await
}

pub async fn confirm(Path(id): Path<String>, incoming: Incoming) -> Response {
    incoming.sim.shared.lock().stats.calls.confirm += 1;
    mutate(incoming, Action::Confirm(id)).await
}

pub async fn cancel(Path(id): Path<String>, incoming: Incoming) -> Response {
    incoming.sim.shared.lock().stats.calls.cancel += 1;
    mutate(incoming, Action::Cancel(id)).await
}

async fn mutate(incoming: Incoming, action: Action) -> Response {
    let Incoming {
        sim,
        api_key,
        request_id,
        kill,
        headers,
        body,
    } = incoming;
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
    if let Some(k) = &key {
        *sim.shared
            .lock()
            .requests_by_key
            .entry(k.clone())
            .or_default() += 1;
    }
    let req = CreateRequest {
        sim,
        api_key,
        request_id,
        key: key.clone(),
        base_url: base_url(&headers),
        kill,
        action,
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
    action: Action,
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
            let mut plan = draw_plan(&inner.faults, &mut inner.rng);
            if !inner.faults.apply_to(self.action.kind()) {
                // Drawn all the same, so the seeded sequence does not depend on the mix.
                plan = FaultPlan {
                    latency: plan.latency,
                    ..FaultPlan::default()
                };
            }
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
        let validated = validate(&self.action, &params);

        if let Some(key) = &self.key {
            let begin = self.sim.shared.lock().idempotency.begin(
                &self.api_key,
                key,
                &fingerprint("POST", &self.action.path(), &params),
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
        let request = match validated {
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
            let (status, body) = match request {
                Request::Create(params, behavior) => {
                    execute(&mut inner, params, behavior, guard.key.clone(), &base_url)
                }
                Request::Confirm { id, payment_method } => {
                    crate::transitions::confirm(&mut inner, &id, payment_method, &base_url)
                }
                Request::Cancel { id, reason } => {
                    crate::transitions::cancel(&mut inner, &id, reason)
                }
            };
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

/// A request that passed validation, ready to execute.
enum Request {
    Create(CreateParams, Option<Behavior>),
    Confirm {
        id: String,
        payment_method: Option<(String, Behavior)>,
    },
    Cancel {
        id: String,
        reason: Option<String>,
    },
}

/// Checks parameters, payment method and that the intent exists; nothing here is stored under
/// a key.
fn validate(action: &Action, params: &[(String, String)]) -> Result<Request, ApiError> {
    let payment_method = |pm: &str| {
        behavior_of(pm).ok_or_else(|| {
            ApiError::no_such(
                "PaymentMethod",
                pm,
                "payment_method",
                StatusCode::BAD_REQUEST,
            )
        })
    };
    let last = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match action {
        Action::Create => {
            let p = CreateParams::parse(params)?;
            let behavior = p
                .payment_method
                .as_deref()
                .map(payment_method)
                .transpose()?;
            Ok(Request::Create(p, behavior))
        }
        Action::Confirm(id) => {
            let payment_method = match last("payment_method") {
                Some(pm) => Some((pm.clone(), payment_method(&pm)?)),
                None => None,
            };
            Ok(Request::Confirm {
                id: id.clone(),
                payment_method,
            })
        }
        Action::Cancel(id) => Ok(Request::Cancel {
            id: id.clone(),
            reason: last("cancellation_reason"),
        }),
    }
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
        cancellation_reason: None,
    };
    let answer = if p.confirm {
        crate::transitions::apply_confirmation(&mut pi, base_url)
    } else {
        None
    };
    tracing::info!(id = %pi.id, status = pi.status, amount = pi.amount, "payment intent created");
    let ok_body = pi.to_json().to_string();
    inner.insert(pi);
    match answer {
        Some(e) => (e.status, e.body()),
        None => (StatusCode::OK, ok_body),
    }
}
