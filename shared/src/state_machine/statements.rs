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
        guarded!(@full "", "id = $1", "cur", $set, $guard, "")
    };
    ($set:expr, $guard:expr, $also:expr) => {
        guarded!(@full "", "id = $1", "cur", $set, $guard, $also)
    };
    // `$rows` picks the rows (`ClaimMany`: several at once). They are locked in id order, the
    // order every statement and every group commit (the worker's `batch`) locks in, so two
    // of them never wait for each other in a circle.
    (@rows $rows:expr, $set:expr, $guard:expr, $also:expr) => {
        guarded!(@full "", $rows, "cur", $set, $guard, $also)
    };
    // One change per row of `i`, a CTE of one row per payment (`id` and what to write: `$set`
    // and `$guard` read it as `i.`), for the rows `id = ANY($1)`: many payments, each with its
    // own values, in one statement.
    (@each $input:expr, $set:expr, $guard:expr) => {
        guarded!(@full concat!("i AS (", $input, "), "), "id = ANY($1)",
                 "cur JOIN i ON i.id = cur.id", $set, $guard, "")
    };
    (@full $with:expr, $rows:expr, $from:expr, $set:expr, $guard:expr, $also:expr) => {
        concat!(
            "WITH ",
            $with,
            "cur AS (SELECT * FROM transactions WHERE ",
            $rows,
            " ORDER BY id FOR UPDATE),
                  upd AS (UPDATE transactions t SET ",
            $set,
            // The rows' own condition again on `t`: the planner then finds them by the primary
            // key, where joining `cur` alone (of unknown size) made it scan the whole table.
            " FROM ",
            $from,
            " WHERE t.",
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

/// A statement over the rows `id = ANY($1)`: those ids.
pub(super) trait ManyRows {
    fn ids(&self) -> &[Uuid];
}

impl ManyRows for ClaimMany<'_> {
    fn ids(&self) -> &[Uuid] {
        self.ids
    }
}

impl ManyRows for RecordMany<'_> {
    fn ids(&self) -> &[Uuid] {
        &self.ids
    }
}

impl ManyRows for IntentsCreated<'_> {
    fn ids(&self) -> &[Uuid] {
        &self.ids
    }
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

/// What Stripe decided, written for every payment in `ids` (each its own [`Update`]), in one
/// statement: the worker records the outcomes of a round of charges together
/// (`worker/src/batch.rs`); a webhook or the reconciler records one. An update that is
/// `holder_only` applies only while `owner` holds the lease (a worker's record; Stripe's word
/// from outside an attempt writes whoever holds it).
pub(super) struct RecordMany<'a> {
    ids: Vec<Uuid>,
    owner: &'a str,
    state: Vec<Option<TxState>>,
    stripe_id: Vec<Option<&'a str>>,
    client_secret: Vec<Option<&'a str>>,
    error_code: Vec<Option<&'a str>>,
    error_decline_code: Vec<Option<&'a str>>,
    error_message: Vec<Option<&'a str>>,
    reason: Vec<Option<&'a str>>,
    due_in_ms: Vec<Option<i64>>,
    /// The states each row may be in, comma-joined (Postgres has no arrays of arrays of
    /// differing lengths).
    from: Vec<String>,
    outcome_unknown: Vec<bool>,
    cancel_intent: Vec<bool>,
    canceled: Vec<bool>,
    give_back_attempt: Vec<bool>,
    holder_only: Vec<bool>,
}

impl<'a> RecordMany<'a> {
    /// `updates` must not name a payment twice (two updates of one row in one statement).
    pub fn new(owner: &'a str, updates: &[(Uuid, Update<'a>)]) -> Self {
        let col = |f: &dyn Fn(&Update<'a>) -> Option<&'a str>| -> Vec<Option<&'a str>> {
            updates.iter().map(|(_, u)| f(u)).collect()
        };
        let flag = |f: &dyn Fn(&Update<'a>) -> bool| -> Vec<bool> {
            updates.iter().map(|(_, u)| f(u)).collect()
        };
        Self {
            ids: updates.iter().map(|(id, _)| *id).collect(),
            owner,
            state: updates.iter().map(|(_, u)| u.state).collect(),
            stripe_id: col(&|u| u.stripe_id),
            client_secret: col(&|u| u.client_secret),
            error_code: col(&|u| u.error_code),
            error_decline_code: col(&|u| u.error_decline_code),
            error_message: col(&|u| u.error_message),
            reason: col(&|u| u.reason),
            due_in_ms: updates.iter().map(|(_, u)| u.due_in_ms).collect(),
            from: updates
                .iter()
                .map(|(_, u)| {
                    let states: Vec<&str> = u.from.iter().map(|s| s.as_str()).collect();
                    states.join(",")
                })
                .collect(),
            outcome_unknown: flag(&|u| u.outcome_unknown),
            cancel_intent: flag(&|u| u.cancel_intent),
            canceled: flag(&|u| u.canceled),
            give_back_attempt: flag(&|u| u.give_back_attempt),
            holder_only: flag(&|u| u.holder_only),
        }
    }
}

