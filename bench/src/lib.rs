//! `make bench`: throughput and latency of the real deployment, measured against what this
//! machine's Postgres and Redis allow.
//!
//! - [`ceiling`]: payments/s Postgres alone allows for the statements one payment costs; jobs/s
//!   through the Redis queue.
//! - [`e2e`]: payments/s from POST to `complete` through api, workers and stripe-sim, at
//!   stripe-sim latency 0 and 250 ms, one and two workers, up to 1,000 charges in flight each.
//! - [`latency`]: POST and GET latency at fixed offered rates (open loop), five runs at 1,000/s
//!   and `hey` beside them; time to `complete`.
//! - [`burst`]: to the last payment: a burst of POSTs, then until every payment is final;
//!   pgbench's ceiling for the naive three statements; CPU per payment.
//! - [`limit`]: at Stripe's real rate limit, new payments beside a backlog of background work.
//! - [`streams`]: what 1,000 open checkout pages (event streams) cost Postgres and the api.
//! - [`soak`]: `make soak`, a steady rate for half an hour: what grows.
//! - [`http`]: the load generators; [`pg`]: what is counted in Postgres; [`probe`] and
//!   [`procstat`]: CPU, memory and logged warnings of each process; [`profile`]: where
//!   Postgres' time goes, from `perf`; [`stats`]: percentiles.
//! - [`report`] writes `results.md` (with [`machine`]: what it ran on; [`targets`]: held or
//!   missed, and why), [`chart`] draws `results.svg` with [`svg`].
//!
//! Every deployment gets its own database and Redis namespace (via [`tools::stack`]), removed
//! after its run, and also when the run is interrupted ([`Bench::cleanup_leftovers`]).

pub mod burst;
pub mod ceiling;
pub mod chart;
pub mod e2e;
pub mod http;
pub mod latency;
pub mod limit;
pub mod machine;
pub mod markdown;
pub mod pg;
pub mod probe;
pub mod procstat;
pub mod profile;
pub mod report;
pub mod soak;
pub mod stats;
pub mod streams;
pub mod svg;
pub mod targets;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tools::stack::{Stack, StackConfig};

/// How long each part runs. The full run is what `make bench` does; `--quick` checks the
/// harness in about two minutes.
#[derive(Clone, Debug)]
pub struct Timing {
    pub ceiling: Duration,
    /// The diagnostic variants of the Postgres ceiling: shorter, they only show a cost.
    pub ceiling_variant: Duration,
    pub warmup: Duration,
    pub window: Duration,
    pub step: Duration,
    pub ttf: Duration,
    pub drain: Duration,
}

impl Timing {
    pub fn full() -> Self {
        Self {
            ceiling: Duration::from_secs(10),
            ceiling_variant: Duration::from_secs(5),
            warmup: Duration::from_secs(3),
            window: Duration::from_secs(20),
            step: Duration::from_secs(5),
            ttf: Duration::from_secs(10),
            drain: Duration::from_secs(5),
        }
    }

    pub fn quick() -> Self {
        Self {
            ceiling: Duration::from_secs(2),
            ceiling_variant: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(3),
            step: Duration::from_secs(2),
            ttf: Duration::from_secs(3),
            drain: Duration::from_secs(2),
        }
    }
}

/// Which parts to run (all by default; `--only` picks some while working on the harness).
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    pub ceiling: bool,
    pub e2e: bool,
    pub latency: bool,
    pub streams: bool,
    pub burst: bool,
    pub limit: bool,
}

pub struct Options {
    pub quick: bool,
    pub phases: Phases,
    /// Only these end-to-end runs (labels like `lat0-w1-c100`); all when empty. For profiling
    /// one configuration, or re-measuring it.
    pub only_configs: Vec<String>,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
}

/// Concurrent loops (and pool size) of the ceiling measurement.
pub const CEILING_TASKS: usize = 32;

/// The end-to-end grid: one and two workers at sim latency 0, and the latency-bound runs at
/// 250 ms (what 1,000 charges in flight sustain, and the worker's memory with them).
pub fn e2e_grid() -> Vec<e2e::Config> {
    [
        (0, 1, 100),
        (0, 1, 1000),
        (0, 2, 1000),
        (250, 1, 1000),
        (250, 2, 1000),
    ]
    .into_iter()
    .map(|(sim_latency_ms, workers, concurrency)| e2e::Config {
        sim_latency_ms,
        workers,
        concurrency,
    })
    .collect()
}

/// Deployments started and not yet torn down: what an interrupted run must remove.
#[derive(Clone, Debug)]
struct Leftover {
    database_url: String,
    redis_url: String,
    namespace: String,
}

pub struct Bench {
    pub opts: Options,
    pub timing: Timing,
    live: Mutex<Vec<Leftover>>,
    started: Instant,
}

#[derive(Debug, Default)]
pub struct Results {
    pub ceiling: Option<ceiling::Ceiling>,
    pub e2e: Vec<(e2e::Config, e2e::Throughput)>,
    pub latency: Option<latency::Results>,
    pub streams: Option<streams::Streams>,
    pub burst: Option<burst::Bursts>,
    pub at_limit: Option<limit::AtLimit>,
}

impl Results {
    /// Payments per second Postgres alone allows (0 when the ceiling was not measured).
    pub fn ceiling_pg(&self) -> f64 {
        self.ceiling
            .as_ref()
            .map_or(0.0, |c| c.postgres.rate.per_sec())
    }
}

