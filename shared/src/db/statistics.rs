//! The planner's statistics of the payments' tables keep up with their growth.
//!
//! Every connection keeps the plan Postgres made for each of its prepared statements (the
//! claim, the records, the api's insert), and Postgres makes a new one only when the table's
//! statistics change. A deployment starts with empty tables: the plans its connections make
//! then (a sequential scan, or any index at all, is as cheap as the primary key on an empty
//! table) stay until an `ANALYZE`. Autovacuum analyzes a table once a minute at most, and not at
//! all on a server that runs without it. Until then every claim and record scanned the whole
//! table, so each cost more as the table grew: `make bench` measured the claim at 16-52 ms
//! a row after a minute, with the worker finishing 80-200 payments/s on 1.5 cores of Postgres
//! (bench/src/fixes.md).
//!
//! So every `WORKER_ANALYZE_INTERVAL_MS` each worker (`worker/src/statistics.rs`) analyzes
//! those of [`TABLES`] that hold more than twice the rows their statistics know of: a table is
//! analyzed a few times while it grows from empty (at 1,000 rows, 2,000, 4,000, …), and not
//! again until it doubles. That
//! leaves autovacuum (which must stay on, docs/operations.md) everything else; this only keeps
//! a table's plans from being made for a table a fraction of its size. `ANALYZE (SKIP_LOCKED)`
//! skips a table another session is analyzing (another worker, autovacuum), and the next check
//! finds it analyzed.

use diesel::QueryableByName;
use diesel::sql_types::{Array, Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::DbResult;

/// The tables whose plans the services keep: every table a payment, its events and its
/// webhooks write.
pub const TABLES: &[&str] = &[
    "transactions",
    "payment_events",
    "webhook_deliveries",
    "webhook_attempts",
    "stripe_events",
    "checkout_sessions",
    "discrepancies",
];

/// A table is analyzed once it holds more than twice the rows of its last analysis, and never
/// before it holds twice this many (an analysis of a few hundred rows is soon out of date).
pub const SMALLEST: f64 = 500.0;

#[derive(QueryableByName)]
struct Grown {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Analyzes those of [`TABLES`] (in the connection's schema) that have grown past twice what
/// their statistics know, and returns their names. `reltuples` is -1 for a table never
/// analyzed; `n_live_tup` is what the server's activity statistics count now.
pub async fn analyze_grown(conn: &mut AsyncPgConnection) -> DbResult<Vec<&'static str>> {
    let grown: Vec<Grown> = diesel::sql_query(
        "SELECT s.relname::text AS name FROM pg_stat_user_tables s
         JOIN pg_class c ON c.oid = s.relid
         WHERE s.schemaname = current_schema() AND s.relname = ANY($1)
           AND s.n_live_tup > 2 * GREATEST(c.reltuples::float8, $2)",
    )
    .bind::<Array<Text>, _>(TABLES)
    .bind::<Double, _>(SMALLEST)
    .load(conn)
    .await?;
    let mut analyzed = Vec::new();
    // Names from our own list, never from the server's answer, go into the statement.
    for table in TABLES
        .iter()
        .filter(|t| grown.iter().any(|g| g.name == **t))
    {
        diesel::sql_query(format!("ANALYZE (SKIP_LOCKED) {table}"))
            .execute(conn)
            .await?;
        analyzed.push(*table);
    }
    Ok(analyzed)
}
