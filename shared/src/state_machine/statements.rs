//! The SQL of every state change, each a fixed-text statement (prepared once per connection,
//! `crate::prepared`) of one shape: lock the row and keep it as it was (`cur`), write it when the
//! guard allows (`upd`), and return the row now with the state it had before, applied or not.

use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Bool, Interval, Nullable, Text, Uuid as SqlUuid};
use uuid::Uuid;

use super::TxState;
use super::outcome::Update;
use super::sweep::unfinished_sql;
use crate::models::Transaction;
use crate::prepared::{FixedSql, no_parameter};

/// What every statement here returns: whether it applied, the state before, the row now.
#[derive(QueryableByName)]
pub(super) struct ChangeRow {
    #[diesel(sql_type = Bool)]
    pub applied: bool,
    #[diesel(sql_type = Text)]
    pub previous_state: TxState,
    #[diesel(embed)]
    pub row: Transaction,
}

/// The shape of every change: `cur` locks the row and keeps it as it was; `upd` writes it when
/// `$guard` (over `cur`) allows; a change of state writes its event (`ev`, with the payment as
/// the merchant sees it after the change, and who caused it: `$40`, bound by [`Caused`]) and one
/// webhook delivery per enabled endpoint (`dl`), in the same statement, so there is never a
/// change without its event or an event without its change. `$also` are further CTEs (a
/// correction's records); the result is the updated row, or else the row unchanged.
macro_rules! guarded {
    ($set:expr, $guard:expr) => {
        guarded!(@rows "id = $1", $set, $guard, "")
    };
    ($set:expr, $guard:expr, $also:expr) => {
        guarded!(@rows "id = $1", $set, $guard, $also)
    };
    // `$rows` picks the rows (`ClaimMany`: several at once). They are locked in id order, the
    // order every statement and every group commit (the worker's `batch`) locks in, so two
    // of them never wait for each other in a circle.
    (@rows $rows:expr, $set:expr, $guard:expr, $also:expr) => {
        concat!(
            "WITH cur AS (SELECT * FROM transactions WHERE ",
            $rows,
            " ORDER BY id FOR UPDATE),
                  upd AS (UPDATE transactions t SET ",
            $set,
            // The rows' own condition again on `t`: the planner then finds them by the primary
            // key, where joining `cur` alone (of unknown size) made it scan the whole table.
            " FROM cur WHERE t.",
            $rows,
            " AND t.id = cur.id AND ",
            $guard,
            " RETURNING t.*, cur.state AS event_previous,
                        CASE WHEN t.state IS DISTINCT FROM cur.state
                             THEN payment_snapshot(t) END AS event_snapshot), ",
            crate::events::event_ctes!("upd", "'payment.' || r.state", "$40"),
            $also,
            "
             SELECT true AS applied, cur.state AS previous_state, upd.* FROM upd
             JOIN cur ON cur.id = upd.id
             UNION ALL
             SELECT false, cur.state, cur.*, NULL::text, NULL::jsonb FROM cur
             WHERE NOT EXISTS (SELECT 1 FROM upd WHERE upd.id = cur.id)"
        )
    };
}

/// The placeholder every change statement's event takes its cause from.
pub(super) const CAUSE: usize = 40;

/// A change statement with the cause its event records ([`CAUSE`]).
pub(super) struct Caused<'a, S> {
    pub statement: S,
    pub cause: &'a str,
}

impl<S: FixedSql> FixedSql for Caused<'_, S> {
    type Id = S::Id;
    const SQL: &'static str = S::SQL;

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if n == CAUSE {
            out.push_bind_param::<Text, _>(self.cause)
        } else {
            self.statement.bind(n, out)
        }
    }
}

/// The lease's holder (`$2`): who may write a retry, a renewal, a cancel done. A lease that ran
/// out but that nobody took over is still the holder's: nobody else can have called Stripe.
macro_rules! holder {
    () => {
        "cur.lease_owner = $2"
    };
}

/// A worker's claim of one payment for an attempt ([`super::change::Transition::Claim`]).
/// A charge attempt is counted only when a create or confirm may be sent: not while the
/// outcome of a confirm is being resolved, a 3-D Secure re-check, or a cancel.
macro_rules! claim_set {
    () => {
        "lease_owner = $2,
         lease_expires_at = now() + $3,
         attempts = t.attempts + CASE
             WHEN t.state IN ('pending', 'processing') AND t.outcome_unknown_since IS NULL
             THEN 1 ELSE 0 END,
         lookups = t.lookups + CASE
             WHEN t.state IN ('pending', 'processing') AND t.outcome_unknown_since IS NULL
             THEN 0 ELSE 1 END,
         state = CASE WHEN t.state = 'pending' THEN 'processing' ELSE t.state END,
         updated_at = now()"
    };
}

