//! The schema: the migrations compiled into both binaries, applied under an advisory lock so
//! that api processes starting together migrate once; and creating or dropping a database.
//!
//! Migrations take a session-level lock and run one transaction per migration, so they need a
//! connection of their own to Postgres itself: `DATABASE_DIRECT_URL`, never a transaction-mode
//! pooler (docs/deploy.md).

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::connect::{ConnectError, connect};

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// The advisory lock every migrating process takes: "payments" in ASCII.
const MIGRATION_LOCK: i64 = 0x7061_796d_656e_7473;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Postgres is not reachable (yet): worth retrying.
    #[error("cannot connect to Postgres: {0}")]
    Connect(String),
    /// The connection can never work as configured (TLS verification, the URL): stop.
    #[error("cannot connect to Postgres: {0}")]
    Refused(String),
    #[error("migration failed: {0}")]
    Run(String),
}

impl From<ConnectError> for MigrationError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Permanent(m) => MigrationError::Refused(m),
            ConnectError::Transient(m) => MigrationError::Connect(m),
        }
    }
}

/// A Postgres URL cut around its database name: `(prefix, name, query)`, the query without its
/// `?`. `None` when the URL has no path.
pub fn split_database_url(url: &str) -> Option<(&str, &str, &str)> {
    // The query first: its values (`sslrootcert=/etc/ca.pem`) may hold slashes.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (prefix, name) = base.rsplit_once('/')?;
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
/// Two processes doing it at once both succeed.
pub async fn create_database_if_missing(database_url: &str) -> Result<(), MigrationError> {
    let err = match connect(database_url).await {
        Ok(_) => return Ok(()),
        Err(e @ ConnectError::Permanent(_)) => return Err(e.into()),
        Err(e) => e.to_string(),
    };
    if !err.contains("does not exist") {
        return Err(MigrationError::Connect(err));
    }
    let no_name = || MigrationError::Refused("DATABASE_URL has no database name".into());
    let (_, name, _) = split_database_url(database_url).ok_or_else(no_name)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(MigrationError::Refused(format!(
            "cannot create database `{name}`: use letters, digits and _"
        )));
    }
    let admin_url = with_database(database_url, "postgres").ok_or_else(no_name)?;
    let mut admin = connect(&admin_url).await?;
    match diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
    {
        Ok(_) => tracing::info!(database = name, "created database"),
        Err(e) => {
            // Another process creating it at the same moment makes ours fail ("already
            // exists", or a unique violation on pg_database when both got that far): fine, if
            // the database is there now.
            if connect(database_url).await.is_err() {
                return Err(MigrationError::Run(format!(
                    "creating database {name}: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// Drops the database named in `database_url`, closing its connections (tests, the chaos run's
/// and the benchmark's deployments end with this).
pub async fn drop_database(database_url: &str) -> Result<(), MigrationError> {
    let no_name = || MigrationError::Refused("the URL has no database name".into());
    let (_, name, _) = split_database_url(database_url).ok_or_else(no_name)?;
    let admin_url = with_database(database_url, "postgres").ok_or_else(no_name)?;
    let mut admin = connect(&admin_url).await?;
    diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .map_err(|e| MigrationError::Run(format!("dropping database {name}: {e}")))?;
    Ok(())
}

/// Applies every pending migration; returns how many ran. Holds [`MIGRATION_LOCK`] meanwhile:
/// a second process waits, then finds nothing pending.
pub async fn run_migrations(database_url: &str) -> Result<usize, MigrationError> {
    create_database_if_missing(database_url).await?;
    let mut conn = connect(database_url).await?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(&mut conn)
        .await
        .map_err(|e| MigrationError::Run(format!("taking the migration lock: {e}")))?;
    // The harness blocks in place (tokio's multi-thread runtime required, which both binaries
    // use). The lock is the session's: closing the connection, after it or on an error,
    // releases it.
    let mut h = AsyncMigrationHarness::new(conn);
    let applied = h
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| MigrationError::Run(e.to_string()))?;
    Ok(applied.len())
}

/// The migrations this build knows of that the database has not applied yet.
pub async fn pending_migrations(database_url: &str) -> Result<Vec<String>, MigrationError> {
    let conn: AsyncPgConnection = connect(database_url).await?;
    let mut h = AsyncMigrationHarness::new(conn);
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
        assert_eq!(
            with_database("postgres://h/p?sslrootcert=/etc/ssl/ca.pem", "x").as_deref(),
            Some("postgres://h/x?sslrootcert=/etc/ssl/ca.pem")
        );
    }
}
