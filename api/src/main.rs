//! The `api` binary: `api` (or `api serve`) applies pending migrations and serves, `api
//! migrate` applies them and exits, `api healthcheck` probes a running api. Arguments are
//! parsed before anything else: `--help` and `--version` touch no database.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::startup::Application;
use clap::{Parser, Subcommand};
use shared::settings::Settings;

/// The payments api: records payments in Postgres, queues their charges in Redis, serves the
/// checkout page and the event streams.
///
/// Configured by the environment (README, .env.example); `NAME_FILE` reads a secret from a
/// file.
#[derive(Debug, Parser)]
#[command(name = "api", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending migrations, then serve on API_ADDR (the default).
    Serve,
    /// Apply pending migrations and exit.
    Migrate,
    /// Exit 0 when the api on API_ADDR answers `GET /healthz` (or `/readyz`), else 1: for
    /// container healthchecks.
    Healthcheck {
        /// Ask `/readyz` (Postgres and Redis answer) instead of `/healthz` (the process is up).
        #[arg(long)]
        ready: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Healthcheck { ready } => return healthcheck(ready).await,
        Command::Migrate => migrate_only().await,
        Command::Serve => serve().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(ready: bool) -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("api unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = if ready { "/readyz" } else { "/healthz" };
    shared::healthcheck::run("api", settings.api_addr, path).await
}

async fn migrate_only() -> anyhow::Result<()> {
    shared::telemetry::init("info,api=info");
    let settings = Settings::from_env()?;
    migrate_with_retry(&settings.database_direct_url).await
}

async fn serve() -> anyhow::Result<()> {
    shared::telemetry::init("info,api=info,tower_http=info");
    let settings = Settings::from_env()?;
    // A certificate that does not verify stops the api here, with the reason.
    migrate_with_retry(&settings.database_direct_url).await?;
    shared::preflight::refuse_misconfigured(&settings).await?;
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr()?, "api listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("api stopped");
    shared::telemetry::shutdown();
    Ok(())
}

/// Postgres may still be starting (compose, CI): retry for a minute before giving up.
async fn migrate_with_retry(database_url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match shared::db::run_migrations(database_url).await {
            Ok(n) => {
                tracing::info!(applied = n, "database schema is current");
                return Ok(());
            }
            Err(shared::db::MigrationError::Connect(e)) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "Postgres not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("applying migrations"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
