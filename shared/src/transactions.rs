//! The queries on `transactions` that change no state: the insert, the reads, and the marks
//! Stripe leaves after a charge (refund, dispute). Every state change goes through
//! [`crate::state_machine::change`]. Each query takes `&mut AsyncPgConnection`, so callers pass a
//! pooled connection or an open transaction.
//!
//! The statements every payment makes (`insert` here; the claim and the record) are fixed SQL
//! text through [`Prepared`], which each connection parses and plans once: diesel re-parses its
//! own UPDATE and INSERT builders and `sql_query` on every call.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::sql_types::{Array, BigInt, Interval, Jsonb, Nullable, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

pub use crate::db::DbResult;
use crate::models::{NewTransaction, Transaction};
use crate::prepared::{FixedSql, Prepared, no_parameter};
use crate::schema::transactions::dsl;
use crate::state_machine::TxState;

pub enum Inserted {
    /// A new row.
    Created(Transaction),
    /// The request's idempotency key was already used; this is the row it made.
    Existing(Transaction),
}

/// Inserts `new`, or, when its `request_key` was seen before, returns the row that key made.
/// The unique index decides races between two concurrent requests with one key.
pub async fn insert(conn: &mut AsyncPgConnection, new: &NewTransaction) -> DbResult<Inserted> {
    let mut inserted = insert_many(conn, std::slice::from_ref(new)).await?;
    inserted.pop().ok_or(diesel::result::Error::NotFound)
}

/// [`insert`] of every payment in `news`, in one statement and one commit (the api's group
/// insert, `api/src/inserts.rs`): each is inserted, or found by its `request_key`, exactly as
/// alone; the answers come back in the order given. Two with one key: the first is inserted,
/// the second finds it.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    news: &[NewTransaction],
) -> DbResult<Vec<Inserted>> {
    let created: Vec<Transaction> = Prepared(InsertMany::new(news)).load(conn).await?;
    let mut created: HashMap<Uuid, Transaction> = created.into_iter().map(|t| (t.id, t)).collect();
    let wanted: Vec<&str> = news
        .iter()
        .filter(|n| !created.contains_key(&n.id))
        .filter_map(|n| n.request_key.as_deref())
        .collect();
    let existing: HashMap<String, Transaction> = if wanted.is_empty() {
        HashMap::new()
    } else {
        dsl::transactions
            .filter(dsl::request_key.eq_any(&wanted))
            .select(Transaction::as_select())
            .load(conn)
            .await?
            .into_iter()
            .filter_map(|t| Some((t.request_key.clone()?, t)))
            .collect()
    };
    news.iter()
        .map(|n| match created.remove(&n.id) {
            Some(row) => Ok(Inserted::Created(row)),
            None => n
                .request_key
                .as_ref()
                .and_then(|k| existing.get(k).cloned())
                .map(Inserted::Existing)
                .ok_or(diesel::result::Error::NotFound),
        })
        .collect()
}

/// The columns of the payments to insert, one array each.
struct InsertMany<'a> {
    id: Vec<Uuid>,
    amount: Vec<i64>,
    currency: Vec<&'a str>,
    email: Vec<&'a str>,
    price: Vec<Option<&'a str>>,
    payment_method: Vec<&'a str>,
    stripe_idempotency_key: Vec<&'a str>,
    request_key: Vec<Option<&'a str>>,
    request_fingerprint: Vec<Option<&'a str>>,
    reference: Vec<Option<&'a str>>,
    metadata: Vec<&'a serde_json::Value>,
    session_id: Vec<Option<Uuid>>,
}

