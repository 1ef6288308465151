//! Checkout sessions: `POST /checkout/sessions` (the merchant makes one), `GET
//! /checkout/sessions/{id}` (its page; with the merchant key, its JSON) and `POST
//! /checkout/sessions/{id}/pay` (the page starts an attempt). The rules (one successful
//! attempt, expiry, return URLs) live in `shared::checkout_sessions`.

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use shared::checkout_sessions::{self as sessions, CheckoutSession, Created, SessionState};
use uuid::Uuid;

use crate::error::{ApiError, AppJson, ErrorBody};
use crate::http::deadline::Accepted;
use crate::idempotency;
use crate::pages::checkout::{CheckoutPage, SessionPage, product_name, render};
use crate::pages::{checkout_csp, html, message_page, not_found_page};
use crate::payments::{self, Recorded};
use crate::state::AppState;
use crate::validate::{CreateSession, PayInSession, validate_pay_in_session, validate_session};
use crate::views::{SessionView, TransactionView};

/// Makes a checkout session: send the customer to its `url`.
#[utoipa::path(
    post,
    path = "/checkout/sessions",
    operation_id = "create_checkout_session",
    tag = "checkout sessions",
    request_body = CreateSession,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "The same key and body return the first session; another body is 409"),
    ),
    responses(
        (status = 201, description = "Made", body = SessionView),
        (status = 200, description = "A replay of the Idempotency-Key", body = SessionView,
         headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or a wrong merchant key", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("merchant_key" = [])),
)]
#[tracing::instrument(skip_all, fields(session_id))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    AppJson(body): AppJson<CreateSession>,
) -> Result<Response, ApiError> {
    if !payments::caller(&state, &headers)?.is_merchant() {
        return Err(ApiError::Unauthorized);
    }
    let valid = validate_session(&body, &state.settings.prices)?;
    let key = idempotency::session_key(&headers, &valid)?;
    let (request_key, request_fingerprint) = match key {
        Some(k) => (Some(k.key), Some(k.fingerprint)),
        None => (None, None),
    };
    let now = Utc::now();
    let new = CheckoutSession {
        id: Uuid::new_v4(),
        amount: valid.amount,
        currency: valid.currency,
        price: valid.price,
        email: valid.email,
        reference: valid.reference,
        metadata: valid.metadata,
        success_url: valid.success_url,
        cancel_url: valid.cancel_url,
        expires_at: now + chrono::Duration::seconds(valid.expires_in),
        request_key,
        request_fingerprint,
        created_at: now,
    };
    let mut conn = state.db.get().await?;
    let (row, status) = match sessions::create(&mut conn, &new).await? {
        Created::New(row) => (row, StatusCode::CREATED),
        Created::Existing(row) if row.request_fingerprint == new.request_fingerprint => {
            (row, StatusCode::OK)
        }
        Created::Existing(_) => return Err(ApiError::IdempotencyMismatch),
    };
    tracing::Span::current().record("session_id", tracing::field::display(row.id));
    let found = sessions::find(&mut conn, row.id)
        .await?
        .ok_or(ApiError::NotFound("checkout session"))?;
    let mut response = (
        status,
        AppJson(SessionView::new(&found, &public_base(&state, &headers))),
    )
        .into_response();
    if status == StatusCode::OK {
        idempotency::mark_replayed(&mut response);
    }
    Ok(response)
}

