//! A table that grew past twice what its statistics know is analyzed, and the plans a
//! connection kept from when it was empty are made again for the table as it is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::QueryableByName;
use diesel::sql_types::{Double, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::db::statistics::analyze_grown;
use shared::testing::ScratchGuard;

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(column_name = "QUERY PLAN", sql_type = Text)]
    line: String,
}

#[derive(QueryableByName)]
struct Known {
    #[diesel(sql_type = Double)]
    rows: f64,
}

/// How the connection's prepared `by_ids` finds its rows now.
async fn plan(conn: &mut AsyncPgConnection) -> String {
    let lines: Vec<PlanLine> = diesel::sql_query(
        "EXPLAIN (COSTS OFF) EXECUTE by_ids('{00000000-0000-0000-0000-000000000001}')",
    )
    .load(conn)
    .await
    .unwrap();
    lines
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn rows_known(conn: &mut AsyncPgConnection) -> f64 {
    diesel::sql_query(
        "SELECT reltuples::float8 AS rows FROM pg_class WHERE relname = 'transactions'",
    )
    .get_result::<Known>(conn)
    .await
    .unwrap()
    .rows
}

/// Inserts `n` payments from a connection of its own, closed after: a backend reports its
/// activity statistics when it exits at the latest.
async fn insert_payments(scratch: &ScratchGuard, n: usize) {
    let mut other = scratch.connect().await;
    diesel::sql_query(format!(
        "INSERT INTO transactions (id, amount, currency, email, payment_method,
                                   stripe_idempotency_key)
         SELECT u, 1000, 'usd', 'a@example.com', 'pm_card_visa', 'txn_' || u
         FROM (SELECT gen_random_uuid() AS u FROM generate_series(1, {n})) s"
    ))
    .execute(&mut other)
    .await
    .unwrap();
}

/// Waits until the server's activity statistics count `n` live payments (the inserting
/// backend reports them when it exits), or fails after 30 s.
async fn wait_counted(conn: &mut AsyncPgConnection, n: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let live: Known = diesel::sql_query(
            "SELECT n_live_tup::float8 AS rows FROM pg_stat_user_tables
             WHERE relname = 'transactions'",
        )
        .get_result(conn)
        .await
        .unwrap();
        if live.rows >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} counted",
            live.rows
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_that_doubled_is_analyzed_and_its_kept_plans_are_made_again() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    // A plan kept from the empty table, as every connection of a new deployment keeps its
    // prepared statements' plans.
    diesel::sql_query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("PREPARE by_ids(uuid[]) AS SELECT * FROM transactions WHERE id = ANY($1)")
        .execute(&mut conn)
        .await
        .unwrap();
    let empty = plan(&mut conn).await;
    assert!(empty.contains("Seq Scan"), "{empty}");
    assert_eq!(analyze_grown(&mut conn).await.unwrap(), Vec::<&str>::new());

    insert_payments(&scratch, 20_000).await;
    // Nothing changed the statistics yet, so the connection still scans the whole table.
    let stale = plan(&mut conn).await;
    assert!(stale.contains("Seq Scan"), "{stale}");

    wait_counted(&mut conn, 20_000.0).await;
    assert_eq!(
        analyze_grown(&mut conn).await.unwrap(),
        vec!["transactions"]
    );
    let known = rows_known(&mut conn).await;
    assert!((19_000.0..=21_000.0).contains(&known), "{known}");
    let fresh = plan(&mut conn).await;
    assert!(fresh.contains("transactions_pkey"), "{fresh}");
    assert!(!fresh.contains("Seq Scan"), "{fresh}");

    // Not again until the table doubles once more.
    insert_payments(&scratch, 5_000).await;
    wait_counted(&mut conn, 25_000.0).await;
    assert_eq!(analyze_grown(&mut conn).await.unwrap(), Vec::<&str>::new());
    insert_payments(&scratch, 20_000).await;
    wait_counted(&mut conn, 45_000.0).await;
    assert_eq!(
        analyze_grown(&mut conn).await.unwrap(),
        vec!["transactions"]
    );
    let known = rows_known(&mut conn).await;
    assert!((43_000.0..=47_000.0).contains(&known), "{known}");
}

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    attname: String,
}

/// An `ANALYZE` of the event log gathers statistics for the columns queries filter and join on,
/// and none for the snapshots (jsonb, never in a condition), half of what it cost.
#[tokio::test(flavor = "multi_thread")]
async fn the_event_logs_analyze_skips_the_snapshots() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    insert_payments(&scratch, 50).await;
    diesel::sql_query(
        "INSERT INTO payment_events (transaction_id, type, new_state, attempt, snapshot, cause)
         SELECT t.id, 'payment.pending', 'pending', 0, payment_snapshot(t), 'api'
         FROM transactions t",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query("ANALYZE payment_events")
        .execute(&mut conn)
        .await
        .unwrap();
    let analyzed: Vec<Column> = diesel::sql_query(
        "SELECT attname::text AS attname FROM pg_stats
         WHERE schemaname = current_schema() AND tablename = 'payment_events' ORDER BY attname",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let names: Vec<&str> = analyzed.iter().map(|c| c.attname.as_str()).collect();
    assert!(names.contains(&"transaction_id"), "{names:?}");
    assert!(names.contains(&"type"), "{names:?}");
    assert!(!names.contains(&"snapshot"), "{names:?}");
    scratch.remove().await;
}
