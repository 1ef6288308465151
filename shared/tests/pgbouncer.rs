//! Why docs/deploy.md says "PgBouncer in session mode" for Debian 12's PgBouncer (1.18):
//! diesel-async prepares named statements and reuses them on its connection, and a
//! transaction-mode pooler hands each transaction to whichever server connection is free, where
//! the statement was never prepared (or another client's of the same name was). PgBouncer 1.21+
//! with `max_prepared_statements` tracks them; 1.18 cannot. Session mode keeps one server
//! connection per client, and everything works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::schema::transactions;
use shared::testing::ScratchGuard;
use shared::testing::servers::{PgBouncer, postgres_port};

/// The same query on both connections: diesel-async prepares it once per connection under a
/// name and then reuses the name. `a` holds a transaction open while `b` runs it, so a pooler
/// in transaction mode needs a second server connection for `b`; afterwards `b` may be handed
/// the first one, where its statement does not exist.
async fn interleave(a: &mut AsyncPgConnection, b: &mut AsyncPgConnection) -> Result<(), String> {
    use diesel_async::SimpleAsyncConnection;
    for _ in 0..3 {
        a.batch_execute("BEGIN").await.map_err(|e| e.to_string())?;
        count(a).await?;
        count(b).await?;
        a.batch_execute("COMMIT").await.map_err(|e| e.to_string())?;
        count(b).await?;
        count(a).await?;
    }
    Ok(())
}

async fn count(conn: &mut AsyncPgConnection) -> Result<i64, String> {
    use diesel::QueryDsl;
    transactions::table
        .count()
        .get_result(conn)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn named_statements_work_in_session_mode_and_break_in_transaction_mode() {
    let scratch = ScratchGuard::create().await;
    let pg_port = postgres_port();

    let session = PgBouncer::start(pg_port, "session", 2);
    let url = session.url_for(&scratch.database_url);
    let mut a = shared::db::connect(&url).await.unwrap();
    let mut b = shared::db::connect(&url).await.unwrap();
    interleave(&mut a, &mut b).await.unwrap();

    // Server connections shared by the clients transaction by transaction.
    let transaction = PgBouncer::start(pg_port, "transaction", 2);
    let url = transaction.url_for(&scratch.database_url);
    let mut a = shared::db::connect(&url).await.unwrap();
    let mut b = shared::db::connect(&url).await.unwrap();
    let e = interleave(&mut a, &mut b)
        .await
        .expect_err("named statements survived transaction pooling on this PgBouncer");
    assert!(e.contains("prepared statement"), "{e}");
}