/// Only an unfinished, due row with no live lease, or a failed one whose intent is still to
/// cancel.
macro_rules! claim_guard {
    () => {
        concat!(
            "(cur.",
            unfinished_sql!(),
            " OR (cur.state = 'failed' AND cur.cancel_requested_at IS NOT NULL
                  AND cur.canceled_at IS NULL))
              AND (cur.lease_expires_at IS NULL OR cur.lease_expires_at < now())
              -- one second of slack for clock skew between Redis' scheduler and Postgres
              AND cur.next_attempt_at <= now() + interval '1 second'"
        )
    };
}

/// The claim of every payment in `ids` for one owner, in one statement and one commit: the
/// worker claims the jobs it was handed together (`worker/src/batch.rs`). Each row is claimed,
/// or not, exactly as if alone; a payment that does not exist returns no row.
pub(super) struct ClaimMany<'a> {
    pub ids: &'a [Uuid],
    pub owner: &'a str,
    pub lease: PgInterval,
}

impl FixedSql for ClaimMany<'_> {
    type Id = ClaimMany<'static>;
    const SQL: &'static str = guarded!(@rows "id = ANY($1)", claim_set!(), claim_guard!(), "");

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Array<SqlUuid>, _>(self.ids),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Interval, _>(&self.lease),
            _ => Err(no_parameter(n)),
        }
    }
}

pub(super) struct Record<'a> {
    pub id: Uuid,
    pub owner: &'a str,
    pub update: Update<'a>,
}

impl FixedSql for Record<'_> {
    type Id = Record<'static>;
    const SQL: &'static str = guarded!(
        "state = COALESCE($3, t.state),
         stripe_id = COALESCE($4, t.stripe_id),
         client_secret = COALESCE($5, t.client_secret),
         -- a retry (state kept) keeps the customer-facing error of a failed payment it cancels
         error_code = CASE WHEN $3 IS NULL THEN t.error_code ELSE $6 END,
         error_decline_code = CASE WHEN $3 IS NULL THEN t.error_decline_code ELSE $7 END,
         error_message = CASE WHEN $3 IS NULL THEN t.error_message ELSE $8 END,
         last_error = COALESCE($9, t.last_error),
         next_attempt_at = CASE WHEN $10::bigint IS NULL THEN t.next_attempt_at
                                ELSE now() + $10::bigint * interval '1 millisecond' END,
         outcome_unknown_since = CASE WHEN $13 THEN COALESCE(t.outcome_unknown_since, now())
                                      ELSE NULL END,
         requires_action_since = CASE WHEN $3 = 'requires_action'
                                      THEN COALESCE(t.requires_action_since, now())
                                      ELSE t.requires_action_since END,
         cancel_requested_at = CASE WHEN $14 THEN COALESCE(t.cancel_requested_at, now())
                                    ELSE t.cancel_requested_at END,
         canceled_at = CASE WHEN $15 THEN COALESCE(t.canceled_at, now()) ELSE t.canceled_at END,
         -- only a charge attempt the claim counted is given back
         attempts = CASE WHEN $16 AND t.state = 'processing' AND t.outcome_unknown_since IS NULL
                         THEN GREATEST(t.attempts - 1, 0) ELSE t.attempts END,
         lease_owner = NULL,
         lease_expires_at = NULL,
         updated_at = now()",
        concat!("cur.state = ANY($11) AND (NOT $12 OR (", holder!(), "))")
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let u = &self.update;
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Nullable<Text>, _>(&u.state),
            4 => out.push_bind_param::<Nullable<Text>, _>(&u.stripe_id),
            5 => out.push_bind_param::<Nullable<Text>, _>(&u.client_secret),
            6 => out.push_bind_param::<Nullable<Text>, _>(&u.error_code),
            7 => out.push_bind_param::<Nullable<Text>, _>(&u.error_decline_code),
            8 => out.push_bind_param::<Nullable<Text>, _>(&u.error_message),
            9 => out.push_bind_param::<Nullable<Text>, _>(&u.reason),
            10 => out.push_bind_param::<Nullable<BigInt>, _>(&u.due_in_ms),
            11 => out.push_bind_param::<Array<Text>, _>(u.from),
            12 => out.push_bind_param::<Bool, _>(&u.holder_only),
            13 => out.push_bind_param::<Bool, _>(&u.outcome_unknown),
            14 => out.push_bind_param::<Bool, _>(&u.cancel_intent),
            15 => out.push_bind_param::<Bool, _>(&u.canceled),
            16 => out.push_bind_param::<Bool, _>(&u.give_back_attempt),
            _ => Err(no_parameter(n)),
        }
    }
}

