//! The SQL that spells the states out agrees with the state machine and with the schema: the
//! partial index covers exactly the unfinished states, and the sweeper's query, as it runs
//! (prepared, with bound parameters), is planned on that index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use shared::state_machine::TxState;
use shared::state_machine::sweep::SWEEP_SQL;
use shared::testing::ScratchGuard;

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

#[derive(QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_index_covers_exactly_the_unfinished_states() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    let def: Line = diesel::sql_query(
        "SELECT indexdef AS line FROM pg_indexes WHERE indexname = 'transactions_unfinished_idx'",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    // Postgres writes the predicate back as `state = ANY (ARRAY['pending'::text, ...])`.
    let named: BTreeSet<&str> = def.line.split('\'').skip(1).step_by(2).collect();
    let unfinished: BTreeSet<&str> = TxState::UNFINISHED.iter().map(|s| s.as_str()).collect();
    assert_eq!(named, unfinished, "{}", def.line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweepers_query_is_planned_on_the_partial_index() {
    let scratch = ScratchGuard::create().await;
    let mut conn = scratch.connect().await;
    // Without rows a sequential scan is cheapest; forbid it so the plan shows whether the index
    // can serve the query at all. A generic plan is what a prepared statement gets once
    // Postgres stops planning per call: the parameters are then unknown.
    conn.batch_execute("SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    conn.batch_execute(&format!("PREPARE sweep(interval, bigint) AS {SWEEP_SQL}"))
        .await
        .unwrap();
    let plan: Vec<PlanLine> = diesel::sql_query("EXPLAIN EXECUTE sweep('30 seconds', 500)")
        .load(&mut conn)
        .await
        .unwrap();
    let text: Vec<String> = plan.into_iter().map(|l| l.line).collect();
    assert!(
        text.iter()
            .any(|l| l.contains("transactions_unfinished_idx")),
        "{}",
        text.join("\n")
    );
}