impl FixedSql for RecordMany<'_> {
    type Id = RecordMany<'static>;
    const SQL: &'static str = guarded!(
        @each
        "SELECT * FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::bigint[], $11::text[],
                              $12::bool[], $13::bool[], $14::bool[], $15::bool[], $16::bool[])
             AS i(id, state, stripe_id, client_secret, error_code, error_decline_code,
                  error_message, reason, due_in_ms, from_states, outcome_unknown,
                  cancel_intent, canceled, give_back_attempt, holder_only)",
        "state = COALESCE(i.state, t.state),
         stripe_id = COALESCE(i.stripe_id, t.stripe_id),
         client_secret = COALESCE(i.client_secret, t.client_secret),
         -- a retry (state kept) keeps the customer-facing error of a failed payment it cancels
         error_code = CASE WHEN i.state IS NULL THEN t.error_code ELSE i.error_code END,
         error_decline_code = CASE WHEN i.state IS NULL THEN t.error_decline_code
                                   ELSE i.error_decline_code END,
         error_message = CASE WHEN i.state IS NULL THEN t.error_message ELSE i.error_message END,
         last_error = COALESCE(i.reason, t.last_error),
         next_attempt_at = CASE WHEN i.due_in_ms IS NULL THEN t.next_attempt_at
                                ELSE now() + i.due_in_ms * interval '1 millisecond' END,
         outcome_unknown_since = CASE WHEN i.outcome_unknown
                                      THEN COALESCE(t.outcome_unknown_since, now())
                                      ELSE NULL END,
         requires_action_since = CASE WHEN i.state = 'requires_action'
                                      THEN COALESCE(t.requires_action_since, now())
                                      ELSE t.requires_action_since END,
         cancel_requested_at = CASE WHEN i.cancel_intent
                                    THEN COALESCE(t.cancel_requested_at, now())
                                    ELSE t.cancel_requested_at END,
         canceled_at = CASE WHEN i.canceled THEN COALESCE(t.canceled_at, now())
                            ELSE t.canceled_at END,
         -- only a charge attempt the claim counted is given back
         attempts = CASE WHEN i.give_back_attempt AND t.state = 'processing'
                              AND t.outcome_unknown_since IS NULL
                         THEN GREATEST(t.attempts - 1, 0) ELSE t.attempts END,
         lease_owner = NULL,
         lease_expires_at = NULL,
         updated_at = now()",
        concat!(
            "cur.state = ANY(string_to_array(i.from_states, ',')) AND (NOT i.holder_only OR (",
            holder!(),
            "))"
        )
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Array<SqlUuid>, _>(&self.ids),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.state),
            4 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.stripe_id),
            5 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.client_secret),
            6 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.error_code),
            7 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.error_decline_code),
            8 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.error_message),
            9 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.reason),
            10 => out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.due_in_ms),
            11 => out.push_bind_param::<Array<Text>, _>(&self.from),
            12 => out.push_bind_param::<Array<Bool>, _>(&self.outcome_unknown),
            13 => out.push_bind_param::<Array<Bool>, _>(&self.cancel_intent),
            14 => out.push_bind_param::<Array<Bool>, _>(&self.canceled),
            15 => out.push_bind_param::<Array<Bool>, _>(&self.give_back_attempt),
            16 => out.push_bind_param::<Array<Bool>, _>(&self.holder_only),
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

/// The holder stores the id of the intent it created, before confirming it, for every payment
/// in `ids` (the worker stores a round's together): every later doubt about the payment is
/// then a retrieve by id. An id already stored stays (a second create under an expired key
/// made an intent nobody will confirm).
pub(super) struct IntentsCreated<'a> {
    ids: Vec<Uuid>,
    owner: &'a str,
    stripe_id: Vec<&'a str>,
    client_secret: Vec<Option<&'a str>>,
}

impl<'a> IntentsCreated<'a> {
    /// `intents` (payment, intent id, client secret) must not name a payment twice.
    pub fn new(owner: &'a str, intents: &[(Uuid, &'a str, Option<&'a str>)]) -> Self {
        Self {
            ids: intents.iter().map(|i| i.0).collect(),
            owner,
            stripe_id: intents.iter().map(|i| i.1).collect(),
            client_secret: intents.iter().map(|i| i.2).collect(),
        }
    }
}

impl FixedSql for IntentsCreated<'_> {
    type Id = IntentsCreated<'static>;
    const SQL: &'static str = guarded!(
        @each
        "SELECT * FROM unnest($1::uuid[], $3::text[], $4::text[])
             AS i(id, stripe_id, client_secret)",
        "stripe_id = COALESCE(t.stripe_id, i.stripe_id),
         client_secret = COALESCE(t.client_secret, i.client_secret),
         updated_at = now()",
        concat!("cur.", unfinished_sql!(), " AND ", holder!())
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Array<SqlUuid>, _>(&self.ids),
            2 => out.push_bind_param::<Text, _>(self.owner),
            3 => out.push_bind_param::<Array<Text>, _>(&self.stripe_id),
            4 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.client_secret),
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
