//! `make bench`: measures throughput and latency against this machine's limits and writes
//! `bench/results.md` and `bench/results.svg` (see the `bench` library).
//!
//! Flags: `--quick` (a few seconds per step, to check the harness; writes to
//! `target/bench-quick/` unless `--out-dir` is given), `--out-dir DIR` (default `bench`),
//! `--only ceiling,e2e,latency,streams` (some parts only), `--configs lat0-w1-c100,...` (some
//! end-to-end runs only, e.g. to profile one). Needs the release binaries next to it.

use std::path::PathBuf;
use std::time::Instant;

use bench::{Bench, Options, Phases, chart, machine, report};
use tools::stack::default_bin_dir;

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).map(String::as_str)
}

fn options(args: &[String]) -> anyhow::Result<(Options, PathBuf)> {
    let quick = args.iter().any(|a| a == "--quick");
    let phases = match value(args, "--only") {
        None => Phases {
            ceiling: true,
            e2e: true,
            latency: true,
            streams: true,
        },
        Some(list) => {
            let has = |p: &str| list.split(',').any(|x| x.trim() == p);
            if let Some(bad) = list
                .split(',')
                .find(|x| !["ceiling", "e2e", "latency", "streams"].contains(&x.trim()))
            {
                anyhow::bail!("--only: unknown part `{bad}` (ceiling, e2e, latency, streams)");
            }
            Phases {
                ceiling: has("ceiling"),
                e2e: has("e2e"),
                latency: has("latency"),
                streams: has("streams"),
            }
        }
    };
    let out_dir = value(args, "--out-dir").map_or_else(
        || PathBuf::from(if quick { "target/bench-quick" } else { "bench" }),
        PathBuf::from,
    );
    let bin_dir = default_bin_dir();
    Ok((
        Options {
            quick,
            phases,
            only_configs: value(args, "--configs")
                .map(|v| v.split(',').map(|c| c.trim().to_owned()).collect())
                .unwrap_or_default(),
            log_dir: bin_dir.join("bench-logs"),
            bin_dir,
        },
        out_dir,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: bench [--quick] [--out-dir DIR] [--only ceiling,e2e,latency,streams] \
             [--configs lat0-w1-c100,lat250-w2-c1000,...]"
        );
        return Ok(());
    }
    let (opts, out_dir) = options(&args)?;
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Read before anything starts: the load average says how quiet the machine was.
    let machine = machine::machine(&database_url, &redis_url).await;
    let bench = Bench::new(opts);
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
