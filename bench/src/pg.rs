//! The questions the benchmark asks Postgres: its clock, how many payments finished in a window
//! (from `updated_at` of complete rows, so the count is the database's, not the client's), the
//! backlog, and how long payments took from insert to `complete`.

use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Double, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::state_machine::TxState;
use shared::state_machine::sweep::UNFINISHED_SQL;
use uuid::Uuid;

pub async fn connect(database_url: &str) -> anyhow::Result<AsyncPgConnection> {
    Ok(shared::db::connect(database_url).await?)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Seconds {
    #[diesel(sql_type = Double)]
    s: f64,
}

/// Postgres' clock, as Unix seconds: window boundaries are compared with `updated_at`, which
/// Postgres stamps.
pub async fn now(conn: &mut AsyncPgConnection) -> anyhow::Result<f64> {
    let row: Seconds =
        diesel::sql_query("SELECT extract(epoch FROM clock_timestamp())::float8 AS s")
            .get_result(conn)
            .await?;
    Ok(row.s)
}

/// Payments that became `complete` within `[from, to)` (Unix seconds).
pub async fn completed_between(
    conn: &mut AsyncPgConnection,
    from: f64,
    to: f64,
) -> anyhow::Result<i64> {
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM transactions WHERE state = $3 \
         AND updated_at >= to_timestamp($1) AND updated_at < to_timestamp($2)",
    )
    .bind::<Double, _>(from)
    .bind::<Double, _>(to)
    .bind::<Text, _>(TxState::Complete)
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// Payments inserted within `[from, to)`.
pub async fn created_between(
    conn: &mut AsyncPgConnection,
    from: f64,
    to: f64,
) -> anyhow::Result<i64> {
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM transactions \
         WHERE created_at >= to_timestamp($1) AND created_at < to_timestamp($2)",
    )
    .bind::<Double, _>(from)
    .bind::<Double, _>(to)
    .get_result(conn)
    .await?;
    Ok(row.n)
}

/// Unfinished payments now (answered from the partial index the sweeper uses).
pub async fn unfinished(conn: &mut AsyncPgConnection) -> anyhow::Result<i64> {
    let row: Count = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM transactions WHERE {UNFINISHED_SQL}"
    ))
    .get_result(conn)
    .await?;
    Ok(row.n)
}

pub async fn count_state(conn: &mut AsyncPgConnection, state: TxState) -> anyhow::Result<i64> {
    let row: Count = diesel::sql_query("SELECT count(*) AS n FROM transactions WHERE state = $1")
        .bind::<Text, _>(state)
        .get_result(conn)
        .await?;
    Ok(row.n)
}

/// Waits until nothing is unfinished, or `within` passes; returns what is left.
pub async fn drain(conn: &mut AsyncPgConnection, within: Duration) -> anyhow::Result<i64> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = unfinished(conn).await?;
        if left == 0 || std::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `updated_at - created_at` of those of `ids` that are complete: insert to final state.
pub async fn time_to_complete(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> anyhow::Result<Vec<Duration>> {
    let rows: Vec<Seconds> = diesel::sql_query(
        "SELECT extract(epoch FROM updated_at - created_at)::float8 AS s FROM transactions \
         WHERE id = ANY($1) AND state = $2",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Text, _>(TxState::Complete)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Duration::from_secs_f64(r.s.max(0.0)))
        .collect())
}

/// When the last change of any payment happened (Unix seconds): the end of a burst's work.
pub async fn last_update(conn: &mut AsyncPgConnection) -> anyhow::Result<f64> {
    let row: Seconds = diesel::sql_query(
        "SELECT COALESCE(extract(epoch FROM max(updated_at)), 0)::float8 AS s FROM transactions",
    )
    .get_result(conn)
    .await?;
    Ok(row.s)
}

/// Waits until every one of `ids` is final (`complete` or `failed`), or `within` passes;
/// returns how many are not.
pub async fn drain_ids(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    within: Duration,
) -> anyhow::Result<i64> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let row: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM transactions \
             WHERE id = ANY($1) AND state NOT IN ('complete', 'failed')",
        )
        .bind::<Array<SqlUuid>, _>(ids)
        .get_result(conn)
        .await?;
        if row.n == 0 || std::time::Instant::now() >= deadline {
            return Ok(row.n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
