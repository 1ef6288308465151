//! The `api` binary: `api` serves (after applying pending migrations), `api migrate` applies
//! them and exits.

use std::time::{Duration, Instant};

use anyhow::Context;
use api::startup::Application;
use shared::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init("info,api=info,tower_http=info");
    let settings = Settings::from_env()?;
    let command = std::env::args().nth(1);

    // A certificate that does not verify stops the api here, with the reason.
    migrate_with_retry(&settings.database_direct_url).await?;
    match command.as_deref() {
        None | Some("serve") => {}
        Some("migrate") => return Ok(()),
        Some(other) => anyhow::bail!("unknown command `{other}`: use `api` or `api migrate`"),
    }

    shared::preflight::refuse_misconfigured(&settings).await?;
    let app = Application::build(settings).await?;
    tracing::info!(addr = %app.local_addr()?, "api listening");
    app.run_until_stopped(shutdown_signal()).await?;
    tracing::info!("api stopped");
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
