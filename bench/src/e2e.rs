//! End-to-end throughput: payments per second from POST to `complete` through the real api,
//! worker processes and stripe-sim, with a backlog held so workers never wait for work.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::http::{self, BacklogGate, Errors};
use crate::probe::{self, CpuSplit, LogProblems, Probe};
use crate::{Bench, pg};
use shared::state_machine::TxState;
use tools::stack::Stack;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub sim_latency_ms: u64,
    pub workers: usize,
    pub concurrency: usize,
}

impl Config {
    /// Charges that can be in flight at once across the workers.
    pub fn slots(&self) -> usize {
        self.workers * self.concurrency
    }

    /// What concurrency ÷ latency allows (no bound at latency 0).
    pub fn latency_bound(&self) -> Option<f64> {
        (self.sim_latency_ms > 0)
            .then(|| self.slots() as f64 / (self.sim_latency_ms as f64 / 1000.0))
    }

    pub fn label(&self) -> String {
        format!(
            "lat{}-w{}-c{}",
            self.sim_latency_ms, self.workers, self.concurrency
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct Throughput {
    pub window: f64,
    /// Payments that became `complete` in the window, per Postgres.
    pub completed: i64,
    /// Payments inserted in the window.
    pub accepted: i64,
    pub backlog_min: i64,
    pub backlog_avg: f64,
    pub post_errors: Errors,
    pub logged: LogProblems,
    pub cpu: CpuSplit,
    pub api_rss_mb: f64,
    pub worker_rss_mb: f64,
    /// Over the whole run: complete payments, Stripe requests and connections.
    pub total_complete: i64,
    pub sim_requests: u64,
    pub sim_connections: u64,
    /// Rows not `complete` after the run (none are expected: every card succeeds).
    pub failed: i64,
    /// Worker processes that exited during the run (none are expected).
    pub workers_exited: usize,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        if self.window > 0.0 {
            self.completed as f64 / self.window
        } else {
            0.0
        }
    }

    /// Worker CPU seconds per 1,000 payments completed in the window.
    pub fn worker_cpu_per_1000(&self) -> f64 {
        per_1000(self.cpu.workers, self.completed)
    }

    /// api CPU seconds per 1,000 payments accepted in the window.
    pub fn api_cpu_per_1000(&self) -> f64 {
        per_1000(self.cpu.api, self.accepted)
    }

    pub fn connections_per_payment(&self) -> f64 {
        if self.total_complete > 0 {
            self.sim_connections as f64 / self.total_complete as f64
        } else {
            0.0
        }
    }
}

struct StopOnDrop(Arc<BacklogGate>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

fn per_1000(secs: f64, n: i64) -> f64 {
    if n > 0 { secs * 1000.0 / n as f64 } else { 0.0 }
}

pub async fn run(bench: &Bench, cfg: Config) -> anyhow::Result<Throughput> {
    let mut stack = bench
        .start_stack(
            &cfg.label(),
            cfg.workers,
            cfg.sim_latency_ms,
            cfg.concurrency,
        )
        .await?;
    let result = measure(bench, &stack, cfg).await;
    // A worker that died (a crash, or something outside killing it) is reported with the run,
    // not hidden; the grid goes on, so one lost process does not cost the whole benchmark.
    let exited = stack.workers_exited();
    bench.teardown(stack).await?;
    result.map(|t| Throughput {
        workers_exited: exited,
        ..t
    })
}

async fn measure(bench: &Bench, stack: &Stack, cfg: Config) -> anyhow::Result<Throughput> {
    let timing = &bench.timing;
    // Connect before the load starts: under load the services' pools may take every
    // connection Postgres allows, and the counting must not be the one refused.
    let mut conn = pg::connect(&stack.database_url).await?;
    let mut monitor_conn = pg::connect(&stack.database_url).await?;
    let target = (2 * cfg.slots()).max(1000) as i64;
    let gate = Arc::new(BacklogGate::default());
    // However this function returns, the generator and the monitor stop with it.
    let _stop = StopOnDrop(gate.clone());
    let samples = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let monitor = tokio::spawn({
        let (gate, samples, measuring) = (gate.clone(), samples.clone(), measuring.clone());
        async move {
            let conn = &mut monitor_conn;
            while !gate.stop.load(Ordering::Relaxed) {
                let accepted = gate.accepted.load(Ordering::Relaxed);
                let n = pg::unfinished(conn).await?;
                gate.unfinished.store(n, Ordering::Relaxed);
                gate.accepted_at_count.store(accepted, Ordering::Relaxed);
                if measuring.load(Ordering::Relaxed)
                    && let Ok(mut s) = samples.lock()
                {
                    s.push(n);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        }
    });
    let load = tokio::spawn(http::hold_backlog(
        http::client()?,
        stack.api_url.clone(),
        32,
        target,
        gate.clone(),
    ));

    // Warm up: at least `warmup`, longer (up to twice) while the backlog is still filling.
    let started = Instant::now();
    while started.elapsed() < timing.warmup
        || (started.elapsed() < 2 * timing.warmup && gate.estimate() < target / 2)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let probe = Probe::start(stack, &mut conn).await;
    let t0 = pg::now(&mut conn).await?;
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(timing.window).await;
    let t1 = pg::now(&mut conn).await?;
    measuring.store(false, Ordering::Relaxed);
    let cpu = probe.finish(stack, &mut conn).await;
    let (api_rss_mb, worker_rss_mb) = probe::peak_rss_mb(stack);
    gate.stop.store(true, Ordering::Relaxed);
    let load = load.await?;
    monitor.await??;

    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let stats: serde_json::Value = reqwest::get(format!("{}/sim/stats", stack.sim_url))
        .await?
        .json()
        .await?;
    Ok(Throughput {
        window: t1 - t0,
        completed: pg::completed_between(&mut conn, t0, t1).await?,
        accepted: pg::created_between(&mut conn, t0, t1).await?,
        backlog_min: samples.iter().copied().min().unwrap_or(0),
        backlog_avg: samples.iter().sum::<i64>() as f64 / samples.len().max(1) as f64,
        post_errors: load.errors,
        logged: probe::log_problems(stack.log_dir()),
        cpu,
        api_rss_mb,
        worker_rss_mb,
        total_complete: pg::count_state(&mut conn, TxState::Complete).await?,
        failed: pg::count_state(&mut conn, TxState::Failed).await?,
        sim_requests: stats["requests"].as_u64().unwrap_or(0),
        sim_connections: stats["connections"].as_u64().unwrap_or(0),
        workers_exited: 0,
    })
}
