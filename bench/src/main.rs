//! `make bench`: measures throughput and latency against this machine's limits and writes
//! `bench/results.md` and `bench/results.svg` (see the `bench` library).
//!
//! Flags (`bench --help`): `--quick`, `--out-dir DIR`, `--only ceiling,e2e,latency,streams,burst,limit`,
//! `--configs lat0-w1-c100,...`. Needs the release binaries next to it.

use std::path::PathBuf;
use std::time::Instant;

use bench::{Bench, Options, Phases, chart, machine, report};
use clap::{Parser, ValueEnum};
use tools::stack::default_bin_dir;

/// Throughput, latency and cost of the real deployment against this machine's Postgres and
/// Redis; writes results.md and results.svg. Needs the release binaries next to it (`make
/// bench` builds them).
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    /// A few seconds per step, to check the harness (writes to target/bench-quick/ unless
    /// --out-dir is given).
    #[arg(long)]
    quick: bool,
    /// Where results.md and results.svg go (default: bench/).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Run only these parts.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Only these end-to-end runs, e.g. lat0-w1-c100,lat250-w2-c1000 (to profile one).
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// `make soak`: a steady rate for a long time, sampling what could grow; writes
    /// <out-dir>/soak.md (default bench/).
    Soak {
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// Payments per second offered.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    Ceiling,
    E2e,
    Latency,
    Streams,
    Burst,
    Limit,
}

fn options(cli: &Cli) -> (Options, PathBuf) {
    let has = |p: Part| cli.only.is_empty() || cli.only.contains(&p);
    let phases = Phases {
        ceiling: has(Part::Ceiling),
        e2e: has(Part::E2e),
        latency: has(Part::Latency),
        streams: has(Part::Streams),
        burst: has(Part::Burst),
        limit: has(Part::Limit),
    };
    let out_dir = cli.out_dir.clone().unwrap_or_else(|| {
        PathBuf::from(if cli.quick {
            "target/bench-quick"
        } else {
            "bench"
        })
    });
    let bin_dir = default_bin_dir();
    (
        Options {
            quick: cli.quick,
            phases,
            only_configs: cli.configs.clone(),
            log_dir: bin_dir.join("bench-logs"),
            bin_dir,
        },
        out_dir,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (opts, out_dir) = options(&cli);
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Read before anything starts: the load average says how quiet the machine was.
    let machine = machine::machine(&database_url, &redis_url).await;
    let bench = Bench::new(opts);
    if let Some(Command::Soak { minutes, rate }) = cli.command {
        bench.progress(&format!(
            "soak: {rate:.0}/s for {minutes:.0} min, load average {}",
            machine.load_before
        ));
        let soak = tokio::select! {
            r = bench::soak::run(&bench, minutes, rate) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        bench.cleanup_leftovers().await;
        let md = bench::soak::markdown(&soak?, minutes, rate, &machine.date);
        std::fs::create_dir_all(&out_dir)?;
        std::fs::write(out_dir.join("soak.md"), &md)?;
        println!("\n{md}");
        return Ok(());
    }
    bench.progress(&format!(
        "bench{}: {} cores, load average {}; results go to {}",
        if bench.opts.quick { " --quick" } else { "" },
        machine.cores,
        machine.load_before,
        out_dir.display()
    ));
    let started = Instant::now();
    let results = tokio::select! {
        r = bench.run() => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Whatever happened, no database or Redis key of ours stays behind (a finished run has
    // already removed its own; this catches an interrupted or failed one).
    bench.cleanup_leftovers().await;
    let results = results?;
    std::fs::create_dir_all(&out_dir)?;
    let md = report::markdown(&bench, &machine, &results, started.elapsed().as_secs_f64());
    std::fs::write(out_dir.join("results.md"), &md)?;
    std::fs::write(out_dir.join("results.svg"), chart::chart(&results))?;
    println!("\n{md}");
    bench.progress(&format!(
        "wrote {} and {}",
        out_dir.join("results.md").display(),
        out_dir.join("results.svg").display()
    ));
    Ok(())
}
