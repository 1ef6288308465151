//! The Postgres side: the few queries payctl needs beyond those in `shared::transactions`.
//! They read only, except [`due_now`], which `retry` uses.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Interval};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared::models::Transaction;
use shared::schema::transactions::dsl;
use uuid::Uuid;

pub async fn connect(database_url: &str) -> anyhow::Result<AsyncPgConnection> {
    let connect = AsyncPgConnection::establish(database_url);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .context("cannot connect to Postgres (DATABASE_URL)")
}

/// The state of each transaction in `ids` that exists.
pub async fn states(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> anyhow::Result<HashMap<Uuid, String>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, String)> = dsl::transactions
        .filter(dsl::id.eq_any(ids))
        .select((dsl::id, dsl::state))
        .load(conn)
        .await
        .context("reading transaction states")?;
    Ok(rows.into_iter().collect())
}

pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> anyhow::Result<Option<Transaction>> {
    shared::transactions::find(conn, id)
        .await
        .context("reading the transaction")
}

/// Unfinished transactions created more than `age` ago (by the database's clock), oldest first.
pub async fn unfinished_older_than(
    conn: &mut AsyncPgConnection,
    age: Duration,
    limit: i64,
) -> anyhow::Result<Vec<Transaction>> {
    let micros = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
    diesel::sql_query(
        "SELECT * FROM transactions
         WHERE state IN ('pending', 'processing', 'requires_action')
           AND created_at < now() - $1
         ORDER BY created_at
         LIMIT $2",
    )
    .bind::<Interval, _>(diesel::pg::data_types::PgInterval::from_microseconds(
        micros,
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
    .context("reading unfinished transactions")
}

/// Number of transactions in every state, zero included, in the state machine's order.
pub async fn count_by_state(conn: &mut AsyncPgConnection) -> anyhow::Result<Vec<(String, i64)>> {
    let counted: HashMap<String, i64> = shared::transactions::count_by_state(conn)
        .await
        .context("counting transactions")?
        .into_iter()
        .collect();
    Ok(shared::state_machine::TxState::ALL
        .iter()
        .map(|s| {
            (
                s.as_str().to_owned(),
                counted.get(s.as_str()).copied().unwrap_or(0),
            )
        })
        .collect())
}

/// Makes an unfinished transaction due now, so the next delivery of its job may claim it.
/// Returns false when the transaction is already final (or gone). Kept here rather than
/// borrowed from `shared`: an operator's retry may move any unfinished payment forward, which
/// the api's own recheck deliberately does not allow.
pub async fn due_now(conn: &mut AsyncPgConnection, id: Uuid) -> anyhow::Result<bool> {
    let n = diesel::update(dsl::transactions.find(id))
        .filter(dsl::state.eq_any(["pending", "processing", "requires_action"]))
        .set(dsl::next_attempt_at.eq(diesel::dsl::now))
        .execute(conn)
        .await
        .context("rescheduling the transaction")?;
    Ok(n == 1)
}
