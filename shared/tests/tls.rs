//! TLS to Postgres and Redis, with libpq's `sslmode` meanings: against this machine's Postgres
//! (`ssl = on`, a self-signed certificate) for encryption, and against servers of the test's
//! own, whose certificate a CA the test makes signed for `localhost`, for verification.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::db::{ConnectError, connect};
use shared::testing::servers::{PrivatePostgres, TestCa, TlsRedis, free_port};

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// Whether this connection's backend says it is encrypted.
async fn encrypted(conn: &mut AsyncPgConnection) -> bool {
    diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result::<Ssl>(conn)
        .await
        .unwrap()
        .ssl
}

fn with_query(url: &str, query: &str) -> String {
    let base = shared::testing::with_database(url, "postgres");
    let base = base.split('?').next().unwrap().to_owned();
    format!("{base}?{query}")
}

async fn refused(url: &str) -> String {
    match connect(url).await {
        Ok(_) => panic!("{url} connected"),
        Err(ConnectError::Permanent(m)) => m,
        Err(e @ ConnectError::Transient(_)) => panic!("{url}: transient, not permanent: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn require_encrypts_without_checking_the_certificate_and_disable_does_not() {
    let (base, _) = shared::testing::base_urls();
    let mut tls = connect(&with_query(&base, "sslmode=require"))
        .await
        .unwrap();
    assert!(
        encrypted(&mut tls).await,
        "sslmode=require was not encrypted"
    );
    // The default is libpq's: encrypted when the server offers it.
    let mut default = connect(&with_query(&base, "application_name=tls-test"))
        .await
        .unwrap();
    assert!(
        encrypted(&mut default).await,
        "the default (prefer) was not encrypted"
    );
    let mut plain = connect(&with_query(&base, "sslmode=disable"))
        .await
        .unwrap();
    assert!(
        !encrypted(&mut plain).await,
        "sslmode=disable was encrypted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_modes_check_the_chain_and_verify_full_the_host_name() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let pg = PrivatePostgres::start(&ca);
    let root = format!("sslrootcert={}", ca.ca_cert.display());
    let wrong_root = format!("sslrootcert={}", other_ca.ca_cert.display());

    // The certificate names `localhost`, and our CA signed it.
    let mut full = connect(&pg.url("localhost", &format!("sslmode=verify-full&{root}")))
        .await
        .unwrap();
    assert!(encrypted(&mut full).await);

    // Dialled as 127.0.0.1, the name does not match: verify-full refuses for good...
    let e = refused(&pg.url("127.0.0.1", &format!("sslmode=verify-full&{root}"))).await;
    assert!(
        e.contains("certificate not valid for name \"127.0.0.1\""),
        "{e}"
    );
    // ...verify-ca does not compare names...
    let mut ca_only = connect(&pg.url("127.0.0.1", &format!("sslmode=verify-ca&{root}")))
        .await
        .unwrap();
    assert!(encrypted(&mut ca_only).await);
    // ...and neither does require, which checks the chain once it has a CA file (libpq).
    connect(&pg.url("127.0.0.1", &format!("sslmode=require&{root}")))
        .await
        .unwrap();

    // A chain to a CA we were not given: refused, whatever the name.
    let e = refused(&pg.url("localhost", &format!("sslmode=require&{wrong_root}"))).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // Without a CA file the system's roots are used, and they do not know the test's CA.
    let e = refused(&pg.url("localhost", "sslmode=verify-full")).await;
    assert!(e.contains("UnknownIssuer"), "{e}");
    // require without a CA file encrypts and checks nothing.
    let mut unverified = connect(&pg.url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    assert!(encrypted(&mut unverified).await);

    // The pools (diesel-async's manager) open their connections the same way.
    let pool = shared::db::pool(
        &pg.url("localhost", &format!("sslmode=verify-full&{root}")),
        1,
    )
    .unwrap();
    let mut pooled = pool.get().await.unwrap();
    assert!(encrypted(&mut pooled).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_is_down_is_worth_retrying() {
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full",
        free_port()
    );
    match connect(&url).await {
        Err(ConnectError::Transient(_)) => {}
        other => panic!("expected a transient error, got {:?}", other.err()),
    }
}

async fn ping(url: &str, ca: Option<&std::path::Path>) -> Result<String, redis::RedisError> {
    let client = shared::queue::redis_client(url, ca)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_urls_verify_the_server_against_the_ca_file_or_skip_it_when_insecure() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca);
    let port = redis.port;

    let verified = format!("rediss://localhost:{port}");
    assert_eq!(ping(&verified, Some(&ca.ca_cert)).await.unwrap(), "PONG");
    // The queue's reconnecting connection goes the same way.
    let mut manager = shared::queue::redis_connection(&verified, Some(&ca.ca_cert)).unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut manager).await.unwrap();
    assert_eq!(pong, "PONG");

    // Not signed by a root we trust, or not for the name we dialled: refused for good.
    let e = ping(&verified, None).await.unwrap_err();
    assert!(shared::tls::is_refusal(&e), "{e}");
    let e = ping(&format!("rediss://127.0.0.1:{port}"), Some(&ca.ca_cert))
        .await
        .unwrap_err();
    assert!(shared::tls::is_refusal(&e), "{e}");

    // The redis crate's `#insecure`, for development servers: encrypted, not verified.
    let insecure = format!("rediss://127.0.0.1:{port}/#insecure");
    assert_eq!(ping(&insecure, None).await.unwrap(), "PONG");

    // A CA file that cannot be read is a configuration error, named as such.
    let e = shared::queue::redis_client(&verified, Some(std::path::Path::new("/nonexistent.pem")))
        .unwrap_err();
    assert!(e.to_string().contains("REDIS_CA_FILE"), "{e}");
}
