//! The `Transaction` row and its state machine.
//!
//! ```text
//! pending ──▶ processing ──▶ complete
//!    │            │   ▲  ╲──▶ failed
//!    │            ▼   │
//!    └──────▶ requires_action ──▶ complete | failed
//! ```
//! A state only moves forward: `rank` orders them, and every update is guarded in SQL by the
//! states it may leave from, so a job delivered twice or a late answer can never move a
//! payment back.

use std::fmt;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::schema::transactions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// Recorded, waiting for a worker.
    Pending,
    /// A worker has called (or is calling) Stripe, or Stripe reported `processing`; the outcome
    /// is not known yet.
    Processing,
    /// The bank wants 3-D Secure; the customer's browser must act.
    RequiresAction,
    /// Stripe charged the card.
    Complete,
    /// Stripe did not charge the card, and never will for this transaction.
    Failed,
}

impl TxState {
    pub const ALL: [TxState; 5] = [
        TxState::Pending,
        TxState::Processing,
        TxState::RequiresAction,
        TxState::Complete,
        TxState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Processing => "processing",
            TxState::RequiresAction => "requires_action",
            TxState::Complete => "complete",
            TxState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(self, TxState::Complete | TxState::Failed)
    }

    /// The states a transaction may move to `self` from: exactly those before it.
    pub fn predecessors(self) -> &'static [&'static str] {
        match self {
            TxState::Pending => &[],
            TxState::Processing => &["pending"],
            TxState::RequiresAction => &["pending", "processing"],
            TxState::Complete | TxState::Failed => &["pending", "processing", "requires_action"],
        }
    }
}

impl fmt::Display for TxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    pub state: String,
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
}

impl Transaction {
    /// The row's state; the CHECK constraint guarantees it parses, `Pending` is never reached.
    pub fn tx_state(&self) -> TxState {
        TxState::parse(&self.state).unwrap_or(TxState::Pending)
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
}

impl NewTransaction {
    /// The Stripe idempotency key is derived from the transaction id, so it is stable across
    /// every attempt, every worker and every re-enqueue.
    pub fn stripe_key_for(id: Uuid) -> String {
        format!("txn_{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_names() {
        for st in TxState::ALL {
            assert_eq!(TxState::parse(st.as_str()), Some(st));
        }
        assert_eq!(TxState::parse("bogus"), None);
    }

    #[test]
    fn final_states_have_no_successor() {
        for st in TxState::ALL {
            for next in TxState::ALL {
                if next.predecessors().contains(&st.as_str()) {
                    assert!(!st.is_final(), "{st} is final but may move to {next}");
                }
            }
        }
    }
}
