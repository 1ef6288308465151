//! The JSON views the routes answer with, and the parsing of ids in paths: shared by every
//! route that shows a transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::models::{Transaction, TxError};
use shared::state_machine::TxState;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

/// A transaction as anyone holding its id sees it (the checkout page's poll): what the page
/// needs, and nothing of the customer or the merchant's own data. Worker bookkeeping (leases,
/// attempts, internal errors) stays inside; the client secret only while the browser needs it
/// for 3-D Secure. With the merchant key, [`MerchantTransactionView`] instead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransactionView {
    pub id: Uuid,
    #[schema(value_type = TxStateDoc)]
    pub state: TxState,
    /// Minor units (cents).
    pub amount: i64,
    pub currency: String,
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
        let state = t.state;
        Self {
            id: t.id,
            state,
            amount: t.amount,
            currency: t.currency.clone(),
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

/// A transaction as the merchant sees it (with the merchant key), as every event and webhook
/// carries it. Its one definition is SQL, `payment_snapshot` (migrations), so the three never
/// differ; this type documents it and a test holds the two together.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MerchantTransactionView {
    pub id: Uuid,
    #[schema(value_type = TxStateDoc)]
    pub state: TxState,
    pub amount: i64,
    pub currency: String,
    /// The `PRICES` name bought, for a browser's payment.
    pub price: Option<String>,
    pub email: String,
    /// Your order id, as given when the payment was made.
    pub reference: Option<String>,
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub metadata: serde_json::Value,
    /// The checkout session the payment was made in.
    pub session_id: Option<Uuid>,
    pub stripe_id: Option<String>,
    #[schema(value_type = Option<TxErrorDoc>)]
    pub error: Option<TxError>,
    /// When Stripe reported a refund, a dispute.
    pub refunded_at: Option<DateTime<Utc>>,
    pub disputed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A transaction id from the path; anything that is not a UUID names no transaction.
pub fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound("transaction"))
}

/// A transaction's state, as `TransactionView.state` serializes it (`shared::state_machine::TxState`,
/// which knows nothing of OpenAPI; a test keeps the two in step).
#[derive(ToSchema)]
#[schema(as = TxState, rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used.
pub enum TxStateDoc {
    Pending,
    Processing,
    RequiresAction,
    Complete,
    Failed,
}

/// Why a payment failed (`shared::models::TxError`).
#[derive(ToSchema)]
#[schema(as = TxError)]
#[allow(dead_code)] // Only its schema is used.
pub struct TxErrorDoc {
    /// Stripe's error code, e.g. `card_declined`.
    code: String,
    /// Stripe's decline code, e.g. `insufficient_funds`.
    decline_code: Option<String>,
    /// Fit to show the customer.
    message: String,
}

/// A checkout session as the merchant sees it (`POST /checkout/sessions`, and
/// `GET /checkout/sessions/{id}` with the merchant key).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    /// The page to send the customer to.
    pub url: String,
    /// `open`, `complete` (one payment is complete) or `expired`.
    #[schema(example = "open")]
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub price: Option<String>,
    pub email: Option<String>,
    pub reference: Option<String>,
    #[schema(value_type = std::collections::HashMap<String, String>)]
    pub metadata: serde_json::Value,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The payment that is in flight or complete, if any.
    pub transaction_id: Option<Uuid>,
}

impl SessionView {
    pub fn new(state: &shared::checkout_sessions::SessionState, base: &str) -> Self {
        let s = &state.session;
        Self {
            id: s.id,
            url: format!("{base}/checkout/sessions/{}", s.id),
            status: state.status().as_str().to_owned(),
            amount: s.amount,
            currency: s.currency.clone(),
            price: s.price.clone(),
            email: s.email.clone(),
            reference: s.reference.clone(),
            metadata: s.metadata.clone(),
            success_url: s.success_url.clone(),
            cancel_url: s.cancel_url.clone(),
            expires_at: s.expires_at,
            created_at: s.created_at,
            transaction_id: state.live.as_ref().map(|t| t.id),
        }
    }
}
