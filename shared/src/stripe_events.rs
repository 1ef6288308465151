//! The Stripe webhook events we processed (`stripe_events`), keyed by Stripe's event id.
//!
//! Stripe delivers an event at least once, sometimes many times and out of order. Inserting
//! its id in the same database transaction as the change it makes means a repeat is
//! recognised (the primary key refuses it) and changes nothing, even when two deliveries of
//! one event race: the second insert waits for the first to commit, then finds the row.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::stripe_events::{self, dsl};
use crate::transactions::DbResult;

/// An event as received; `transaction_id` is the payment it was about, when one was found.
#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = stripe_events)]
pub struct NewStripeEvent<'a> {
    pub id: &'a str,
    pub type_: &'a str,
    pub transaction_id: Option<Uuid>,
    /// Unix seconds, Stripe's clock.
    pub created: i64,
}

#[derive(Clone, Debug, Queryable, Selectable)]
#[diesel(table_name = stripe_events)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct StripeEvent {
    pub id: String,
    pub type_: String,
    pub transaction_id: Option<Uuid>,
    pub created: i64,
    pub received_at: DateTime<Utc>,
    /// `applied`, or why the event changed nothing (`ignored: ...`).
    pub outcome: Option<String>,
}

/// Records the event; `false` when its id was recorded before (a repeated delivery), in which
/// case the caller must change nothing. Call it inside the transaction that applies the event.
pub async fn insert_new(
    conn: &mut AsyncPgConnection,
    event: &NewStripeEvent<'_>,
) -> DbResult<bool> {
    let n = diesel::insert_into(dsl::stripe_events)
        .values(event)
        .on_conflict(dsl::id)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Notes what became of the event: `applied`, or why it was ignored. Nothing Stripe tells us is
/// dropped without a word.
pub async fn set_outcome(conn: &mut AsyncPgConnection, id: &str, outcome: &str) -> DbResult<()> {
    diesel::update(dsl::stripe_events.find(id))
        .set(dsl::outcome.eq(outcome))
        .execute(conn)
        .await?;
    Ok(())
}

/// The events recorded for one transaction, oldest first (ops, tests).
pub async fn for_transaction(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<Vec<StripeEvent>> {
    dsl::stripe_events
        .filter(dsl::transaction_id.eq(id))
        .order(dsl::received_at.asc())
        .select(StripeEvent::as_select())
        .load(conn)
        .await
}

/// Every recorded event id, for tests that count deliveries.
pub async fn count(conn: &mut AsyncPgConnection) -> DbResult<i64> {
    dsl::stripe_events.count().get_result(conn).await
}
