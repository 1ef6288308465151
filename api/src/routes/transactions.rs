//! `POST /transactions`, `GET /transactions/{id}` and `POST /transactions/{id}/confirm`.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::models::{NewTransaction, Transaction, TxError, TxState};
use shared::transactions::{self as txq, Inserted};
use uuid::Uuid;

use crate::deadline::{Accepted, detached};
use crate::error::{ApiError, AppJson, ErrorBody};
use crate::openapi::{TxErrorDoc, TxStateDoc};
use crate::state::AppState;
use crate::validate::{CreateTransaction, validate, validate_idempotency_key};

/// A transaction as clients see it. Worker bookkeeping (leases, attempts, internal errors)
/// stays inside; the client secret only while the browser needs it for 3-D Secure.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransactionView {
    pub id: Uuid,
    #[schema(value_type = TxStateDoc)]
    pub state: TxState,
    /// Minor units (cents).
    pub amount: i64,
    pub currency: String,
    pub email: String,
    /// The Stripe PaymentIntent, once there is one.
    pub stripe_id: Option<String>,
    /// Why the payment failed (`state` = `failed`).
    #[schema(value_type = Option<TxErrorDoc>)]
    pub error: Option<TxError>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// For Stripe.js' 3-D Secure step; only while `state` is `requires_action`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl From<Transaction> for TransactionView {
    fn from(t: Transaction) -> Self {
        let state = t.tx_state();
        Self {
            id: t.id,
            state,
            amount: t.amount,
            currency: t.currency.clone(),
            email: t.email.clone(),
            stripe_id: t.stripe_id.clone(),
            error: t.error(),
            created_at: t.created_at,
            updated_at: t.updated_at,
            client_secret: if state == TxState::RequiresAction {
                t.client_secret
            } else {
                None
            },
        }
    }
}

/// `None` without an `Authorization` header; `Some(true)` with the right merchant key; any
/// other header is refused outright, with no hint of what was wrong.
fn merchant_auth(state: &AppState, headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(false);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    match &state.settings.merchant_api_key {
        Some(key) if key.matches(token) => Ok(true),
        _ => Err(ApiError::Unauthorized),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            let s = v
                .to_str()
                .map_err(|_| ApiError::validation("Idempotency-Key", "not ASCII"))?;
            validate_idempotency_key(s).map(str::to_owned)
        })
        .transpose()
}

