//! The async Postgres pool and the migrations embedded in both binaries.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::ErrorSink;

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection, RunError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection, RecyclingMethod,
};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub type PgPool = Pool<AsyncPgConnection>;
pub type PgConn<'a> = PooledConnection<'a, AsyncPgConnection>;
pub type PoolError = RunError;
/// What every query returns.
pub type DbResult<T> = Result<T, diesel::result::Error>;

/// A duration as Postgres' `interval`.
pub fn interval(d: Duration) -> PgInterval {
    PgInterval::from_microseconds(d.as_micros().min(i64::MAX as u128) as i64)
}

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// Builds the pool without waiting for a connection: the services start (and answer `/readyz`
/// with 503) while Postgres is down, and the connections are made once it is back. A request waits at
/// most 3 s for a connection: the api must fail fast (503) rather than wait for a database
/// that is gone.
pub fn pool(database_url: &str, max_size: u32) -> PgPool {
    pool_with_timeout(database_url, max_size, Duration::from_secs(3))
}

/// [`pool`] with its own checkout timeout. The worker waits longer: a job that charged a card
/// and then could not get a connection to record it would be re-run (harmlessly, with the same
/// idempotency key, but only after its lease expires).
pub fn pool_with_timeout(database_url: &str, max_size: u32, checkout_timeout: Duration) -> PgPool {
    let mut config = ManagerConfig::default();
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
    Pool::builder()
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
        .build_unchecked(manager)
}

/// Logs why the pool could not open a connection (Postgres down, `too many clients`, a database
/// or role that does not exist): a request that then times out waiting for one only says that it
/// timed out. The pool retries every few hundred milliseconds per connection, so at most one line
/// per [`ConnectErrorLog::EVERY`] is written, with the count of those left out.
#[derive(Clone, Debug, Default)]
struct ConnectErrorLog(Arc<Mutex<Throttle>>);

#[derive(Debug, Default)]
struct Throttle {
    last: Option<Instant>,
    left_out: u64,
}

impl ConnectErrorLog {
    const EVERY: Duration = Duration::from_secs(10);
}

impl ErrorSink<diesel_async::pooled_connection::PoolError> for ConnectErrorLog {
    fn sink(&self, error: diesel_async::pooled_connection::PoolError) {
        let Ok(mut t) = self.0.lock() else { return };
        let now = Instant::now();
        if t.last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            t.left_out += 1;
            return;
        }
        t.last = Some(now);
        let left_out = std::mem::take(&mut t.left_out);
        // The error names the host, database and role at most, never the password.
        tracing::warn!(%error, left_out, "cannot open a Postgres connection");
    }

    fn boxed_clone(&self) -> Box<dyn ErrorSink<diesel_async::pooled_connection::PoolError>> {
        Box::new(self.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("cannot connect to Postgres: {0}")]
    Connect(String),
    #[error("migration failed: {0}")]
    Run(String),
}

async fn harness(
    database_url: &str,
) -> Result<AsyncMigrationHarness<AsyncPgConnection>, MigrationError> {
    use diesel_async::AsyncConnection;
    let conn = AsyncPgConnection::establish(database_url)
        .await
        .map_err(|e| MigrationError::Connect(e.to_string()))?;
    Ok(AsyncMigrationHarness::new(conn))
}

/// A Postgres URL cut around its database name: `(prefix, name, query)`, the query without its
/// `?`. `None` when the URL has no path.
pub fn split_database_url(url: &str) -> Option<(&str, &str, &str)> {
    let (prefix, rest) = url.rsplit_once('/')?;
    let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
    Some((prefix, name, query))
}

/// The same URL naming database `name` instead, keeping its query string (`None`: no path).
pub fn with_database(url: &str, name: &str) -> Option<String> {
    let (prefix, _, query) = split_database_url(url)?;
    let sep = if query.is_empty() { "" } else { "?" };
    Some(format!("{prefix}/{name}{sep}{query}"))
}

/// Creates the database named in `database_url` when the server is up but the database is
/// not, so a fresh `make run` works against a bare Postgres. Needs CREATEDB on the server.
pub async fn create_database_if_missing(database_url: &str) -> Result<(), MigrationError> {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let err = match AsyncPgConnection::establish(database_url).await {
        Ok(_) => return Ok(()),
        Err(e) => e.to_string(),
    };
    if !err.contains("does not exist") {
        return Err(MigrationError::Connect(err));
    }
    let no_name = || MigrationError::Connect("DATABASE_URL has no database name".into());
    let (_, name, _) = split_database_url(database_url).ok_or_else(no_name)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(MigrationError::Connect(format!(
            "cannot create database `{name}`: use letters, digits and _"
        )));
    }
    let admin_url = with_database(database_url, "postgres").ok_or_else(no_name)?;
    let mut admin = AsyncPgConnection::establish(&admin_url)
        .await
        .map_err(|e| MigrationError::Connect(e.to_string()))?;
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .map_err(|e| MigrationError::Run(format!("creating database {name}: {e}")))?;
    tracing::info!(database = name, "created database");
    Ok(())
}

/// Drops the database named in `database_url`, closing its connections (tests, the chaos run's
/// and the benchmark's deployments end with this).
pub async fn drop_database(database_url: &str) -> Result<(), MigrationError> {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let no_name = || MigrationError::Connect("the URL has no database name".into());
    let (_, name, _) = split_database_url(database_url).ok_or_else(no_name)?;
    let admin_url = with_database(database_url, "postgres").ok_or_else(no_name)?;
    let mut admin = AsyncPgConnection::establish(&admin_url)
        .await
        .map_err(|e| MigrationError::Connect(e.to_string()))?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .map_err(|e| MigrationError::Run(format!("dropping database {name}: {e}")))?;
    Ok(())
}

/// Applies every pending migration; returns how many ran.
pub async fn run_migrations(database_url: &str) -> Result<usize, MigrationError> {
    create_database_if_missing(database_url).await?;
    let mut h = harness(database_url).await?;
    // The harness blocks in place (tokio's multi-thread runtime required, which both binaries use).
    let applied = h
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| MigrationError::Run(e.to_string()))?;
    Ok(applied.len())
}

/// The migrations this build knows of that the database has not applied yet.
pub async fn pending_migrations(database_url: &str) -> Result<Vec<String>, MigrationError> {
    let mut h = harness(database_url).await?;
    let pending = h
        .pending_migrations(MIGRATIONS)
        .map_err(|e| MigrationError::Run(e.to_string()))?;
    Ok(pending.iter().map(|m| m.name().to_string()).collect())
}

/// Number of migrations compiled into this binary.
pub fn known_migrations() -> usize {
    MigrationSource::<Pg>::migrations(&MIGRATIONS).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        let url = "postgres://u@h:5432/payments?sslmode=disable";
        assert_eq!(
            split_database_url(url),
            Some(("postgres://u@h:5432", "payments", "sslmode=disable"))
        );
        assert_eq!(
            with_database(url, "postgres").as_deref(),
            Some("postgres://u@h:5432/postgres?sslmode=disable")
        );
        assert_eq!(
            with_database("postgres://h/payments", "x").as_deref(),
            Some("postgres://h/x")
        );
        assert_eq!(with_database("no-path", "x"), None);
    }
}
