//! The pool never hands out a connection Postgres has closed (as a restart closes them all),
//! although it no longer sends a test query on every checkout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Integer};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared::testing::{ScratchGuard, with_database};

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

#[derive(QueryableByName)]
struct Alive {
    #[diesel(sql_type = Bool)]
    alive: bool,
}

async fn backend_pid(conn: &mut AsyncPgConnection) -> diesel::QueryResult<i32> {
    let row: Pid = diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result(conn)
        .await?;
    Ok(row.pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_postgres_closed_is_replaced_at_checkout() {
    let scratch = ScratchGuard::create().await;
    let pool = shared::db::pool(&scratch.database_url, 1).unwrap();
    let first = {
        let mut conn = pool.get().await.unwrap();
        backend_pid(&mut conn).await.unwrap()
    };

    let mut admin = AsyncPgConnection::establish(&with_database(&scratch.database_url, "postgres"))
        .await
        .unwrap();
    diesel::sql_query(format!("SELECT pg_terminate_backend({first})"))
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row: Alive = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = {first}) AS alive"
        ))
        .get_result(&mut admin)
        .await
        .unwrap();
        if !row.alive {
            break;
        }
        assert!(Instant::now() < deadline, "backend {first} did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The pool's only connection is dead: the checkout must notice and open a new one.
    let mut conn = pool.get().await.unwrap();
    let second = backend_pid(&mut conn)
        .await
        .expect("a checked-out connection works");
    assert_ne!(first, second);
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Connections the pool under test opened (by their `application_name`: the connection that
/// ran the migrations may still be closing).
async fn backends(conn: &mut AsyncPgConnection) -> i64 {
    let row: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'pool_under_test'",
    )
    .get_result(conn)
    .await
    .unwrap();
    row.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_opens_all_its_connections_before_the_first_checkout() {
    let scratch = ScratchGuard::create().await;
    let mut probe = scratch.connect().await;
    assert_eq!(backends(&mut probe).await, 0);
    let sep = if scratch.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}application_name=pool_under_test",
        scratch.database_url
    );
    let pool = shared::db::pool(&url, 3).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends(&mut probe).await < 3 {
        assert!(
            Instant::now() < deadline,
            "the pool did not open 3 connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and no more than its size, even when every connection is checked out at once.
    let held = check_out_all(&pool, 3).await;
    assert_eq!(backends(&mut probe).await, 3);
    drop(held);
}

async fn check_out_all(pool: &shared::db::PgPool, n: usize) -> Vec<shared::db::PgConn<'_>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    held
}
