//! Where the machine's time went during a measurement window, and what the services cost:
//! CPU seconds of each process group between two snapshots, peak memory, and the warnings the
//! services logged.

use std::path::Path;
use std::time::Instant;

use diesel_async::AsyncPgConnection;

use crate::procstat::{self, CpuSnapshot};
use tools::stack::Stack;

/// CPU seconds spent by each part of the deployment during one window.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSplit {
    pub wall: f64,
    pub api: f64,
    pub workers: f64,
    pub sim: f64,
    /// The Postgres backends serving this run's database (not Postgres' background writers).
    pub postgres: f64,
    /// All of redis-server, which others on this machine may share.
    pub redis: f64,
    /// This benchmark process: the load generator itself.
    pub bench: f64,
    /// Core-seconds the whole machine was busy (everyone, kernel included), waited on I/O,
    /// and had stolen by the hypervisor.
    pub machine_busy: f64,
    pub machine_iowait: f64,
    pub machine_steal: f64,
}

impl CpuSplit {
    pub fn total(&self) -> f64 {
        self.api + self.workers + self.sim + self.postgres + self.redis + self.bench
    }

    /// Cores busy on average, per part: "pg 0.92, worker 0.41, ...", largest first.
    pub fn describe(&self) -> String {
        if self.wall <= 0.0 {
            return "-".into();
        }
        let mut parts = [
            ("postgres", self.postgres),
            ("worker", self.workers),
            ("api", self.api),
            ("bench", self.bench),
            ("redis", self.redis),
            ("sim", self.sim),
        ];
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<String> = parts
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", v / self.wall))
            .collect();
        format!(
            "{:.2} cores: {} (machine busy {:.2}, I/O wait {:.2})",
            self.total() / self.wall,
            list.join(", "),
            self.machine_busy / self.wall,
            self.machine_iowait / self.wall
        )
    }

    /// Cores the whole machine kept busy on average.
    pub fn machine_cores_busy(&self) -> f64 {
        if self.wall > 0.0 {
            self.machine_busy / self.wall
        } else {
            0.0
        }
    }

    /// The part that used the most CPU, and its cores.
    pub fn busiest(&self) -> (&'static str, f64) {
        let parts = [
            ("the Postgres backends", self.postgres),
            ("the worker", self.workers),
            ("the api", self.api),
            ("the load generator", self.bench),
            ("redis-server", self.redis),
            ("stripe-sim", self.sim),
        ];
        let (name, secs) = parts
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("nothing", 0.0));
        (
            name,
            if self.wall > 0.0 {
                secs / self.wall
            } else {
                0.0
            },
        )
    }
}

struct Snap {
    at: Instant,
    api: CpuSnapshot,
    workers: CpuSnapshot,
    sim: CpuSnapshot,
    postgres: CpuSnapshot,
    redis: Option<f64>,
    bench: CpuSnapshot,
    machine: Option<procstat::MachineTicks>,
}

/// Takes a snapshot now; [`Probe::finish`] takes another and returns the difference.
pub struct Probe {
    ticks: f64,
    start: Snap,
    redis: Option<redis::aio::MultiplexedConnection>,
}

async fn snap(
    stack: &Stack,
    pg: &mut AsyncPgConnection,
    ticks: f64,
    redis: &mut Option<redis::aio::MultiplexedConnection>,
) -> Snap {
    let one = |pid: Option<u32>| procstat::snapshot(&pid.into_iter().collect::<Vec<_>>(), ticks);
    let backends = procstat::postgres_backends(pg).await.unwrap_or_default();
    let redis_cpu = match redis {
        Some(conn) => procstat::redis_cpu_seconds(conn).await,
        None => None,
    };
    Snap {
        at: Instant::now(),
        api: one(stack.api_pid()),
        workers: procstat::snapshot(&stack.worker_pids(), ticks),
        sim: one(stack.sim_pid()),
        postgres: procstat::snapshot(&backends, ticks),
        redis: redis_cpu,
        bench: one(Some(std::process::id())),
        machine: procstat::machine_ticks(),
    }
}

impl Probe {
    /// `pg`: a connection to the run's database, held by the caller.
    pub async fn start(stack: &Stack, pg: &mut AsyncPgConnection) -> Self {
        let ticks = procstat::clock_ticks();
        let mut redis = match redis::Client::open(stack.redis_url.as_str()) {
            Ok(c) => c.get_multiplexed_async_connection().await.ok(),
            Err(_) => None,
        };
        let start = snap(stack, pg, ticks, &mut redis).await;
        Self {
            ticks,
            start,
            redis,
        }
    }

    pub async fn finish(mut self, stack: &Stack, pg: &mut AsyncPgConnection) -> CpuSplit {
        let end = snap(stack, pg, self.ticks, &mut self.redis).await;
        let s = &self.start;
        CpuSplit {
            wall: (end.at - s.at).as_secs_f64(),
            api: procstat::used(&s.api, &end.api),
            workers: procstat::used(&s.workers, &end.workers),
            sim: procstat::used(&s.sim, &end.sim),
            postgres: procstat::used(&s.postgres, &end.postgres),
            redis: match (s.redis, end.redis) {
                (Some(a), Some(b)) => b - a,
                _ => 0.0,
            },
            bench: procstat::used(&s.bench, &end.bench),
            ..machine_split(s.machine, end.machine, self.ticks)
        }
    }
}

/// The machine's busy, I/O-wait and stolen core-seconds between two /proc/stat readings.
fn machine_split(
    start: Option<procstat::MachineTicks>,
    end: Option<procstat::MachineTicks>,
    ticks: f64,
) -> CpuSplit {
    let (Some(a), Some(b)) = (start, end) else {
        return CpuSplit::default();
    };
    let secs = |x: u64, y: u64| y.saturating_sub(x) as f64 / ticks;
    CpuSplit {
        machine_busy: secs(a.busy, b.busy),
        machine_iowait: secs(a.iowait, b.iowait),
        machine_steal: secs(a.steal, b.steal),
        ..CpuSplit::default()
    }
}

/// Peak resident memory (MB) of the api and of the largest worker.
pub fn peak_rss_mb(stack: &Stack) -> (f64, f64) {
    let mb = |pid: u32| procstat::peak_rss_bytes(pid).unwrap_or(0) as f64 / 1_048_576.0;
    let api = stack.api_pid().map(mb).unwrap_or(0.0);
    let worker = stack.worker_pids().into_iter().map(mb).fold(0.0, f64::max);
    (api, worker)
}

/// Warnings and errors the api and workers logged (`LOG_FORMAT=json`), with the most frequent
/// message as an example.
#[derive(Clone, Debug, Default)]
pub struct LogProblems {
    pub count: usize,
    pub example: Option<String>,
}

pub fn log_problems(log_dir: &Path) -> LogProblems {
    let mut by_message: std::collections::HashMap<String, usize> = Default::default();
    let mut count = 0;
    let files = std::fs::read_dir(log_dir).into_iter().flatten().flatten();
    for entry in files {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("api") || name.starts_with("worker")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if !(line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"")) {
                continue;
            }
            count += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            let f = &v["fields"];
            let msg = format!(
                "{} {}",
                f["message"].as_str().unwrap_or(""),
                f["error"].as_str().unwrap_or("")
            );
            *by_message
                .entry(msg.trim().chars().take(160).collect())
                .or_default() += 1;
        }
    }
    let example = by_message
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(m, n)| format!("{n}× {m}"));
    LogProblems { count, example }
}
