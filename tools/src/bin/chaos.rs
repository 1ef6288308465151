//! `make chaos`: the full chaos run. Prints the table and exits non-zero unless nothing was
//! lost, stuck, double-charged or mismatched.
//!
//! Flags: `--payments N` (3000) `--workers N` (4) `--concurrency N` (32) `--kill-every-ms N`
//! (1500) `--max-kills N` (25) `--seed N` (7) `--no-postgres-restart` `--no-redis-empty`
//! `--drain-timeout-secs N` (300) `--search-lag-ms N` (60000) `--outage-ms N` (6000, longer than
//! the run's `SWEEP_AFTER_MS` of 4000) `--disconnect-every N` (25) `--late-confirm-every N` (3).

use std::time::Duration;

use tools::chaos::{self, Scenario};
use tools::stack::default_bin_dir;

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{name} needs a number")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin_dir = default_bin_dir();
    let scenario = Scenario {
        payments: flag(&args, "--payments", 3000)?,
        workers: flag(&args, "--workers", 4)?,
        concurrency: flag(&args, "--concurrency", 32)?,
        kill_every: Duration::from_millis(flag(&args, "--kill-every-ms", 1500)?),
        max_kills: flag(&args, "--max-kills", 25)?,
        seed: flag(&args, "--seed", 7)?,
        empty_redis: !args.iter().any(|a| a == "--no-redis-empty"),
        restart_postgres: !args.iter().any(|a| a == "--no-postgres-restart"),
        drain_timeout: Duration::from_secs(flag(&args, "--drain-timeout-secs", 300)?),
        search_lag: Duration::from_millis(flag(&args, "--search-lag-ms", 60_000)?),
        outage: Duration::from_millis(flag(&args, "--outage-ms", 6_000)?),
        disconnect_every: flag(&args, "--disconnect-every", 25)?,
        late_confirm_every: flag(&args, "--late-confirm-every", 3)?,
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
