//! The event log (`payment_events`): one row per change of a payment's state, per correction,
//! discrepancy, refund and dispute, written with the change itself (the same statement, or the
//! same transaction) and never afterwards. Each row holds the payment as the merchant saw it
//! then (`payment_snapshot`, defined once, in SQL, in the migration) and what caused it. It is
//! the audit trail (`GET /transactions/{id}/history`, `payctl show`) and the outbox the
//! merchant's webhooks are sent from: every event gets one delivery row per enabled endpoint in
//! the same statement (`crate::merchant_webhooks`).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::db::DbResult;
use crate::schema::payment_events::dsl;

/// The CTEs that write an event and its webhook deliveries for every row of the CTE `$rows`
/// whose `event_snapshot` is set (the row's `event_previous` is the state before; `$kind` the
/// event's type, `$cause` who caused it: SQL expressions). The state changes
/// (`crate::state_machine`), the insert of a payment (`crate::transactions`) and
/// [`record_without_change`] end their statements with these.
macro_rules! event_ctes {
    ($rows:literal, $kind:literal, $cause:literal) => {
        concat!(
            "ev AS (INSERT INTO payment_events
                        (transaction_id, type, previous_state, new_state, attempt, snapshot, cause)
                    SELECT r.id, ",
            $kind,
            ", r.event_previous, r.state, r.attempts, r.event_snapshot, ",
            $cause,
            "
                    FROM ",
            $rows,
            " r WHERE r.event_snapshot IS NOT NULL
                    RETURNING id),
             dl AS (INSERT INTO webhook_deliveries (event_id, endpoint_id)
                    SELECT ev.id, e.id FROM ev CROSS JOIN webhook_endpoints e WHERE e.enabled)"
        )
    };
}
pub(crate) use event_ctes;

/// The event types, as the table's CHECK lists them.
pub const TYPES: [&str; 8] = [
    "payment.pending",
    "payment.processing",
    "payment.requires_action",
    "payment.complete",
    "payment.failed",
    "payment.refunded",
    "payment.disputed",
    "payment.discrepancy",
];

#[derive(Clone, Debug, Queryable, QueryableByName, Selectable, Serialize)]
#[diesel(table_name = crate::schema::payment_events)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct PaymentEvent {
    /// Also the webhook's `sequence`: later events of a payment have larger ids.
    pub id: i64,
    pub transaction_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub previous_state: Option<String>,
    pub new_state: String,
    pub attempt: i32,
    /// The payment as the merchant saw it right after.
    pub snapshot: serde_json::Value,
    pub cause: String,
    pub created_at: DateTime<Utc>,
}

impl PaymentEvent {
    /// `evt_<id>`: the id the merchant's webhook carries and `payctl webhooks` takes.
    pub fn public_id(&self) -> String {
        public_id(self.id)
    }

    /// The event as the merchant's webhook carries it (docs/webhooks.md): `id`, `type`,
    /// `created` (unix seconds), `sequence` (later events of a payment have larger ones) and
    /// `data` (`transaction` as the merchant-keyed GET showed it right after, `previous_state`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.public_id(),
            "type": self.kind,
            "created": self.created_at.timestamp(),
            "sequence": self.id,
            "data": {
                "transaction": self.snapshot,
                "previous_state": self.previous_state,
            },
        })
    }

    /// [`PaymentEvent::to_json`] with what caused it, for the history (an audit trail).
    pub fn with_cause(&self) -> serde_json::Value {
        let mut v = self.to_json();
        v["cause"] = serde_json::Value::String(self.cause.clone());
        v
    }
}

pub fn public_id(id: i64) -> String {
    format!("evt_{id}")
}

/// `evt_123` (or `123`) → 123.
pub fn parse_public_id(s: &str) -> Option<i64> {
    s.strip_prefix("evt_")
        .unwrap_or(s)
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// An event that is not a change of state (a refund, a dispute, a discrepancy), with its
/// deliveries, from the payment's row as it is now: call it in the transaction that made the
/// change it reports.
pub async fn record_without_change(
    conn: &mut AsyncPgConnection,
    transaction_id: Uuid,
    kind: &'static str,
    cause: &str,
) -> DbResult<()> {
    debug_assert!(TYPES.contains(&kind));
    diesel::sql_query(concat!(
        "WITH now_row AS (SELECT t.id, t.state, t.state AS event_previous, t.attempts,
                                 payment_snapshot(t) AS event_snapshot
                          FROM transactions t WHERE t.id = $1), ",
        event_ctes!("now_row", "$2", "$3"),
        " SELECT count(*) FROM ev"
    ))
    .bind::<diesel::sql_types::Uuid, _>(transaction_id)
    .bind::<diesel::sql_types::Text, _>(kind)
    .bind::<diesel::sql_types::Text, _>(cause)
    .execute(conn)
    .await?;
    Ok(())
}

/// A payment's events, oldest first.
pub async fn history(
    conn: &mut AsyncPgConnection,
    transaction_id: Uuid,
) -> DbResult<Vec<PaymentEvent>> {
    dsl::payment_events
        .filter(dsl::transaction_id.eq(transaction_id))
        .order(dsl::id.asc())
        .select(PaymentEvent::as_select())
        .load(conn)
        .await
}

pub async fn find(conn: &mut AsyncPgConnection, id: i64) -> DbResult<Option<PaymentEvent>> {
    dsl::payment_events
        .find(id)
        .select(PaymentEvent::as_select())
        .first(conn)
        .await
        .optional()
}
