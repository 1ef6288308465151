//! The one way a payment's state changes: [`change`], for every [`Transition`] (a worker's
//! claim and its verdict, Stripe's webhook, the 3-D Secure re-check, an operator's retry).
//!
//! Each transition is one statement of fixed text (prepared once per connection, see
//! `crate::prepared`) of the same shape: lock the row, update it if the guard allows, and return
//! the row as it is now with the state it had before, whether or not the guard allowed it. So
//! every caller learns the previous and the new state, and why nothing changed, in one round
//! trip; the event log and the corrections hook in here.

use std::time::Duration;

use chrono::Utc;
use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Bool, Interval, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::TxState;
use super::outcome::{Outcome, Update};
use super::sweep::unfinished_sql;
use crate::db::{DbResult, interval};
use crate::models::Transaction;
use crate::prepared::{FixedSql, Prepared, no_parameter};

/// The name Stripe's webhooks write under. No worker holds a lease by that name, so a webhook
/// can write final outcomes only: a retry belongs to the lease holder.
pub const WEBHOOK_OWNER: &str = "stripe-webhook";

/// A change someone asks of a payment.
#[derive(Clone, Copy, Debug)]
pub enum Transition<'a> {
    /// A worker takes the payment for one Stripe call: a lease (or an expired one over), one
    /// attempt counted, `pending` → `processing` (`requires_action` stays: the call re-reads the
    /// intent). Only an unfinished, due row with no live lease.
    Claim { owner: &'a str, lease: Duration },
    /// A worker writes what Stripe decided and releases the lease. Final outcomes are written
    /// whoever holds the lease (Stripe's answer is the truth); a retry only by the holder, so a
    /// worker whose lease was taken over cannot push the new holder's schedule around.
    Record {
        owner: &'a str,
        outcome: &'a Outcome,
    },
    /// Stripe's webhook reports the intent's state: final outcomes as a worker's (forward only,
    /// whoever holds the lease); `requires_action` moves only a payment that has not reached it
    /// and leaves any lease alone. A retry says nothing here.
    FromStripe(&'a Outcome),
    /// The browser finished a 3-D Secure challenge: a `requires_action` payment is due now.
    /// Only that state: moving a `processing` payment's retry forward would let a caller burn
    /// its attempts and backoff by calling in a loop.
    RecheckNow,
    /// An operator's retry: any unfinished payment is due now.
    DueNow,
}

/// What [`change`] found and did.
#[derive(Clone, Debug)]
pub struct Change {
    /// Whether the guard allowed the change (the row was written).
    pub applied: bool,
    /// The state before.
    pub previous: TxState,
    /// The row as it is now: changed if `applied`, else as it was.
    pub row: Transaction,
}

impl Change {
    /// The row, if the change applied.
    pub fn applied_row(self) -> Option<Transaction> {
        self.applied.then_some(self.row)
    }
}

/// Applies `transition` to transaction `id`. `None`: no such transaction (or a transition that
/// asks nothing, a retry reported by Stripe).
pub async fn change(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    transition: Transition<'_>,
) -> DbResult<Option<Change>> {
    let row: Option<ChangeRow> = match transition {
        Transition::Claim { owner, lease } => {
            let lease = interval(lease);
            let s = Claim { id, owner, lease };
            Prepared(s).get_result(conn).await.optional()?
        }
        Transition::Record { owner, outcome } => record_statement(conn, id, owner, outcome).await?,
        Transition::FromStripe(outcome) => match outcome {
            Outcome::Complete { .. } | Outcome::Failed { .. } => {
                record_statement(conn, id, WEBHOOK_OWNER, outcome).await?
            }
            Outcome::RequiresAction {
                stripe_id,
                client_secret,
                ..
            } => {
                let s = StripeAction {
                    id,
                    stripe_id,
                    client_secret,
                };
                Prepared(s).get_result(conn).await.optional()?
            }
            Outcome::Retry { .. } => None,
        },
        Transition::RecheckNow => due_now(conn, id, &[TxState::RequiresAction]).await?,
        Transition::DueNow => due_now(conn, id, &TxState::UNFINISHED).await?,
    };
    Ok(row.map(|r| Change {
        applied: r.applied,
        previous: r.previous_state,
        row: r.row,
    }))
}

/// Why a claim took nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotClaimed {
    /// No such transaction.
    Missing,
    /// The payment is `complete` or `failed`.
    Finished(TxState),
    /// Another delivery holds a live lease, until then.
    Leased {
        owner: Option<String>,
        until: chrono::DateTime<Utc>,
    },
    /// Its next attempt is later (a retry's backoff, a 3-D Secure re-check).
    NotDue(chrono::DateTime<Utc>),
}

/// [`Transition::Claim`], with the reason when nothing was claimed, read off the row the
/// statement returned (no second query).
pub async fn claim(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    lease: Duration,
) -> DbResult<Result<Transaction, NotClaimed>> {
    let Some(c) = change(conn, id, Transition::Claim { owner, lease }).await? else {
        return Ok(Err(NotClaimed::Missing));
    };
    if c.applied {
        return Ok(Ok(c.row));
    }
    let t = c.row;
    let now = Utc::now();
    Ok(Err(if t.state.is_final() {
        NotClaimed::Finished(t.state)
    } else if let Some(until) = t.lease_expires_at.filter(|u| *u >= now) {
        NotClaimed::Leased {
            owner: t.lease_owner,
            until,
        }
    } else {
        NotClaimed::NotDue(t.next_attempt_at)
    }))
}

