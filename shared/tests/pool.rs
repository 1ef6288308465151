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
    let pool = shared::db::pool(&scratch.database_url, 1);
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
