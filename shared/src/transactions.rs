//! Every query on `transactions`. Each takes `&mut AsyncPgConnection`, so callers pass a pooled
//! connection or an open transaction. State changes are guarded in SQL by the states they may
//! leave from (see [`TxState::predecessors`]): they only ever move a payment forward.
//!
//! The statements every payment makes (`insert`, `claim`, `record`) are written as fixed SQL
//! text through [`Prepared`], which each connection parses and plans once: diesel re-parses its
//! own UPDATE and INSERT builders and `sql_query` on every call.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Bool, Interval, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::models::{NewTransaction, Transaction, TxError};
use crate::prepared::{FixedSql, Prepared, no_parameter};
use crate::schema::transactions::dsl;
use crate::state_machine::TxState;

pub type DbResult<T> = Result<T, diesel::result::Error>;

fn interval(d: Duration) -> PgInterval {
    PgInterval::from_microseconds(d.as_micros().min(i64::MAX as u128) as i64)
}

pub enum Inserted {
    /// A new row.
    Created(Transaction),
    /// The request's idempotency key was already used; this is the row it made.
    Existing(Transaction),
}

/// Inserts `new`, or, when its `request_key` was seen before, returns the row that key made.
/// The unique index decides races between two concurrent requests with one key.
pub async fn insert(conn: &mut AsyncPgConnection, new: &NewTransaction) -> DbResult<Inserted> {
    let created = Prepared(Insert(new)).get_result(conn).await.optional()?;
    if let Some(row) = created {
        return Ok(Inserted::Created(row));
    }
    let existing = dsl::transactions
        .filter(dsl::request_key.eq(&new.request_key))
        .select(Transaction::as_select())
        .first(conn)
        .await?;
    Ok(Inserted::Existing(existing))
}

struct Insert<'a>(&'a NewTransaction);

impl FixedSql for Insert<'_> {
    type Id = Insert<'static>;
    // Every other column takes its default.
    const SQL: &'static str = "INSERT INTO transactions
             (id, amount, currency, email, price, payment_method, stripe_idempotency_key,
              request_key, request_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (request_key) DO NOTHING
         RETURNING *";

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let t = self.0;
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&t.id),
            2 => out.push_bind_param::<BigInt, _>(&t.amount),
            3 => out.push_bind_param::<Text, _>(&t.currency),
            4 => out.push_bind_param::<Text, _>(&t.email),
            5 => out.push_bind_param::<Nullable<Text>, _>(&t.price),
            6 => out.push_bind_param::<Text, _>(&t.payment_method),
            7 => out.push_bind_param::<Text, _>(&t.stripe_idempotency_key),
            8 => out.push_bind_param::<Nullable<Text>, _>(&t.request_key),
            9 => out.push_bind_param::<Nullable<Text>, _>(&t.request_fingerprint),
            _ => Err(no_parameter(n)),
        }
    }
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<Option<Transaction>> {
    dsl::transactions
        .find(id)
        .select(Transaction::as_select())
        .first(conn)
        .await
        .optional()
}

/// Claims the transaction for one Stripe call: takes a lease (or an expired one over), counts
/// the attempt and moves `pending` to `processing` (`requires_action` stays: the call re-reads
/// the intent). `None` when the row is finished, leased by a live worker, or not due yet.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    lease: Duration,
) -> DbResult<Option<Transaction>> {
    Prepared(Claim {
        id,
        owner,
        lease: interval(lease),
    })
    .get_result(conn)
    .await
    .optional()
}

struct Claim<'a> {
    id: Uuid,
    owner: &'a str,
    lease: PgInterval,
}

impl FixedSql for Claim<'_> {
    type Id = Claim<'static>;
    const SQL: &'static str = "UPDATE transactions SET
             lease_owner = $2,
             lease_expires_at = now() + $3,
             attempts = attempts + 1,
             state = CASE WHEN state = 'pending' THEN 'processing' ELSE state END,
             updated_at = now()
         WHERE id = $1
           AND state IN ('pending', 'processing', 'requires_action')
           AND (lease_expires_at IS NULL OR lease_expires_at < now())
           -- one second of slack for clock skew between Redis' scheduler and Postgres
           AND next_attempt_at <= now() + interval '1 second'
         RETURNING *";

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Interval, _>(&self.lease),
            _ => Err(no_parameter(n)),
        }
    }
}

/// What a Stripe call decided about a payment.
#[derive(Clone, Debug)]
pub enum Outcome {
    Complete {
        stripe_id: String,
    },
    /// 3-D Secure pending; the row is checked against Stripe again after `recheck_in` (and at
    /// once when the browser reports the challenge done).
    RequiresAction {
        stripe_id: String,
        client_secret: String,
        recheck_in: Duration,
    },
    Failed {
        stripe_id: Option<String>,
        error: TxError,
    },
    /// No final answer yet: try again after `delay`, with the same idempotency key.
    Retry {
        stripe_id: Option<String>,
        reason: String,
        delay: Duration,
    },
}