/// [`Transition::Record`] through [`change`]: the row when it changed.
pub async fn record(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    outcome: &Outcome,
) -> DbResult<Option<Transaction>> {
    let changed = change(conn, id, Transition::Record { owner, outcome }).await?;
    Ok(changed.and_then(Change::applied_row))
}

async fn record_statement(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    outcome: &Outcome,
) -> DbResult<Option<ChangeRow>> {
    let s = Record {
        id,
        owner,
        update: outcome.update(),
    };
    Prepared(s).get_result(conn).await.optional()
}

async fn due_now(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    from: &'static [TxState],
) -> DbResult<Option<ChangeRow>> {
    Prepared(DueNow { id, from })
        .get_result(conn)
        .await
        .optional()
}

/// What every statement here returns: whether it applied, the state before, the row now.
#[derive(QueryableByName)]
struct ChangeRow {
    #[diesel(sql_type = Bool)]
    applied: bool,
    #[diesel(sql_type = Text)]
    previous_state: TxState,
    #[diesel(embed)]
    row: Transaction,
}

/// The shape of every change: `cur` locks the row and keeps it as it was; `upd` writes it when
/// `$guard` (over `cur`) allows; the result is the updated row, or else the row unchanged.
macro_rules! guarded {
    ($set:expr, $guard:expr) => {
        concat!(
            "WITH cur AS (SELECT * FROM transactions WHERE id = $1 FOR UPDATE),
                  upd AS (UPDATE transactions t SET ",
            $set,
            " FROM cur WHERE t.id = cur.id AND ",
            $guard,
            " RETURNING t.*)
             SELECT true AS applied, cur.state AS previous_state, upd.* FROM upd, cur
             UNION ALL
             SELECT false, cur.state, cur.* FROM cur WHERE NOT EXISTS (SELECT 1 FROM upd)"
        )
    };
}

struct Claim<'a> {
    id: Uuid,
    owner: &'a str,
    lease: PgInterval,
}

impl FixedSql for Claim<'_> {
    type Id = Claim<'static>;
    const SQL: &'static str = guarded!(
        "lease_owner = $2,
         lease_expires_at = now() + $3,
         attempts = t.attempts + 1,
         state = CASE WHEN t.state = 'pending' THEN 'processing' ELSE t.state END,
         updated_at = now()",
        concat!(
            "cur.",
            unfinished_sql!(),
            " AND (cur.lease_expires_at IS NULL OR cur.lease_expires_at < now())
              -- one second of slack for clock skew between Redis' scheduler and Postgres
              AND cur.next_attempt_at <= now() + interval '1 second'"
        )
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Interval, _>(&self.lease),
            _ => Err(no_parameter(n)),
        }
    }
}

struct Record<'a> {
    id: Uuid,
    owner: &'a str,
    update: Update<'a>,
}

impl FixedSql for Record<'_> {
    type Id = Record<'static>;
    const SQL: &'static str = guarded!(
        "state = COALESCE($2, t.state),
         stripe_id = COALESCE($3, t.stripe_id),
         client_secret = COALESCE($4, t.client_secret),
         error_code = $5,
         error_decline_code = $6,
         error_message = $7,
         last_error = COALESCE($8, t.last_error),
         next_attempt_at = CASE WHEN $9::bigint IS NULL THEN t.next_attempt_at
                                ELSE now() + $9::bigint * interval '1 millisecond' END,
         lease_owner = NULL,
         lease_expires_at = NULL,
         updated_at = now()",
        "cur.state = ANY($10) AND (NOT $12 OR cur.lease_owner = $11)"
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let u = &self.update;
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Nullable<Text>, _>(&u.state),
            3 => out.push_bind_param::<Nullable<Text>, _>(&u.stripe_id),
            4 => out.push_bind_param::<Nullable<Text>, _>(&u.client_secret),
            5 => out.push_bind_param::<Nullable<Text>, _>(&u.error_code),
            6 => out.push_bind_param::<Nullable<Text>, _>(&u.error_decline_code),
            7 => out.push_bind_param::<Nullable<Text>, _>(&u.error_message),
            8 => out.push_bind_param::<Nullable<Text>, _>(&u.reason),
            9 => out.push_bind_param::<Nullable<BigInt>, _>(&u.due_in_ms),
            10 => out.push_bind_param::<Array<Text>, _>(u.from),
            11 => out.push_bind_param::<Text, _>(self.owner),
            12 => out.push_bind_param::<Bool, _>(&u.holder_only),
            _ => Err(no_parameter(n)),
        }
    }
}

/// Stripe says the intent wants 3-D Secure: only a payment that has not reached it moves, and
/// a worker in the middle of a Stripe call keeps its lease.
struct StripeAction<'a> {
    id: Uuid,
    stripe_id: &'a str,
    client_secret: &'a str,
}

impl FixedSql for StripeAction<'_> {
    type Id = StripeAction<'static>;
    const SQL: &'static str = guarded!(
        "state = 'requires_action',
         stripe_id = COALESCE(t.stripe_id, $2),
         client_secret = $3,
         updated_at = now()",
        "cur.state = ANY($4)"
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.stripe_id),
            3 => out.push_bind_param::<Text, _>(self.client_secret),
            4 => out.push_bind_param::<Array<Text>, _>(TxState::RequiresAction.predecessors()),
            _ => Err(no_parameter(n)),
        }
    }
}

/// Makes the payment due now, if it is in one of `from`.
struct DueNow {
    id: Uuid,
    from: &'static [TxState],
}

impl FixedSql for DueNow {
    type Id = DueNow;
    const SQL: &'static str = guarded!("next_attempt_at = now()", "cur.state = ANY($2)");

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Array<Text>, _>(self.from),
            _ => Err(no_parameter(n)),
        }
    }
}
