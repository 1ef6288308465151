//! `stripe-sim` binary: serves the simulator on `STRIPE_SIM_ADDR` until SIGINT/SIGTERM.
//!
//! Configuration (flags win over the environment):
//! - `--addr ADDR` / `STRIPE_SIM_ADDR` (default `127.0.0.1:12111`)
//! - `--faults JSON` / `STRIPE_SIM_FAULTS`, e.g. `{"seed":1,"drop_after":0.1}`
//! - `--idempotency-ttl-secs N` / `STRIPE_SIM_IDEMPOTENCY_TTL_SECS` (default 86400)
//! - `STRIPE_SIM_WEBHOOK_URL` and `STRIPE_SIM_WEBHOOK_SECRET`: where webhook events go and the
//!   secret they are signed with; without both, none are sent
//! - `RUST_LOG` for log filtering (default `info`)

use std::process::ExitCode;

use stripe_sim::{Config, Faults, Sim};
use tracing_subscriber::EnvFilter;

struct Options {
    addr: String,
    faults: Option<String>,
    ttl: Option<String>,
}

fn options() -> Result<Options, String> {
    let mut opts = Options {
        addr: std::env::var("STRIPE_SIM_ADDR").unwrap_or_else(|_| "127.0.0.1:12111".to_owned()),
        faults: std::env::var("STRIPE_SIM_FAULTS")
            .ok()
            .filter(|s| !s.trim().is_empty()),
        ttl: std::env::var("STRIPE_SIM_IDEMPOTENCY_TTL_SECS").ok(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => opts.addr = value()?,
            "--faults" => opts.faults = Some(value()?),
            "--idempotency-ttl-secs" => opts.ttl = Some(value()?),
            "-h" | "--help" => {
                return Err("usage: stripe-sim [--addr HOST:PORT] [--faults JSON] \
                            [--idempotency-ttl-secs N]"
                    .to_owned());
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(opts)
}

fn config(opts: &Options) -> Result<Config, String> {
    let faults = match &opts.faults {
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
    let env = |name| {
        std::env::var(name)
            .ok()
            .filter(|s: &String| !s.trim().is_empty())
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
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("stripe-sim: {e}");
            return ExitCode::from(2);
        }
    };
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
