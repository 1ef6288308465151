//! The `worker` binary: `worker` (or `worker run`) refuses to start on a schema that is behind,
//! then runs until SIGINT or SIGTERM; `worker healthcheck` probes a running worker. Arguments
//! are parsed first: `--help` and `--version` wait for no database.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::settings::Settings;

/// The payments worker: takes StripeCharge jobs off Redis and charges them through Stripe,
/// recording every outcome in Postgres; also sweeps lost jobs, reconciles with Stripe and
/// delivers the merchant's webhooks.
///
/// Configured by the environment (README, .env.example); `NAME_FILE` reads a secret from a
/// file.
#[derive(Debug, Parser)]
#[command(name = "worker", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run until SIGINT or SIGTERM (the default); the schema must be current.
    Run,
    /// Exit 0 when the worker answers `GET /healthz` on WORKER_METRICS_ADDR, else 1: for
    /// container healthchecks.
    Healthcheck,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return healthcheck().await;
    }
    // On a worker thread of the runtime, not the main thread `main` blocks on: apalis polls the
    // jobs inside the consumer's own future, and every Stripe, Postgres and Redis answer they
    // wait for comes in on a worker thread, which would otherwise wake the main thread for it.
    match tokio::spawn(run()).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("Error: the worker's task ended: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck() -> ExitCode {
    match Settings::from_env() {
        Ok(s) => match s.worker.metrics_addr {
            Some(addr) => shared::healthcheck::run("worker", addr, "/healthz").await,
            None => {
                eprintln!("worker healthcheck needs WORKER_METRICS_ADDR (it is off)");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("worker unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    shared::telemetry::init("info,worker=info,apalis=warn");
    let settings = Settings::from_env()?;
    worker::startup::ensure_schema_current(&settings.database_direct_url).await?;
    shared::preflight::refuse_misconfigured(&settings).await?;
    let app = worker::startup::Application::build(settings).await?;
    let result = app.run_until_stopped(shutdown_signal()).await;
    shared::telemetry::shutdown();
    result
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