impl<'a> InsertMany<'a> {
    fn new(news: &'a [NewTransaction]) -> Self {
        let col = |f: fn(&'a NewTransaction) -> &'a str| news.iter().map(f).collect();
        let opt = |f: fn(&'a NewTransaction) -> Option<&'a str>| news.iter().map(f).collect();
        Self {
            id: news.iter().map(|n| n.id).collect(),
            amount: news.iter().map(|n| n.amount).collect(),
            currency: col(|n| &n.currency),
            email: col(|n| &n.email),
            price: opt(|n| n.price.as_deref()),
            payment_method: col(|n| &n.payment_method),
            stripe_idempotency_key: col(|n| &n.stripe_idempotency_key),
            request_key: opt(|n| n.request_key.as_deref()),
            request_fingerprint: opt(|n| n.request_fingerprint.as_deref()),
            reference: opt(|n| n.reference.as_deref()),
            metadata: news.iter().map(|n| &n.metadata).collect(),
            session_id: news.iter().map(|n| n.session_id).collect(),
        }
    }
}

impl FixedSql for InsertMany<'_> {
    type Id = InsertMany<'static>;
    // Every other column takes its default. A new payment writes its `payment.pending` event in
    // the same statement; a repeated key writes nothing.
    const SQL: &'static str = concat!(
        "WITH ins AS (INSERT INTO transactions
             (id, amount, currency, email, price, payment_method, stripe_idempotency_key,
              request_key, request_fingerprint, reference, metadata, session_id)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                              $11::jsonb[], $12::uuid[])
         ON CONFLICT (request_key) DO NOTHING
         RETURNING *, NULL::text AS event_previous,
                   payment_snapshot(transactions) AS event_snapshot), ",
        crate::events::event_ctes!("ins", "'payment.' || r.state", "'api'"),
        " SELECT * FROM ins"
    );

    fn bind<'b>(&'b self, n: usize, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        match n {
            1 => out.push_bind_param::<Array<SqlUuid>, _>(&self.id),
            2 => out.push_bind_param::<Array<BigInt>, _>(&self.amount),
            3 => out.push_bind_param::<Array<Text>, _>(&self.currency),
            4 => out.push_bind_param::<Array<Text>, _>(&self.email),
            5 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.price),
            6 => out.push_bind_param::<Array<Text>, _>(&self.payment_method),
            7 => out.push_bind_param::<Array<Text>, _>(&self.stripe_idempotency_key),
            8 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.request_key),
            9 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.request_fingerprint),
            10 => out.push_bind_param::<Array<Nullable<Text>>, _>(&self.reference),
            11 => out.push_bind_param::<Array<Jsonb>, _>(&self.metadata),
            12 => out.push_bind_param::<Array<Nullable<SqlUuid>>, _>(&self.session_id),
            _ => Err(no_parameter(n)),
        }
    }
}

/// What the merchant's list (`GET /transactions`) asks for: newest first, after a cursor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    /// Rows per page (the caller bounds it).
    pub limit: i64,
    /// The last row of the previous page: the page holds the rows older than it.
    pub starting_after: Option<Uuid>,
    pub state: Option<TxState>,
    pub reference: Option<String>,
    pub email: Option<String>,
    pub session_id: Option<Uuid>,
    pub created_gte: Option<DateTime<Utc>>,
    pub created_gt: Option<DateTime<Utc>>,
    pub created_lte: Option<DateTime<Utc>>,
    pub created_lt: Option<DateTime<Utc>>,
}

/// A page of the merchant's list: each payment as `payment_snapshot`, newest first by
/// `(created_at, id)`, and whether older rows match. The order is on columns that never change,
/// and the cursor is a position in it, so paging never repeats or skips a row, whatever is
/// inserted meanwhile (new rows are newer than every page). `None`: no such cursor row.
pub async fn list(
    conn: &mut AsyncPgConnection,
    f: &ListFilter,
) -> DbResult<Option<(Vec<serde_json::Value>, bool)>> {
    use diesel::dsl::sql;
    use diesel::sql_types::{Bool, Timestamptz};
    let mut q = dsl::transactions.into_boxed();
    if let Some(state) = f.state {
        q = q.filter(dsl::state.eq(state));
    }
    if let Some(reference) = &f.reference {
        q = q.filter(dsl::reference.eq(reference.clone()));
    }
    if let Some(email) = &f.email {
        q = q.filter(dsl::email.eq(email.clone()));
    }
    if let Some(session) = f.session_id {
        q = q.filter(dsl::session_id.eq(session));
    }
    if let Some(at) = f.created_gte {
        q = q.filter(dsl::created_at.ge(at));
    }
    if let Some(at) = f.created_gt {
        q = q.filter(dsl::created_at.gt(at));
    }
    if let Some(at) = f.created_lte {
        q = q.filter(dsl::created_at.le(at));
    }
    if let Some(at) = f.created_lt {
        q = q.filter(dsl::created_at.lt(at));
    }
    if let Some(cursor) = f.starting_after {
        let at: Option<(DateTime<Utc>, Uuid)> = dsl::transactions
            .find(cursor)
            .select((dsl::created_at, dsl::id))
            .first(conn)
            .await
            .optional()?;
        let Some((at, id)) = at else {
            return Ok(None);
        };
        // A row comparison, which the (created_at, id) index answers as one range.
        q = q.filter(
            sql::<Bool>("(created_at, id) < (")
                .bind::<Timestamptz, _>(at)
                .sql(", ")
                .bind::<SqlUuid, _>(id)
                .sql(")"),
        );
    }
    let mut rows: Vec<serde_json::Value> = q
        .order((dsl::created_at.desc(), dsl::id.desc()))
        .limit(f.limit + 1)
        .select(sql::<Jsonb>("payment_snapshot(transactions)"))
        .load(conn)
        .await?;
    let has_more = rows.len() as i64 > f.limit;
    rows.truncate(f.limit.max(0) as usize);
    Ok(Some((rows, has_more)))
}

