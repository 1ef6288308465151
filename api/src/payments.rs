//! The core of `POST /transactions`, apart from HTTP: who is calling, and recording a validated
//! payment under its request key (a new payment, or the one the key made before) with its
//! charge queued.

use axum::http::{HeaderMap, header};
use shared::checkout_sessions::{self as sessions, Attempt};
use shared::models::{NewTransaction, Transaction};
use shared::transactions::Inserted;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::deadline::{Accepted, detached};
use crate::idempotency::RequestKey;
use crate::state::AppState;
use crate::validate::ValidPayment;

/// Who sent the request: a browser (prices from `PRICES` only) or the merchant's backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Public,
    Merchant,
}

impl Caller {
    pub fn is_merchant(self) -> bool {
        self == Caller::Merchant
    }

    /// The scope of the caller's request keys.
    pub fn scope(self) -> &'static str {
        match self {
            Caller::Public => "public",
            Caller::Merchant => "merchant",
        }
    }
}

/// `Public` without an `Authorization` header; `Merchant` with the right merchant key; any
/// other header is refused outright, with no hint of what was wrong.
pub fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller::Public);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    match &state.settings.merchant_api_key {
        Some(key) if key.matches(token) => Ok(Caller::Merchant),
        _ => Err(ApiError::Unauthorized),
    }
}

/// A payment recorded: new, or the one its request key made before (a replay).
pub struct Recorded {
    pub row: Transaction,
    pub replayed: bool,
}

/// Records `payment` and queues its charge; a payment in a checkout session
/// (`payment.session_id`) only when the session allows a new attempt. From here the work runs
/// on its own task: a client that disconnects, or the request deadline, must not stop an insert
/// already sent or the push that follows it.
pub async fn create(
    state: &AppState,
    payment: ValidPayment,
    key: Option<RequestKey>,
    accepted: Option<&Accepted>,
) -> Result<Recorded, ApiError> {
    let id = Uuid::new_v4();
    let (request_key, fingerprint) = match key {
        Some(k) => (Some(k.key), Some(k.fingerprint)),
        None => (None, None),
    };
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
        reference: payment.reference,
        metadata: payment.metadata,
        session_id: payment.session_id,
    };
    let state = state.clone();
    let (row, replayed) = detached(accepted, async move {
        record_and_enqueue(&state, new, fingerprint).await
    })
    .await?;
    Ok(Recorded { row, replayed })
}

/// Inserts the payment (or finds the one its Idempotency-Key made) and, for a new one, pushes
/// its charge. Runs detached: see [`crate::http::deadline`].
async fn record_and_enqueue(
    state: &AppState,
    new: NewTransaction,
    fingerprint: Option<String>,
) -> Result<(Transaction, bool), ApiError> {
    let inserted = match new.session_id {
        None => match state.inserts.insert(new).await? {
            Inserted::Created(row) => Attempt::Started(row),
            Inserted::Existing(row) => Attempt::Replayed(row),
        },
        Some(session) => {
            let mut conn = state.db.get().await?;
            sessions::start_attempt(&mut conn, session, &new)
                .await
                .map_err(crate::inserts::sent)?
        }
    };
    let (row, replayed) = match inserted {
        Attempt::Started(row) => (row, false),
        Attempt::Replayed(row) if row.request_fingerprint == fingerprint => (row, true),
        Attempt::Replayed(_) => return Err(ApiError::IdempotencyMismatch),
        Attempt::Taken(live) => return Err(ApiError::SessionTaken(live.id)),
        Attempt::Expired => return Err(ApiError::SessionExpired),
        Attempt::UnknownSession => return Err(ApiError::NotFound("checkout session")),
    };
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