/// One guarded UPDATE, described by name rather than by position.
struct Change<'a> {
    /// `None` keeps the state (a retry never moves `requires_action` back to `processing`).
    state: Option<&'static str>,
    from: &'a [&'a str],
    stripe_id: Option<&'a str>,
    client_secret: Option<&'a str>,
    /// The customer-facing error; all three are written (cleared) whatever the outcome.
    error_code: Option<&'a str>,
    error_decline_code: Option<&'a str>,
    error_message: Option<&'a str>,
    reason: Option<&'a str>,
    due_in_ms: Option<i64>,
    /// Only the lease holder may write this change.
    holder_only: bool,
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl Outcome {
    fn change(&self) -> Change<'_> {
        let base = Change {
            state: None,
            from: &[],
            stripe_id: None,
            client_secret: None,
            error_code: None,
            error_decline_code: None,
            error_message: None,
            reason: None,
            due_in_ms: None,
            holder_only: false,
        };
        match self {
            Outcome::Complete { stripe_id } => Change {
                state: Some(TxState::Complete.as_str()),
                from: TxState::Complete.predecessors(),
                stripe_id: Some(stripe_id),
                ..base
            },
            Outcome::RequiresAction {
                stripe_id,
                client_secret,
                recheck_in,
            } => Change {
                state: Some(TxState::RequiresAction.as_str()),
                // Re-reading an intent still waiting for the customer is a legal no-op move.
                from: &["pending", "processing", "requires_action"],
                stripe_id: Some(stripe_id),
                client_secret: Some(client_secret),
                due_in_ms: Some(millis(*recheck_in)),
                ..base
            },
            Outcome::Failed { stripe_id, error } => Change {
                state: Some(TxState::Failed.as_str()),
                from: TxState::Failed.predecessors(),
                stripe_id: stripe_id.as_deref(),
                error_code: Some(&error.code),
                error_decline_code: error.decline_code.as_deref(),
                error_message: Some(&error.message),
                ..base
            },
            Outcome::Retry {
                stripe_id,
                reason,
                delay,
            } => Change {
                state: None,
                from: &["processing", "requires_action"],
                stripe_id: stripe_id.as_deref(),
                reason: Some(reason),
                due_in_ms: Some(millis(*delay)),
                holder_only: true,
                ..base
            },
        }
    }
}

/// Writes `outcome` and releases the lease. Final outcomes are written whoever holds the lease
/// (Stripe's answer is the truth); a retry is written only by the lease holder, so a worker
/// whose lease was taken over cannot push the new holder's schedule around. Returns the row
/// when it changed.
pub async fn record(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    outcome: &Outcome,
) -> DbResult<Option<Transaction>> {
    Prepared(Record {
        id,
        owner,
        change: outcome.change(),
    })
    .get_result(conn)
    .await
    .optional()
}

struct Record<'a> {
    id: Uuid,
    owner: &'a str,
    change: Change<'a>,
}

impl FixedSql for Record<'_> {
    type Id = Record<'static>;
    const SQL: &'static str = "UPDATE transactions SET
             state = COALESCE($2, state),
             stripe_id = COALESCE($3, stripe_id),
             client_secret = COALESCE($4, client_secret),
             error_code = $5,
             error_decline_code = $6,
             error_message = $7,
             last_error = COALESCE($8, last_error),
             next_attempt_at = CASE WHEN $9::bigint IS NULL THEN next_attempt_at
                                    ELSE now() + $9::bigint * interval '1 millisecond' END,
             lease_owner = NULL,
             lease_expires_at = NULL,
             updated_at = now()
         WHERE id = $1
           AND state = ANY($10)
           AND (NOT $12 OR lease_owner = $11)
         RETURNING *";

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = &self.change;
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Nullable<Text>, _>(&c.state),
            3 => out.push_bind_param::<Nullable<Text>, _>(&c.stripe_id),
            4 => out.push_bind_param::<Nullable<Text>, _>(&c.client_secret),
            5 => out.push_bind_param::<Nullable<Text>, _>(&c.error_code),
            6 => out.push_bind_param::<Nullable<Text>, _>(&c.error_decline_code),
            7 => out.push_bind_param::<Nullable<Text>, _>(&c.error_message),
            8 => out.push_bind_param::<Nullable<Text>, _>(&c.reason),
            9 => out.push_bind_param::<Nullable<BigInt>, _>(&c.due_in_ms),
            10 => out.push_bind_param::<Array<Text>, _>(c.from),
            11 => out.push_bind_param::<Text, _>(self.owner),
            12 => out.push_bind_param::<Bool, _>(&c.holder_only),
            _ => Err(no_parameter(n)),
        }
    }
}