/// The payment as the merchant sees it (`payment_snapshot`, the view every event carries).
pub async fn merchant_view(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> DbResult<Option<serde_json::Value>> {
    #[derive(QueryableByName)]
    struct Snapshot {
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        snapshot: serde_json::Value,
    }
    let found: Option<Snapshot> = diesel::sql_query(
        "SELECT payment_snapshot(t) AS snapshot FROM transactions t WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(found.map(|s| s.snapshot))
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> DbResult<Option<Transaction>> {
    dsl::transactions
        .find(id)
        .select(Transaction::as_select())
        .first(conn)
        .await
        .optional()
}

/// How many transactions are in each state, every state listed (zero included), in the state
/// machine's order: for metrics, ops, payctl and tests.
pub async fn count_by_state(conn: &mut AsyncPgConnection) -> DbResult<Vec<(TxState, i64)>> {
    let counted: Vec<(TxState, i64)> = dsl::transactions
        .group_by(dsl::state)
        .select((dsl::state, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    Ok(TxState::ALL
        .iter()
        .map(|s| {
            let n = counted.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
            (*s, n)
        })
        .collect())
}

/// The state of each transaction in `ids` that exists.
pub async fn states_of(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> DbResult<HashMap<Uuid, TxState>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, TxState)> = dsl::transactions
        .filter(dsl::id.eq_any(ids))
        .select((dsl::id, dsl::state))
        .load(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The transactions of `ids` that exist.
pub async fn find_many(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> DbResult<Vec<Transaction>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    dsl::transactions
        .filter(dsl::id.eq_any(ids))
        .select(Transaction::as_select())
        .load(conn)
        .await
}

/// The `complete` transactions created within `[from, to)`: their ids and intents, for the
/// reconciler.
pub async fn complete_intents_between(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> DbResult<Vec<(Uuid, Option<String>)>> {
    dsl::transactions
        .filter(dsl::created_at.ge(from))
        .filter(dsl::created_at.lt(to))
        .filter(dsl::state.eq(TxState::Complete))
        .select((dsl::id, dsl::stripe_id))
        .load(conn)
        .await
}

/// Unfinished transactions created more than `age` ago (by the database's clock), oldest first.
pub async fn unfinished_older_than(
    conn: &mut AsyncPgConnection,
    age: Duration,
    limit: i64,
) -> DbResult<Vec<Transaction>> {
    diesel::sql_query(
        "SELECT * FROM transactions
         WHERE state = ANY($1) AND created_at < now() - $2
         ORDER BY created_at
         LIMIT $3",
    )
    .bind::<Array<Text>, _>(&TxState::UNFINISHED[..])
    .bind::<Interval, _>(crate::db::interval(age))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// How many payments have an unknown outcome (a confirm sent, its answer lost), and since when
/// the oldest.
pub async fn outcome_unknown(
    conn: &mut AsyncPgConnection,
) -> DbResult<(i64, Option<DateTime<Utc>>)> {
    dsl::transactions
        .filter(dsl::outcome_unknown_since.is_not_null())
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(dsl::outcome_unknown_since),
        ))
        .first(conn)
        .await
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

/// Notes a refund or a dispute on the transaction; the first report's time stays, and writes
/// its event (`payment.refunded`, `payment.disputed`) the first time. The payment's state does
/// not change: it was charged. Call it inside a transaction (the webhook's): the mark and its
/// event commit together. Returns whether the row changed.
pub async fn record_after_charge(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    what: AfterCharge,
    cause: &str,
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
    if n == 1 {
        let kind = match what {
            AfterCharge::Refunded => "payment.refunded",
            AfterCharge::Disputed => "payment.disputed",
        };
        crate::events::record_without_change(conn, id, kind, cause).await?;
    }
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
