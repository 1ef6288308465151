//! To the last payment: POST for a while as fast as 32 connections go, then wait until every
//! accepted payment is final. The rate is counted from the first POST to the last payment's
//! final state, so a tail of stragglers (a payment charged late) costs what it costs, which a
//! windowed rate never shows. Beside it, in the same run: what pgbench allows for the naive
//! version of a payment (one insert and two updates by primary key, each its own commit), and
//! the CPU the deployment spent per payment.

use std::process::Stdio;
use std::time::Duration;

use crate::http::{self, Errors};
use crate::probe::{CpuSplit, Probe};
use crate::stats::{Summary, percentile};
use crate::{Bench, pg};

/// The generator's connections.
pub const CONNECTIONS: usize = 32;
/// The deployment: one worker, this many charges at once, sim latency 0.
pub const WORKER_CONCURRENCY: usize = 1000;

/// Statements at once in the write-by-write run: half of each process' pool of 16.
const WRITE_BY_WRITE_PARALLEL: usize = 8;

/// The bursts of one run and the naive ceiling measured beside them.
#[derive(Clone, Debug, Default)]
pub struct Bursts {
    /// pgbench: the naive three statements, payments/s.
    pub naive_ceiling: Option<f64>,
    /// Write by write (`WORKER_BATCH_MAX=1` and `API_INSERT_BATCH_MAX=1`, eight at once, as
    /// before group commit), then as deployed.
    pub runs: Vec<Burst>,
}

impl Bursts {
    /// The run as deployed (the default `WORKER_BATCH_MAX` and `API_INSERT_BATCH_MAX`).
    pub fn deployed(&self) -> Option<&Burst> {
        self.runs.iter().find(|b| b.batch_max.is_none())
    }

    pub fn write_by_write(&self) -> Option<&Burst> {
        self.runs.iter().find(|b| b.batch_max == Some(1))
    }
}

#[derive(Clone, Debug, Default)]
pub struct Burst {
    /// `WORKER_BATCH_MAX` and `API_INSERT_BATCH_MAX` when set (`None`: the defaults).
    pub batch_max: Option<usize>,
    pub posting: Duration,
    pub accepted: usize,
    pub post_errors: Errors,
    /// First POST to the last accepted payment's final state.
    pub to_last: Duration,
    /// Payments completed inside the posting window, per second of it (the windowed rate).
    pub windowed_per_sec: f64,
    /// Insert to final state, over every accepted payment.
    pub time_to_final: Summary,
    pub p999: Duration,
    /// Accepted payments not final when the wait ended.
    pub not_final: usize,
    pub cpu: CpuSplit,
}

impl Burst {
    pub fn per_sec(&self) -> f64 {
        self.accepted as f64 / self.to_last.as_secs_f64().max(1e-9)
    }

    /// CPU of api, worker, Postgres backends and Redis per payment, in ms (stripe-sim and the
    /// load generator excluded).
    pub fn cpu_ms_per_payment(&self) -> f64 {
        service_cpu(&self.cpu) * 1000.0 / (self.accepted.max(1) as f64)
    }
}

/// CPU seconds of the deployment's own processes: api, workers, Postgres backends and Redis.
pub fn service_cpu(c: &CpuSplit) -> f64 {
    c.api + c.workers + c.postgres + c.redis
}

pub async fn run(bench: &Bench) -> anyhow::Result<Bursts> {
    let naive_ceiling = match naive_ceiling(bench).await {
        Ok(tps) => Some(tps),
        Err(e) => {
            bench.progress(&format!("pgbench ceiling not measured: {e}"));
            None
        }
    };
    bench.progress(&format!(
        "pgbench, the naive three statements: {}",
        naive_ceiling.map_or("-".into(), |t| format!("{t:.0} payments/s"))
    ));
    let mut runs = Vec::new();
    for batch_max in [Some(1), None] {
        let extra: Vec<(&str, String)> = batch_max
            .map(|n| {
                // Each write its own statement, as many at once as the pools' halves allow:
                // the behaviour before group commit.
                [
                    ("WORKER_BATCH_MAX", n.to_string()),
                    ("API_INSERT_BATCH_MAX", n.to_string()),
                    ("WORKER_BATCH_PARALLEL", WRITE_BY_WRITE_PARALLEL.to_string()),
                    ("API_INSERT_PARALLEL", WRITE_BY_WRITE_PARALLEL.to_string()),
                ]
            })
            .into_iter()
            .flatten()
            .collect();
        let mut stack = bench
            .start_stack_with("burst", 1, 0, WORKER_CONCURRENCY, &extra)
            .await?;
        let result = measure(bench, &mut stack, batch_max).await;
        bench.teardown_checked(stack).await?;
        let b = result?;
        bench.progress(&format!(
            "to the last payment ({}): {} accepted in {:.1} s of POSTs, last final after {:.1} s: {:.0}/s (windowed {:.0}/s); time to final p50 {} p99 {} p99.9 {} max {} ms; {:.3} ms CPU per payment",
            label(&b),
            b.accepted,
            b.posting.as_secs_f64(),
            b.to_last.as_secs_f64(),
            b.per_sec(),
            b.windowed_per_sec,
            crate::stats::ms(b.time_to_final.p50),
            crate::stats::ms(b.time_to_final.p99),
            crate::stats::ms(b.p999),
            crate::stats::ms(b.time_to_final.max),
            b.cpu_ms_per_payment(),
        ));
        runs.push(b);
    }
    Ok(Bursts {
        naive_ceiling,
        runs,
    })
}

