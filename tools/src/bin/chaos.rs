//! `make chaos`: the full chaos run. Prints the table and exits non-zero unless nothing was
//! lost, stuck, double-charged or mismatched.
//!
//! Flags: `chaos --help`.

use std::time::Duration;

use clap::Parser;
use tools::chaos::{self, Scenario};
use tools::stack::default_bin_dir;

/// The full chaos run (docs/reliability.md): release binaries, thousands of payments, faults,
/// worker kills, a Redis wipe and a Postgres restart; exits non-zero unless nothing was lost,
/// stuck, double-charged or mismatched with Stripe.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Cli {
    #[arg(long, default_value_t = 3000)]
    payments: usize,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// POSTs in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 1500)]
    kill_every_ms: u64,
    #[arg(long, default_value_t = 25)]
    max_kills: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    no_redis_empty: bool,
    #[arg(long)]
    no_postgres_restart: bool,
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
    /// stripe-sim's search lag (Stripe's search is not read-after-write).
    #[arg(long, default_value_t = 60_000)]
    search_lag_ms: u64,
    /// The Stripe outage, longer than the run's SWEEP_AFTER_MS of 4000.
    #[arg(long, default_value_t = 6_000)]
    outage_ms: u64,
    #[arg(long, default_value_t = 25)]
    disconnect_every: usize,
    #[arg(long, default_value_t = 3)]
    late_confirm_every: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = default_bin_dir();
    let scenario = Scenario {
        payments: cli.payments,
        workers: cli.workers,
        concurrency: cli.concurrency,
        kill_every: Duration::from_millis(cli.kill_every_ms),
        max_kills: cli.max_kills,
        seed: cli.seed,
        empty_redis: !cli.no_redis_empty,
        restart_postgres: !cli.no_postgres_restart,
        drain_timeout: Duration::from_secs(cli.drain_timeout_secs),
        search_lag: Duration::from_millis(cli.search_lag_ms),
        outage: Duration::from_millis(cli.outage_ms),
        disconnect_every: cli.disconnect_every,
        late_confirm_every: cli.late_confirm_every,
        log_dir: bin_dir.join("chaos-logs"),
        bin_dir,
    };
    println!("chaos run: {scenario:?}");
    let report = chaos::run(scenario).await?;
    println!("{}", report.table());
    if report.ok() {
        println!(
            "chaos: every payment final, none lost, none charged twice, all agree with Stripe"
        );
        Ok(())
    } else {
        anyhow::bail!("chaos: the promise was broken (see the table above)")
    }
}