/// The session's checkout page; with the merchant key, the session as JSON.
#[utoipa::path(
    get,
    path = "/checkout/sessions/{id}",
    operation_id = "show_checkout_session",
    tag = "checkout sessions",
    params(
        ("id" = String, Path, description = "The session id (a UUID)"),
        ("txn" = Option<String>, Query, description = "An attempt the page resumes following"),
    ),
    responses(
        (status = 200, description = "The checkout page; with the merchant key, the session",
         content((String = "text/html"), (SessionView = "application/json"))),
        (status = 401, description = "A wrong key", body = ErrorBody),
        (status = 404, description = "No such session", content_type = "text/html", body = String),
        (status = 410, description = "The session expired unpaid: a page saying so",
         content_type = "text/html", body = String),
    ),
    security((), ("merchant_key" = [])),
)]
#[tracing::instrument(skip_all, fields(session_id = %id))]
pub async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let merchant = payments::caller(&state, &headers)?.is_merchant();
    let parsed = Uuid::parse_str(&id).ok();
    let found = match parsed {
        Some(id) => {
            let mut conn = state.db.get().await?;
            sessions::find(&mut conn, id).await?
        }
        None => None,
    };
    if merchant {
        let found = found.ok_or(ApiError::NotFound("checkout session"))?;
        return Ok(
            AppJson(SessionView::new(&found, &public_base(&state, &headers))).into_response(),
        );
    }
    let Some(found) = found else {
        return Ok(not_found_page("This checkout link is not valid."));
    };
    Ok(page(&state, &found))
}

fn page(state: &AppState, found: &SessionState) -> Response {
    let s = &found.session;
    if found.live.is_none() && found.expired {
        return message_page(
            StatusCode::GONE,
            "This checkout has expired",
            "The link to pay for this order is no longer valid, and nothing was charged. Ask \
             the shop for a new one.",
            s.cancel_url.as_deref().map(|u| (u, "Return to the shop")),
        );
    }
    let product = match (&s.price, &s.reference) {
        (Some(price), _) => product_name(price),
        (None, Some(reference)) => format!("Order {reference}"),
        (None, None) => "Your order".to_owned(),
    };
    let stripe = &state.settings.stripe;
    let body = render(&CheckoutPage {
        product,
        price_name: None,
        amount: s.amount,
        currency: &s.currency,
        publishable_key: stripe.publishable_key.as_deref(),
        sim_base: stripe.browser_sim_base(),
        resuming: false,
        resume: found.live.as_ref().map(|t| t.id),
        session: Some(SessionPage {
            id: s.id,
            email: s.email.as_deref(),
            success_url: &s.success_url,
            cancel_url: s.cancel_url.as_deref(),
        }),
    });
    html(StatusCode::OK, body, &checkout_csp(stripe))
}

/// Starts a payment attempt in the session with the customer's card.
#[utoipa::path(
    post,
    path = "/checkout/sessions/{id}/pay",
    operation_id = "pay_checkout_session",
    tag = "checkout sessions",
    request_body = PayInSession,
    params(
        ("id" = String, Path, description = "The session id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header,
         description = "One per attempt: the same key and body return the same attempt"),
    ),
    responses(
        (status = 202, description = "Recorded; the charge is queued", body = TransactionView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "`session_has_payment` (its `transaction_id` is in flight \
                                      or complete), or the Idempotency-Key was reused",
         body = ErrorBody),
        (status = 410, description = "`session_expired`", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 429, description = "Rate limit", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(session_id = %id, transaction_id))]
pub async fn pay(
    State(state): State<AppState>,
    accepted: Option<Extension<Accepted>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    AppJson(body): AppJson<PayInSession>,
) -> Result<Response, ApiError> {
    let accepted = accepted.map(|Extension(a)| a);
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound("checkout session"))?;
    let session = {
        let mut conn = state.db.get().await?;
        sessions::get(&mut conn, id)
            .await?
            .ok_or(ApiError::NotFound("checkout session"))?
    };
    let payment = validate_pay_in_session(&body, &session)?;
    // Keys are the page's own, scoped to the session: one session's key never finds another's.
    let key = idempotency::request_key(&headers, &format!("session/{id}"), &payment)?;
    let Recorded { row, replayed } =
        payments::create(&state, payment, key, accepted.as_ref()).await?;
    tracing::Span::current().record("transaction_id", tracing::field::display(row.id));
    let mut response = (StatusCode::ACCEPTED, AppJson(TransactionView::from(row))).into_response();
    if replayed {
        idempotency::mark_replayed(&mut response);
    }
    Ok(response)
}

/// Where customers reach this api: `PUBLIC_URL`, else (development) `http://` and the request's
/// `Host` when it is a plain host name, else `http://localhost`.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.settings.http.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}
