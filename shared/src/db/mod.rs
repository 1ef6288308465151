//! Postgres: the async pool both services use ([`pool`]), one connection over TLS when the URL
//! asks for it ([`connect`]), the migrations embedded in both binaries ([`migrate`]), and the
//! planner's statistics kept up with the tables' growth ([`statistics`]).

mod connect;
mod migrate;
pub mod statistics;

use std::sync::Arc;
use std::time::Duration;

use bb8::ErrorSink;

use crate::telemetry::Throttle;

use diesel::pg::data_types::PgInterval;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};

pub use connect::{ConnectError, SslMode, Target, connect};
pub use migrate::{
    MIGRATIONS, MigrationError, create_database_if_missing, drop_database, known_migrations,
    pending_migrations, run_migrations, split_database_url, with_database,
};

pub type PgPool = Pool<AsyncPgConnection>;
pub type PgConn<'a> = PooledConnection<'a, AsyncPgConnection>;
pub type PoolError = RunError;
/// What every query returns.
pub type DbResult<T> = Result<T, diesel::result::Error>;

/// A duration as Postgres' `interval`.
pub fn interval(d: Duration) -> PgInterval {
    PgInterval::from_microseconds(d.as_micros().min(i64::MAX as u128) as i64)
}

/// Builds the pool without waiting for a connection: the services start (and answer `/readyz`
/// with 503) while Postgres is down, and the connections are made once it is back. A request waits at
/// most 3 s for a connection: the api must fail fast (503) rather than wait for a database
/// that is gone.
/// Fails only when the URL cannot work at all ([`ConnectError::Permanent`]).
pub fn pool(database_url: &str, max_size: u32) -> Result<PgPool, ConnectError> {
    pool_with_timeout(database_url, max_size, Duration::from_secs(3))
}

/// [`pool`] with its own checkout timeout. The worker waits longer: a job that charged a card
/// and then could not get a connection to record it would be re-run (harmlessly, with the same
/// idempotency key, but only after its lease expires).
pub fn pool_with_timeout(
    database_url: &str,
    max_size: u32,
    checkout_timeout: Duration,
) -> Result<PgPool, ConnectError> {
    pool_with_session(database_url, max_size, checkout_timeout, &[])
}

/// [`pool_with_timeout`] whose connections each run the statements of `session` (SQL, e.g. a
/// `SET`) once, in order, when opened.
pub fn pool_with_session(
    database_url: &str,
    max_size: u32,
    checkout_timeout: Duration,
    session: &'static [&'static str],
) -> Result<PgPool, ConnectError> {
    let target = Target::parse(database_url)?;
    let mut config = ManagerConfig::default();
    // Every connection is opened by [`Target::connect`], with the URL's TLS settings.
    config.custom_setup = Box::new(move |_url| {
        let target = target.clone();
        Box::pin(async move {
            let mut conn = target
                .connect()
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            for sql in session {
                diesel_async::SimpleAsyncConnection::batch_execute(&mut conn, sql)
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            }
            Ok(conn)
        })
    });
    config.recycling_method = RecyclingMethod::CustomFunction(Box::new(|conn| {
        let broken = PoolableConnection::is_broken(conn);
        Box::pin(async move {
            if broken {
                Err(diesel::result::Error::BrokenTransactionManager)
            } else {
                Ok(())
            }
        })
    }));
    let manager = AsyncDieselConnectionManager::new_with_config(database_url, config);
    Ok(Pool::builder()
        .max_size(max_size)
        .error_sink(Box::new(ConnectErrorLog::default()))
        // Fixed size: every connection is opened (in the background) when the pool is built and
        // re-opened when one is dropped. A pool that grows under load opens new backends just
        // when the machine is busiest; each costs a fork and a cold catalog cache, which held
        // POSTs up for 30-50 ms at p99 (bench/results.md).
        .min_idle(Some(max_size))
        .connection_timeout(checkout_timeout)
        // Every checkout skips a connection whose socket Postgres closed (a restart closes them
        // all) or that was left inside a transaction, and opens a new one instead. The check is
        // local: a `SELECT 1` round trip per checkout cost 17-41 % of the payments/s Postgres
        // allows (bench/results.md).
        .test_on_check_out(true)
        .build_unchecked(manager))
}

/// Logs why the pool could not open a connection (Postgres down, `too many clients`, a database
/// or role that does not exist, a certificate refused): a request that then times out waiting
/// for one only says that it timed out. The pool retries every few hundred milliseconds per
/// connection, so at most one line per 10 s is written, with the count of those left out.
#[derive(Clone, Debug)]
struct ConnectErrorLog(Arc<Throttle>);

impl Default for ConnectErrorLog {
    fn default() -> Self {
        ConnectErrorLog(Arc::new(Throttle::new(Duration::from_secs(10))))
    }
}

impl ErrorSink<diesel_async::pooled_connection::PoolError> for ConnectErrorLog {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        let Some(left_out) = self.0.ready() else {
            return;
        };
        // The error names the host, database and role at most, never the password.
        tracing::warn!(%error, left_out, "cannot open a Postgres connection");
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(self.clone())
    }
}