/// Stripe says the intent wants 3-D Secure: only a payment that has not reached it moves, and
/// a worker in the middle of a Stripe call keeps its lease.
pub(super) struct StripeAction<'a> {
    pub id: Uuid,
    pub stripe_id: &'a str,
    pub client_secret: &'a str,
}

impl FixedSql for StripeAction<'_> {
    type Id = StripeAction<'static>;
    const SQL: &'static str = guarded!(
        "state = 'requires_action',
         stripe_id = COALESCE(t.stripe_id, $2),
         client_secret = $3,
         requires_action_since = COALESCE(t.requires_action_since, now()),
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
pub(super) struct DueNow {
    pub id: Uuid,
    pub from: &'static [TxState],
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

/// `failed` → `complete`: Stripe charged a payment we recorded failed. Recorded as a
/// correction, and as a likely duplicate when the same customer had paid again for the same
/// thing within a day (a real double charge, for the merchant to refund).
pub(super) struct Correct<'a> {
    pub id: Uuid,
    pub stripe_id: &'a str,
    pub source: &'static str,
}

impl FixedSql for Correct<'_> {
    type Id = Correct<'static>;
    const SQL: &'static str = guarded!(
        "state = 'complete',
         stripe_id = COALESCE(t.stripe_id, $2),
         error_code = NULL,
         error_decline_code = NULL,
         error_message = NULL,
         outcome_unknown_since = NULL,
         lease_owner = NULL,
         lease_expires_at = NULL,
         updated_at = now()",
        "cur.state = 'failed'",
        ",
         corrected AS (
             INSERT INTO discrepancies (kind, transaction_id, stripe_id, detail, source)
             SELECT 'corrected_to_complete', upd.id, upd.stripe_id,
                    'recorded failed; Stripe reports its intent succeeded: corrected to complete',
                    $3
             FROM upd
             ON CONFLICT DO NOTHING),
         duplicate AS (
             INSERT INTO discrepancies
                 (kind, transaction_id, stripe_id, related_transaction_id, detail, source)
             SELECT 'likely_duplicate', upd.id, upd.stripe_id, o.id,
                    'charged after being recorded failed; the same customer paid again for the \
                     same thing: refund one',
                    $3
             FROM upd JOIN transactions o
               ON o.email = upd.email AND o.id <> upd.id AND o.state = 'complete'
              AND o.amount = upd.amount AND o.currency = upd.currency
              AND o.price IS NOT DISTINCT FROM upd.price
              AND o.created_at BETWEEN upd.created_at - interval '1 day'
                                   AND upd.created_at + interval '1 day'
             ON CONFLICT DO NOTHING)"
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.stripe_id),
            3 => out.push_bind_param::<Text, _>(self.source),
            _ => Err(no_parameter(n)),
        }
    }
}

/// Extends the holder's lease, so no Stripe call outlives it.
pub(super) struct Renew<'a> {
    pub id: Uuid,
    pub owner: &'a str,
    pub lease: PgInterval,
}

impl FixedSql for Renew<'_> {
    type Id = Renew<'static>;
    const SQL: &'static str = guarded!("lease_expires_at = now() + $3", holder!());

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Interval, _>(&self.lease),
            _ => Err(no_parameter(n)),
        }
    }
}

/// The holder stores the id of the intent it created, before confirming it: every later
/// doubt about the payment is then a retrieve by id. An id already stored stays (a second
/// create under an expired key made an intent nobody will confirm).
pub(super) struct IntentCreated<'a> {
    pub id: Uuid,
    pub owner: &'a str,
    pub stripe_id: &'a str,
    pub client_secret: Option<&'a str>,
}

impl FixedSql for IntentCreated<'_> {
    type Id = IntentCreated<'static>;
    const SQL: &'static str = guarded!(
        "stripe_id = COALESCE(t.stripe_id, $3),
         client_secret = COALESCE(t.client_secret, $4),
         updated_at = now()",
        concat!("cur.", unfinished_sql!(), " AND ", holder!())
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Text, _>(self.stripe_id),
            4 => out.push_bind_param::<Nullable<Text>, _>(&self.client_secret),
            _ => Err(no_parameter(n)),
        }
    }
}

/// The holder canceled the failed payment's intent (or found it canceled already).
pub(super) struct Canceled<'a> {
    pub id: Uuid,
    pub owner: &'a str,
}

impl FixedSql for Canceled<'_> {
    type Id = Canceled<'static>;
    const SQL: &'static str = guarded!(
        "canceled_at = now(), lease_owner = NULL, lease_expires_at = NULL, updated_at = now()",
        concat!("cur.state = 'failed' AND ", holder!())
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<SqlUuid, _>(&self.id),
            2 => out.push_bind_param::<Text, _>(self.owner),
            _ => Err(no_parameter(n)),
        }
    }
}