/// How the run's worker wrote: "write by write" or "group commit".
pub fn label(b: &Burst) -> &'static str {
    if b.batch_max == Some(1) {
        "write by write, `WORKER_BATCH_MAX=1`, `API_INSERT_BATCH_MAX=1`, 8 at once"
    } else {
        "group commit, as deployed"
    }
}

async fn measure(
    bench: &Bench,
    stack: &mut tools::stack::Stack,
    batch_max: Option<usize>,
) -> anyhow::Result<Burst> {
    let client = http::client()?;
    let mut conn = pg::connect(&stack.database_url).await?;
    // The write-by-write comparison posts half as long: it drains so slowly that the full
    // length would cost the bench a minute more, for the same figures per payment.
    let posting = if batch_max == Some(1) {
        bench.timing.window / 2
    } else {
        bench.timing.window
    };
    let probe = Probe::start(stack, &mut conn).await;
    let t0 = pg::now(&mut conn).await?;
    let mut run = http::closed_loop(&client, &stack.api_url, CONNECTIONS, posting).await;
    let t1 = pg::now(&mut conn).await?;
    let windowed = pg::completed_between(&mut conn, t0, t1).await? as f64 / (t1 - t0).max(1e-9);
    // Every accepted payment final, or give up after a minute.
    let left = pg::drain(&mut conn, Duration::from_secs(60)).await?;
    let cpu = probe.finish(stack, &mut conn).await;
    // The last one's final state, by Postgres' clock, from the first POST.
    let last = pg::last_update(&mut conn).await?;
    let to_last = Duration::from_secs_f64((last - t0).max(0.0));
    let mut times = pg::time_to_complete(&mut conn, &run.created).await?;
    times.sort_unstable();
    let p999 = percentile(&times, 99.9);
    Ok(Burst {
        batch_max,
        posting,
        accepted: run.created.len(),
        post_errors: std::mem::take(&mut run.errors),
        to_last,
        windowed_per_sec: windowed,
        not_final: run
            .created
            .len()
            .saturating_sub(times.len())
            .max(left as usize),
        time_to_final: Summary::of(&mut times),
        p999,
        cpu,
    })
}

/// pgbench, 32 clients for the ceiling's length, each "transaction" one payment the naive way:
/// insert a row, then update it twice by primary key, each statement its own commit, prepared
/// once per connection. In a database of its own, dropped afterwards.
pub async fn naive_ceiling(bench: &Bench) -> anyhow::Result<f64> {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("bench_naive_{}", uuid::Uuid::new_v4().simple());
    let url = shared::db::with_database(&base, &name)
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL names no database"))?;
    shared::db::create_database_if_missing(&url).await?;
    let measured = async {
        let mut conn = pg::connect(&url).await?;
        diesel_async::RunQueryDsl::execute(
            diesel::sql_query(
                "CREATE TABLE payments (id bigint PRIMARY KEY, state text NOT NULL,
                 amount bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                 updated_at timestamptz NOT NULL DEFAULT now())",
            ),
            &mut conn,
        )
        .await?;
        drop(conn);
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir)?;
        let script = dir.join("payment.sql");
        std::fs::write(
            &script,
            "\\set id random(1, 9000000000000000000)\n\
             INSERT INTO payments (id, state, amount) VALUES (:id, 'pending', 1000);\n\
             UPDATE payments SET state = 'processing', updated_at = now() WHERE id = :id;\n\
             UPDATE payments SET state = 'complete', updated_at = now() WHERE id = :id;\n",
        )?;
        let secs = bench.timing.ceiling.as_secs().max(1);
        let out = tokio::process::Command::new("pgbench")
            .args(["-n", "-M", "prepared", "-c", "32", "-j", "2", "-T"])
            .arg(secs.to_string())
            .arg("-f")
            .arg(&script)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .await?;
        let _ = std::fs::remove_dir_all(&dir);
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        parse_tps(&stdout).ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output"))
    }
    .await;
    shared::db::drop_database(&url).await?;
    measured
}

/// `tps = 3120.456 (without initial connection time)` → 3120.456.
pub fn parse_tps(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_tps() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 10.3 ms\n\
                   initial connection time = 40.1 ms\n\
                   tps = 3120.456789 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(3120.456789));
        assert_eq!(parse_tps("nothing"), None);
    }
}
