//! `stripe-sim` binary: serves the simulator on `STRIPE_SIM_ADDR` until SIGINT/SIGTERM;
//! `stripe-sim healthcheck` probes a running one.
//!
//! Configuration (flags win over the environment):
//! - `--addr ADDR` / `STRIPE_SIM_ADDR` (default `127.0.0.1:12111`)
//! - `--faults JSON` / `STRIPE_SIM_FAULTS`, e.g. `{"seed":1,"drop_after":0.1}`
//! - `--idempotency-ttl-secs N` / `STRIPE_SIM_IDEMPOTENCY_TTL_SECS` (default 86400)
//! - `STRIPE_SIM_WEBHOOK_URL` and `STRIPE_SIM_WEBHOOK_SECRET`: where webhook events go and the
//!   secret they are signed with; without both, none are sent
//! - `RUST_LOG` for log filtering (default `info`)

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stripe_sim::{Config, Faults, Sim};
use tracing_subscriber::EnvFilter;

/// A Stripe stand-in for tests and development: PaymentIntents as Stripe documents them, test
/// cards, 3-D Secure, idempotency, search lag, faults and signed webhooks.
///
/// STRIPE_SIM_WEBHOOK_URL and STRIPE_SIM_WEBHOOK_SECRET: where webhook events go and the
/// secret they are signed with (without both, none are sent).
#[derive(Debug, Parser)]
#[command(name = "stripe-sim", version)]
struct Options {
    /// Where to listen.
    #[arg(long, env = "STRIPE_SIM_ADDR", default_value = "127.0.0.1:12111")]
    addr: String,
    /// Faults to inject, as JSON, e.g. `{"seed":1,"drop_after":0.1}`.
    #[arg(long, env = "STRIPE_SIM_FAULTS")]
    faults: Option<String>,
    /// How long an idempotency key is remembered (default 86400, Stripe's 24 hours).
    #[arg(long = "idempotency-ttl-secs", env = "STRIPE_SIM_IDEMPOTENCY_TTL_SECS")]
    ttl: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGINT or SIGTERM (the default).
    Serve,
    /// Exit 0 when the simulator on --addr answers, else 1: for container healthchecks.
    Healthcheck,
}

/// `GET /sim/stats` on the simulator's own address (a wildcard one on loopback).
async fn healthcheck(addr: &str) -> ExitCode {
    let probe = addr
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build();
    let answer = match client {
        Ok(c) => c.get(format!("http://{probe}/sim/stats")).send().await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(r) if r.status().is_success() => {
            println!("stripe-sim healthy ({probe})");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("stripe-sim unhealthy: {probe} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("stripe-sim unhealthy: {probe}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config(opts: &Options) -> Result<Config, String> {
    let faults = match opts.faults.as_deref().filter(|f| !f.trim().is_empty()) {
        None => Faults::default(),
        Some(json) => serde_json::from_str::<Faults>(json).map_err(|e| format!("faults: {e}"))?,
    };
    faults.validate()?;
    let idempotency_ttl_secs = match &opts.ttl {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| format!("idempotency TTL: not a number: {s}"))?,
    };
    // `NAME_FILE` (a mounted secret) stands in for an unset `NAME`.
    let env = |name: &str| {
        let set = |n: &str| std::env::var(n).ok().filter(|s| !s.trim().is_empty());
        set(name).or_else(|| {
            let path = set(&format!("{name}_FILE"))?;
            let contents = std::fs::read_to_string(path.trim()).ok()?;
            Some(contents.trim_end_matches(['\n', '\r']).to_owned())
        })
    };
    Ok(Config {
        faults,
        idempotency_ttl_secs,
        webhook_url: env("STRIPE_SIM_WEBHOOK_URL"),
        webhook_secret: env("STRIPE_SIM_WEBHOOK_SECRET"),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let opts = Options::parse();
    if let Some(Command::Healthcheck) = opts.command {
        return healthcheck(&opts.addr).await;
    }
    let config = match config(&opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stripe-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&opts.addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %opts.addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(opts.addr.clone());
    tracing::info!(%addr, faults = ?config.faults, "stripe-sim listening");
    match Sim::new(config).serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}