impl Bench {
    pub fn new(opts: Options) -> Self {
        let timing = if opts.quick {
            Timing::quick()
        } else {
            Timing::full()
        };
        Self {
            opts,
            timing,
            live: Mutex::new(Vec::new()),
            started: Instant::now(),
        }
    }

    pub fn progress(&self, line: &str) {
        println!("[{:>5.0} s] {line}", self.started.elapsed().as_secs_f64());
    }

    /// A deployment of its own: release binaries, warnings-only JSON logs, no Stripe rate limit.
    pub async fn start_stack(
        &self,
        name: &str,
        workers: usize,
        sim_latency_ms: u64,
        concurrency: usize,
    ) -> anyhow::Result<Stack> {
        self.start_stack_with(name, workers, sim_latency_ms, concurrency, &[])
            .await
    }

    /// [`Bench::start_stack`] with more environment (which wins).
    pub async fn start_stack_with(
        &self,
        name: &str,
        workers: usize,
        sim_latency_ms: u64,
        concurrency: usize,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Stack> {
        let env = [
            ("RUST_LOG", "warn".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("STRIPE_RATE_LIMIT", "0".to_owned()),
            // The generator is one client standing for many: the api's per-client limit on
            // POST /transactions would measure itself.
            ("RATE_LIMIT_PER_MINUTE", "0".to_owned()),
            ("WORKER_POLL_INTERVAL_MS", "20".to_owned()),
            ("WORKER_CONCURRENCY", concurrency.to_string()),
            // Runs are shorter than this, so the sweeper never re-enqueues a payment that is
            // merely waiting in the backlog (that would add duplicate jobs to the measurement).
            ("SWEEP_AFTER_MS", "120000".to_owned()),
        ];
        let stack = Stack::start(StackConfig {
            apis: 1,
            pooler_port: None,
            database_url: None,
            bin_dir: self.opts.bin_dir.clone(),
            log_dir: self.opts.log_dir.join(name),
            workers,
            sim_faults: serde_json::json!({ "latency_ms": sim_latency_ms }),
            env: env
                .iter()
                .chain(extra.iter())
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            redis_url: None,
            webhooks: false,
        })
        .await?;
        if let Ok(mut live) = self.live.lock() {
            live.push(Leftover {
                database_url: stack.database_url.clone(),
                redis_url: stack.redis_url.clone(),
                namespace: stack.namespace.clone(),
            });
        }
        Ok(stack)
    }

    pub async fn teardown(&self, stack: Stack) -> anyhow::Result<()> {
        let db = stack.database_url.clone();
        stack.teardown().await?;
        if let Ok(mut live) = self.live.lock() {
            live.retain(|l| l.database_url != db);
        }
        Ok(())
    }

    /// Tears down, and fails the run if a worker died by itself during it: its figures would
    /// describe a deployment that was not running (e.g. a worker refusing an old schema).
    pub async fn teardown_checked(&self, mut stack: Stack) -> anyhow::Result<()> {
        let exited = stack.workers_exited();
        let logs = stack.log_dir().to_owned();
        self.teardown(stack).await?;
        anyhow::ensure!(
            exited == 0,
            "{exited} worker process(es) exited during the run; see the logs in {}",
            logs.display()
        );
        Ok(())
    }

    /// Drops the databases and Redis keys of deployments an interrupted run left (their
    /// processes die with the run: the stack starts them with kill-on-drop).
    pub async fn cleanup_leftovers(&self) {
        let left: Vec<Leftover> = self
            .live
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        for l in left {
            if let Err(e) = remove(&l).await {
                eprintln!("could not remove {}: {e}", l.database_url);
            }
        }
    }

    pub async fn run(&self) -> anyhow::Result<Results> {
        let mut results = Results::default();
        let p = self.opts.phases;
        if p.ceiling {
            results.ceiling = Some(ceiling::run(self).await?);
        }
        if p.e2e {
            let wanted = |c: &e2e::Config| {
                let o = &self.opts.only_configs;
                o.is_empty() || o.contains(&c.label())
            };
            for cfg in e2e_grid().into_iter().filter(wanted) {
                let t = e2e::run(self, cfg).await?;
                self.progress(&format!(
                    "e2e sim {:>3} ms, {} worker(s) × {:>4}: {:>7.1} payments/s (backlog avg {:.0}, POST errors {}, logged warnings {}, workers exited {}) {}",
                    cfg.sim_latency_ms,
                    cfg.workers,
                    cfg.concurrency,
                    t.per_sec(),
                    t.backlog_avg,
                    t.post_errors,
                    t.logged.count,
                    t.workers_exited,
                    t.cpu.describe()
                ));
                results.e2e.push((cfg, t));
            }
        }
        if p.burst {
            results.burst = Some(burst::run(self).await?);
        }
        if p.latency {
            results.latency = Some(latency::run(self).await?);
        }
        if p.limit {
            results.at_limit = Some(limit::run(self).await?);
        }
        if p.streams {
            results.streams = Some(streams::run(self).await?);
        }
        Ok(results)
    }
}

async fn remove(l: &Leftover) -> anyhow::Result<()> {
    shared::db::drop_database(&l.database_url).await?;
    let client = redis::Client::open(l.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    shared::queue::cleanup::remove_namespace(&mut conn, &l.namespace).await?;
    Ok(())
}
