//! The `Transaction` row, the row the api inserts, and the customer-facing error a payment
//! carries. Its states and their moves are in [`crate::state_machine`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::schema::transactions;
use crate::state_machine::TxState;

/// Why a payment failed, in Stripe's codes plus a message fit to show the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxError {
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
}

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = transactions)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct Transaction {
    pub id: Uuid,
    pub state: TxState,
    pub amount: i64,
    pub currency: String,
    pub email: String,
    pub price: Option<String>,
    pub payment_method: String,
    pub stripe_idempotency_key: String,
    pub stripe_id: Option<String>,
    pub client_secret: Option<String>,
    pub error_code: Option<String>,
    pub error_decline_code: Option<String>,
    pub error_message: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub request_key: Option<String>,
    pub request_fingerprint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A confirm was sent and its answer lost: resolving by reading the intent back.
    pub outcome_unknown_since: Option<DateTime<Utc>>,
    /// Reads of the intent while resolving, re-checking or canceling (their backoff).
    pub lookups: i32,
    pub requires_action_since: Option<DateTime<Utc>>,
    /// Failed while its intent could still be confirmed: the worker cancels the intent.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// The merchant's own id for what was bought (their order), if they gave one.
    pub reference: Option<String>,
    /// The merchant's metadata: an object of string values (`crate::merchant_data`).
    pub metadata: serde_json::Value,
    /// The checkout session the payment was made in, if any (`crate::checkout_sessions`).
    pub session_id: Option<Uuid>,
}

impl Transaction {
    /// The worker still has to cancel this payment's intent.
    pub fn cancel_pending(&self) -> bool {
        self.cancel_requested_at.is_some() && self.canceled_at.is_none()
    }

    pub fn error(&self) -> Option<TxError> {
        let code = self.error_code.clone()?;
        Some(TxError {
            code,
            decline_code: self.error_decline_code.clone(),
            message: self.error_message.clone().unwrap_or_default(),
        })
    }
}

/// What the api inserts; everything else takes its column default.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = transactions)]
pub struct NewTransaction {
    pub id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub email: String,
    pub price: Option<String>,
    pub payment_method: String,
    pub stripe_idempotency_key: String,
    pub request_key: Option<String>,
    pub request_fingerprint: Option<String>,
    pub reference: Option<String>,
    pub metadata: serde_json::Value,
    pub session_id: Option<Uuid>,
}

impl NewTransaction {
    /// The Stripe idempotency key is derived from the transaction id, so it is stable across
    /// every attempt, every worker and every re-enqueue.
    pub fn stripe_key_for(id: Uuid) -> String {
        format!("txn_{id}")
    }
}
