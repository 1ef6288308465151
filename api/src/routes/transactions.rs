//! `POST /transactions`, `GET /transactions` (the merchant's list), `GET /transactions/{id}`,
//! its history, and `POST /transactions/{id}/confirm`.

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::state_machine::change::{Transition, change};
use shared::transactions as txq;

use crate::error::{ApiError, AppJson, ErrorBody};
use crate::http::deadline::{Accepted, detached};
use crate::idempotency;
use crate::payments::{self, Recorded};
use crate::state::AppState;
use crate::validate::{CreateTransaction, validate};
use crate::views::{MerchantTransactionView, TransactionView, TxStateDoc, parse_id};

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
    let caller = payments::caller(&state, &headers)?;
    let payment = validate(&body, &state.settings.prices, caller.is_merchant())?;
    let key = idempotency::request_key(&headers, caller.scope(), &payment)?;
    let Recorded { row, replayed } =
        payments::create(&state, payment, key, accepted.as_ref()).await?;
    tracing::Span::current().record("transaction_id", tracing::field::display(row.id));
    let mut response = if caller.is_merchant() {
        // The payment is recorded: a failure to read it back must not read as "nothing done".
        let view = merchant_view(&state, row.id)
            .await
            .map_err(|_| ApiError::OutcomeUnknown)?;
        (StatusCode::ACCEPTED, AppJson(view)).into_response()
    } else {
        (StatusCode::ACCEPTED, AppJson(TransactionView::from(row))).into_response()
    };
    if replayed {
        idempotency::mark_replayed(&mut response);
    }
    Ok(response)
}

/// The merchant's payments, newest first, a page at a time: pass the last `id` of a page as
/// `starting_after` for the next. Paging is stable: rows made meanwhile never shift a page.
#[utoipa::path(
    get,
    path = "/transactions",
    operation_id = "list_transactions",
    tag = "transactions",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100,
         description = "Rows per page, 1 to 100 (default 10)"),
        ("starting_after" = Option<String>, Query,
         description = "A transaction id: the page holds the ones created before it"),
        ("state" = Option<TxStateDoc>, Query, description = "Only this state"),
        ("reference" = Option<String>, Query, description = "Only this reference"),
        ("email" = Option<String>, Query, description = "Only this customer"),
        ("session_id" = Option<String>, Query, description = "Only this checkout session"),
        ("created[gte]" = Option<i64>, Query, description = "Created at or after (unix s)"),
        ("created[gt]" = Option<i64>, Query, description = "Created after (unix s)"),
        ("created[lte]" = Option<i64>, Query, description = "Created at or before (unix s)"),
        ("created[lt]" = Option<i64>, Query, description = "Created before (unix s)"),
    ),
    responses(
        (status = 200, description = "`{\"data\": [MerchantTransactionView...], \"has_more\"}`",
         body = ListDoc),
        (status = 400, description = "A malformed query string", body = ErrorBody),
        (status = 401, description = "No or a wrong merchant key", body = ErrorBody),
        (status = 422, description = "A parameter is invalid or unknown (`field` names it), or \
                                      `starting_after` names no transaction", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("merchant_key" = [])),
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if !payments::caller(&state, &headers)?.is_merchant() {
        return Err(ApiError::Unauthorized);
    }
    let filter = crate::validate::parse_list_query(query.as_deref())?;
    let mut conn = state.db.get().await?;
    let (data, has_more) = txq::list(&mut conn, &filter)
        .await?
        .ok_or_else(|| ApiError::validation("starting_after", "no such transaction"))?;
    Ok(AppJson(serde_json::json!({ "data": data, "has_more": has_more })).into_response())
}

/// `GET /transactions`'s body, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only its schema is used.
pub struct ListDoc {
    data: Vec<MerchantTransactionView>,
    /// More rows match, older than the last one here.
    has_more: bool,
}

/// One transaction.
#[utoipa::path(
    get,
    path = "/transactions/{id}",
    operation_id = "show_transaction",
    tag = "transactions",
    params(("id" = String, Path, description = "The transaction id (a UUID)")),
    responses(
        (status = 200, description = "Without a key, what the checkout page needs; with the \
                                      merchant key, `MerchantTransactionView`",
         body = TransactionView),
        (status = 401, description = "A wrong key", body = ErrorBody),
        (status = 404, description = "Unknown or malformed id", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security((), ("merchant_key" = [])),
)]
#[tracing::instrument(skip_all, fields(transaction_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = payments::caller(&state, &headers)?;
    let id = parse_id(&id)?;
    if caller.is_merchant() {
        return Ok(AppJson(merchant_view(&state, id).await?).into_response());
    }
    let mut conn = state.db.get().await?;
    let row = txq::find(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("transaction"))?;
    Ok(AppJson(TransactionView::from(row)).into_response())
}

/// Everything that happened to a payment, oldest first: each state change, correction,
/// discrepancy, refund and dispute, with the payment as it was right after and what caused it.
/// The merchant key only.
#[utoipa::path(
    get,
    path = "/transactions/{id}/history",
    operation_id = "transaction_history",
    tag = "transactions",
    params(("id" = String, Path, description = "The transaction id (a UUID)")),
    responses(
        (status = 200, description = "`{\"data\": [event, ...]}`, each event as its webhook \
                                      carries it, plus `cause`", body = HistoryDoc),
        (status = 401, description = "No or a wrong merchant key", body = ErrorBody),
        (status = 404, description = "Unknown or malformed id", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("merchant_key" = [])),
)]
#[tracing::instrument(skip_all, fields(transaction_id = %id))]
pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !payments::caller(&state, &headers)?.is_merchant() {
        return Err(ApiError::Unauthorized);
    }
    let id = parse_id(&id)?;
    let mut conn = state.db.get().await?;
    let events = shared::events::history(&mut conn, id).await?;
    if events.is_empty() && txq::find(&mut conn, id).await?.is_none() {
        return Err(ApiError::NotFound("transaction"));
    }
    let data: Vec<serde_json::Value> = events.iter().map(|e| e.with_cause()).collect();
    Ok(AppJson(serde_json::json!({ "data": data })).into_response())
}

/// `GET /transactions/{id}/history`'s body, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only its schema is used.
pub struct HistoryDoc {
    #[schema(value_type = Vec<Object>)]
    data: Vec<serde_json::Value>,
}

/// The payment as the merchant sees it: `payment_snapshot`, as its events carry it.
async fn merchant_view(state: &AppState, id: uuid::Uuid) -> Result<serde_json::Value, ApiError> {
    let mut conn = state.db.get().await?;
    txq::merchant_view(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("transaction"))
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
        // Only a payment waiting for the customer is made due (`Transition::RecheckNow`).
        let recheck = change(&mut conn, id, Transition::RecheckNow).await?;
        let recheck = recheck.ok_or(ApiError::NotFound("transaction"))?;
        drop(conn);
        if recheck.applied {
            // If the push fails, the row is due now and the sweeper enqueues it later.
            if let Err(e) = state.queue.enqueue(id, None).await {
                tracing::warn!(error = %e, "enqueue failed; the sweeper will pick the payment up");
            }
        }
        Ok(recheck.row)
    })
    .await?;
    Ok((StatusCode::ACCEPTED, AppJson(TransactionView::from(row))).into_response())
}