/// Asks for the transaction to be checked against Stripe now (the browser finished a 3-D
/// Secure challenge). Returns whether the row is one a worker will look at.
pub async fn recheck_now(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<bool> {
    let n = diesel::update(dsl::transactions.find(id))
        // Only a payment waiting for the customer: moving a `processing` payment's retry
        // forward would let a caller burn its attempts and backoff by calling in a loop.
        .filter(dsl::state.eq("requires_action"))
        .set(dsl::next_attempt_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Finds unfinished payments whose job looks lost (due for longer than `after`, no live lease)
/// and marks them due now, so that no sweeper takes them again for another `after` while the
/// job the caller enqueues for each id returned runs.
pub async fn sweep(
    conn: &mut AsyncPgConnection,
    after: Duration,
    limit: i64,
) -> DbResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "UPDATE transactions SET next_attempt_at = now()
         WHERE id IN (
             SELECT id FROM transactions
             WHERE state IN ('pending', 'processing', 'requires_action')
               AND next_attempt_at < now() - $1
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY next_attempt_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id",
    )
    .bind::<Interval, _>(interval(after))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Count of transactions per state, for readiness output, ops and tests.
pub async fn count_by_state(conn: &mut AsyncPgConnection) -> DbResult<Vec<(String, i64)>> {
    dsl::transactions
        .group_by(dsl::state)
        .select((dsl::state, diesel::dsl::count_star()))
        .load(conn)
        .await
}

/// The name Stripe's webhooks write under. No worker holds a lease by that name, so through
/// [`record`] a webhook can write final outcomes only: a retry belongs to the lease holder.
pub const WEBHOOK_OWNER: &str = "stripe-webhook";

/// Records what a Stripe webhook reported about the transaction's PaymentIntent: the second
/// path to the truth beside the worker. Final outcomes go through [`record`] exactly like the
/// worker's (forward only, whoever holds the lease: Stripe's word decides). `requires_action`
/// moves only a payment that has not reached it, and leaves any lease alone, so a worker in the
/// middle of a Stripe call keeps it. A retry says nothing here. Returns the row when it changed.
pub async fn record_from_stripe(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    outcome: &Outcome,
) -> DbResult<Option<Transaction>> {
    match outcome {
        Outcome::Complete { .. } | Outcome::Failed { .. } => {
            record(conn, id, WEBHOOK_OWNER, outcome).await
        }
        Outcome::RequiresAction {
            stripe_id,
            client_secret,
            ..
        } => diesel::sql_query(
            "UPDATE transactions SET
                     state = 'requires_action',
                     stripe_id = COALESCE(stripe_id, $2),
                     client_secret = $3,
                     updated_at = now()
                 WHERE id = $1 AND state IN ('pending', 'processing')
                 RETURNING *",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(stripe_id)
        .bind::<Text, _>(client_secret)
        .get_result(conn)
        .await
        .optional(),
        Outcome::Retry { .. } => Ok(None),
    }
}

pub async fn find_by_stripe_id(
    conn: &mut AsyncPgConnection,
    stripe_id: &str,
) -> DbResult<Option<Transaction>> {
    dsl::transactions
        .filter(dsl::stripe_id.eq(stripe_id))
        .select(Transaction::as_select())
        .first(conn)
        .await
        .optional()
}

/// What happened to a charged payment afterwards, as Stripe reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterCharge {
    Refunded,
    Disputed,
}

/// Notes a refund or a dispute on the transaction, for ops; the first report's time stays.
/// The payment's state does not change: it was charged. Returns whether the row changed.
pub async fn record_after_charge(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    what: AfterCharge,
) -> DbResult<bool> {
    let target = diesel::update(dsl::transactions.find(id));
    let n = match what {
        AfterCharge::Refunded => {
            target
                .filter(dsl::refunded_at.is_null())
                .set(dsl::refunded_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?
        }
        AfterCharge::Disputed => {
            target
                .filter(dsl::disputed_at.is_null())
                .set(dsl::disputed_at.eq(diesel::dsl::now))
                .execute(conn)
                .await?
        }
    };
    Ok(n == 1)
}

/// When Stripe reported a refund and a dispute of the transaction (`None`: unknown row).
pub async fn after_charge_marks(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> DbResult<Option<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)>> {
    dsl::transactions
        .find(id)
        .select((dsl::refunded_at, dsl::disputed_at))
        .first(conn)
        .await
        .optional()
}