/// Records a payment and queues its charge.
#[utoipa::path(
    post,
    path = "/transactions",
    operation_id = "create_transaction",
    tag = "transactions",
    request_body = CreateTransaction,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "1 to 255 visible ASCII characters: the same key and body return the \
                        first transaction, a different body is 409"),
    ),
    responses(
        (status = 202, description = "Recorded; the charge is queued", body = TransactionView,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay")),
         links(
             ("show" = (operation_id = "show_transaction",
                        parameters(("id" = "$response.body#/id")))),
             ("events" = (operation_id = "transaction_events",
                          parameters(("id" = "$response.body#/id")))),
             ("confirm" = (operation_id = "confirm_transaction",
                           parameters(("id" = "$response.body#/id")))),
         )),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Amount without a valid merchant key", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 429, description = "Rate limit; see Retry-After", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 408, description = "`request_timeout`: the request took too long and nothing \
                                      was done", body = ErrorBody),
        (status = 503, description = "`service_unavailable`: Postgres unreachable, nothing \
                                      recorded; or `outcome_unknown`: the payment may have been \
                                      recorded (resend with the same Idempotency-Key to learn it)",
         body = ErrorBody),
    ),
    security((), ("merchant_key" = [])),
)]
#[tracing::instrument(skip_all, fields(transaction_id))]
pub async fn create(
    State(state): State<AppState>,
    accepted: Option<Extension<Accepted>>,
    headers: HeaderMap,
    AppJson(body): AppJson<CreateTransaction>,
) -> Result<Response, ApiError> {
    let accepted = accepted.map(|Extension(a)| a);
    let merchant = merchant_auth(&state, &headers)?;
    let payment = validate(&body, &state.settings.prices, merchant)?;
    let key = idempotency_key(&headers)?;
    // Keys are scoped by caller, so a browser can never replay (or block) a merchant's key.
    let scope = if merchant { "merchant" } else { "public" };
    let request_key = key.map(|k| format!("{scope}:{k}"));
    let fingerprint = request_key.as_ref().map(|_| {
        let canonical = serde_json::to_vec(&(
            scope,
            &payment.email,
            &payment.payment_method,
            &payment.price,
            payment.amount,
            &payment.currency,
        ))
        .unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    });

    let id = Uuid::new_v4();
    let new = NewTransaction {
        id,
        amount: payment.amount,
        currency: payment.currency,
        email: payment.email,
        price: payment.price,
        payment_method: payment.payment_method,
        stripe_idempotency_key: NewTransaction::stripe_key_for(id),
        request_key,
        request_fingerprint: fingerprint.clone(),
    };
    // From here the work runs on its own task: a client that disconnects, or the request
    // deadline, must not stop an insert already sent or the push that follows it.
    let (row, replayed) = detached(accepted.as_ref(), {
        let state = state.clone();
        async move { record_and_enqueue(&state, new, fingerprint).await }
    })
    .await?;
    tracing::Span::current().record("transaction_id", tracing::field::display(row.id));
    let mut response = (StatusCode::ACCEPTED, AppJson(TransactionView::from(row))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Inserts the payment (or finds the one its Idempotency-Key made) and, for a new one, pushes
/// its charge. Runs detached: see [`crate::deadline`].
async fn record_and_enqueue(
    state: &AppState,
    new: NewTransaction,
    fingerprint: Option<String>,
) -> Result<(Transaction, bool), ApiError> {
    let mut conn = state.db.get().await?;
    let inserted = txq::insert(&mut conn, &new).await.map_err(|e| {
        // The statement was sent: a connection that broke may have committed it anyway.
        match ApiError::from(e) {
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "insert sent but unanswered: outcome unknown");
                ApiError::OutcomeUnknown
            }
            other => other,
        }
    })?;
    let (row, replayed) = match inserted {
        Inserted::Created(row) => (row, false),
        Inserted::Existing(row) if row.request_fingerprint == fingerprint => (row, true),
        Inserted::Existing(_) => return Err(ApiError::IdempotencyMismatch),
    };
    drop(conn);
    if !replayed {
        // The row is committed, so the payment is kept whatever Redis does now: if this push
        // fails, the worker's sweeper finds the row and enqueues it (see docs/reliability.md).
        if let Err(e) = state.queue.enqueue(row.id, None).await {
            tracing::warn!(transaction_id = %row.id, error = %e,
                "enqueue failed; the sweeper will pick the payment up");
        }
    }
    Ok((row, replayed))
}

/// A transaction id from the path; anything that is not a UUID names no transaction.
pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound("transaction"))
}

/// One transaction.
#[utoipa::path(
    get,
    path = "/transactions/{id}",
    operation_id = "show_transaction",
    tag = "transactions",
    params(("id" = String, Path, description = "The transaction id (a UUID)")),
    responses(
        (status = 200, body = TransactionView),
        (status = 404, description = "Unknown or malformed id", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(transaction_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<AppJson<TransactionView>, ApiError> {
    let id = parse_id(&id)?;
    let mut conn = state.db.get().await?;
    let row = txq::find(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("transaction"))?;
    Ok(AppJson(row.into()))
}

/// The browser finished a 3-D Secure challenge: have the worker read the PaymentIntent again
/// now instead of at its next scheduled check. Only a payment waiting for the customer is
/// touched: moving a `processing` payment's retry forward would let a caller burn through its
/// attempts (and its backoff) by calling this in a loop. Always `202` with the transaction as
/// it is; the page follows the change through the event stream.
#[utoipa::path(
    post,
    path = "/transactions/{id}/confirm",
    operation_id = "confirm_transaction",
    tag = "transactions",
    params(("id" = String, Path, description = "The transaction id (a UUID)")),
    responses(
        (status = 202, description = "The transaction as it is; it will be re-checked",
         body = TransactionView),
        (status = 404, description = "Unknown or malformed id", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(transaction_id = %id))]
pub async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Detached like `create`: a client gone mid-way must not leave the row due but unqueued.
    let row = detached(None, async move {
        let mut conn = state.db.get().await?;
        let row = txq::find(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound("transaction"))?;
        // `recheck_now` itself ignores final rows, so a payment finishing in between is safe.
        let due =
            row.tx_state() == TxState::RequiresAction && txq::recheck_now(&mut conn, id).await?;
        drop(conn);
        if due {
            // If the push fails, the row is due now and the sweeper enqueues it later.
            if let Err(e) = state.queue.enqueue(id, None).await {
                tracing::warn!(error = %e, "enqueue failed; the sweeper will pick the payment up");
            }
        }
        Ok(row)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, AppJson(TransactionView::from(row))).into_response())
}
