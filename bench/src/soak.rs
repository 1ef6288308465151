//! `make soak`: a steady 200 payments/s for 30 minutes (`--minutes`, `--rate`) through one api
//! and one worker, with the workers' purge of finished jobs on a short age, sampling every 30 s
//! what could grow without bound: the api's and the worker's resident memory, the queue's
//! finished jobs in Redis and Redis' memory, Postgres connections, the ready queue, and what
//! Postgres holds per payment (rows, indexes, events). Writes `bench/soak.md`; not part of
//! `make test` or `make bench`.

use std::fmt::Write;
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use shared::queue::keys::Keys;

use crate::Bench;
use crate::http::{self, Request};
use crate::markdown::{header, row};
use crate::procstat::rss_bytes;

/// How often the growth is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(30);
/// The purge age in the soak: finished jobs older than this go (the default is a day).
pub const RETENTION: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at_secs: f64,
    pub offered: u64,
    pub errors: u64,
    pub api_rss: u64,
    pub worker_rss: u64,
    pub redis_used: u64,
    pub done_jobs: u64,
    pub job_data: u64,
    pub ready: u64,
    pub pg_connections: i64,
    pub payments: i64,
    pub pg_bytes: i64,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn scalar(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<i64> {
    let n: N = diesel::sql_query(sql).get_result(conn).await?;
    Ok(n.n)
}

/// Every table and index of the payments, in bytes.
const PG_BYTES: &str = "SELECT (pg_total_relation_size('transactions') \
     + pg_total_relation_size('payment_events') + pg_total_relation_size('webhook_deliveries') \
     + pg_total_relation_size('webhook_attempts') + pg_total_relation_size('stripe_events') \
     + pg_total_relation_size('discrepancies') + pg_total_relation_size('checkout_sessions'))::bigint AS n";

/// What a soak measured, and whether it had to stand in for autovacuum.
pub struct Soak {
    pub samples: Vec<Sample>,
    /// The machine's Postgres runs with `autovacuum = off` (a CI configuration): the soak then
    /// vacuums the payments' tables every [`VACUUM_EVERY`], as autovacuum would in a deployment.
    /// Without it every update leaves a dead row behind for good, and the claims slow down as
    /// the table fills with them (a 30-minute run: 479,251 dead rows beside 221,405 live ones
    /// after 18 minutes, claims taking 0.2-0.4 s, the ready queue growing past 4,000).
    pub vacuumed: bool,
}

/// How often the soak vacuums when the server's autovacuum is off.
pub const VACUUM_EVERY: Duration = Duration::from_secs(30);

/// The tables a payment updates or appends to.
const VACUUM: &str = "VACUUM (ANALYZE) transactions, payment_events, webhook_deliveries";

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    setting: String,
}

pub async fn run(bench: &Bench, minutes: f64, rate: f64) -> anyhow::Result<Soak> {
    let extra = [
        ("DONE_JOB_RETENTION_MS", RETENTION.as_millis().to_string()),
        ("DONE_JOB_PURGE_INTERVAL_MS", "10000".to_owned()),
        // A soak is long: the sweeper must work as deployed.
        ("SWEEP_AFTER_MS", "30000".to_owned()),
    ];
    let stack = bench.start_stack_with("soak", 1, 0, 100, &extra).await?;
    let mut conn = crate::pg::connect(&stack.database_url).await?;
    let autovacuum: Setting =
        diesel::sql_query("SELECT setting FROM pg_settings WHERE name = 'autovacuum'")
            .get_result(&mut conn)
            .await?;
    let vacuumed = autovacuum.setting == "off";
    let vacuum = vacuumed.then(|| {
        bench.progress("this Postgres runs with autovacuum = off: the soak vacuums in its place");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(VACUUM_EVERY).await;
                if let Err(e) = diesel::sql_query(VACUUM).execute(&mut conn).await {
                    eprintln!("soak: vacuum failed: {e}");
                }
            }
        })
    });
    let result = measure(bench, &stack, minutes, rate).await;
    if let Some(task) = vacuum {
        task.abort();
    }
    bench.teardown_checked(stack).await?;
    Ok(Soak {
        samples: result?,
        vacuumed,
    })
}

async fn measure(
    bench: &Bench,
    stack: &tools::stack::Stack,
    minutes: f64,
    rate: f64,
) -> anyhow::Result<Vec<Sample>> {
    let client = http::client()?;
    let mut conn = crate::pg::connect(&stack.database_url).await?;
    let redis = redis::Client::open(stack.redis_url.as_str())?;
    let mut rconn = redis.get_multiplexed_async_connection().await?;
    let keys = Keys::new(&stack.namespace);
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut samples = Vec::new();
    let (mut offered, mut errors) = (0, 0);
    while started.elapsed() < total {
        let chunk = SAMPLE_EVERY.min(total.saturating_sub(started.elapsed()));
        let run = http::open_loop(&client, &stack.api_url, Request::Post, rate, chunk).await;
        offered += run.offered;
        errors += run.errors.total();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut rconn)
            .await?;
        let redis_used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let (done_jobs, job_data, ready): (u64, u64, u64) = redis::pipe()
            .cmd("SCARD")
            .arg(keys.done())
            .cmd("HLEN")
            .arg(keys.data())
            .cmd("LLEN")
            .arg(keys.active())
            .query_async(&mut rconn)
            .await?;
        let s = Sample {
            at_secs: started.elapsed().as_secs_f64(),
            offered,
            errors,
            api_rss: stack.api_pid().and_then(rss_bytes).unwrap_or(0),
            worker_rss: stack
                .worker_pids()
                .into_iter()
                .next()
                .and_then(rss_bytes)
                .unwrap_or(0),
            redis_used,
            done_jobs,
            job_data,
            ready,
            pg_connections: scalar(
                &mut conn,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()",
            )
            .await?,
            payments: scalar(&mut conn, "SELECT count(*) AS n FROM transactions").await?,
            pg_bytes: scalar(&mut conn, PG_BYTES).await?,
        };
        bench.progress(&format!(
            "soak {:>5.0} s: {} offered, {} errors; api {:.1} MB, worker {:.1} MB; done jobs {}, job data {}, ready {}; Redis {:.1} MB; Postgres {} connections, {} payments, {:.0} bytes each",
            s.at_secs,
            s.offered,
            s.errors,
            s.api_rss as f64 / 1e6,
            s.worker_rss as f64 / 1e6,
            s.done_jobs,
            s.job_data,
            s.ready,
            s.redis_used as f64 / 1e6,
            s.pg_connections,
            s.payments,
            per_payment(&s)
        ));
        samples.push(s);
    }
    Ok(samples)
}

fn per_payment(s: &Sample) -> f64 {
    if s.payments > 0 {
        s.pg_bytes as f64 / s.payments as f64
    } else {
        0.0
    }
}

/// Whether a series stayed flat: the mean of its last third within 20 % (plus `slack`) of the
/// mean of its second third (the first third is warm-up).
pub fn flat(values: &[f64], slack: f64) -> bool {
    if values.len() < 3 {
        return true;
    }
    let third = values.len() / 3;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let middle = mean(&values[third..2 * third]);
    let last = mean(&values[2 * third..]);
    last <= middle * 1.2 + slack
}

pub fn markdown(soak: &Soak, minutes: f64, rate: f64, date: &str) -> String {
    let samples = &soak.samples[..];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Soak\n\nWritten by `make soak` on {date}: {rate:.0} payments/s offered for {minutes:.0} \
         minutes through one api and one worker (stripe-sim latency 0), finished jobs purged by \
         the worker once older than {} s (`DONE_JOB_RETENTION_MS`; the default is a day). A \
         sample every {} s.\n",
        RETENTION.as_secs(),
        SAMPLE_EVERY.as_secs()
    );
    if soak.vacuumed {
        let _ = writeln!(
            out,
            "This machine's Postgres runs with `autovacuum = off`, which no deployment should \
             (docs/operations.md, \"Vacuum\"): the soak ran `{VACUUM}` every {} s in its place.\n",
            VACUUM_EVERY.as_secs()
        );
    }
    header(
        &mut out,
        &[
            "s",
            "offered",
            "errors",
            "api MB",
            "worker MB",
            "done jobs",
            "job data",
            "ready",
            "Redis MB",
            "PG conns",
            "payments",
            "PG bytes / payment",
        ],
    );
    for s in samples {
        row(
            &mut out,
            &[
                format!("{:.0}", s.at_secs),
                s.offered.to_string(),
                s.errors.to_string(),
                format!("{:.1}", s.api_rss as f64 / 1e6),
                format!("{:.1}", s.worker_rss as f64 / 1e6),
                s.done_jobs.to_string(),
                s.job_data.to_string(),
                s.ready.to_string(),
                format!("{:.1}", s.redis_used as f64 / 1e6),
                s.pg_connections.to_string(),
                s.payments.to_string(),
                format!("{:.0}", per_payment(s)),
            ],
        );
    }
    let series = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let verdicts = [
        (
            "api resident memory",
            flat(&series(|s| s.api_rss as f64), 4e6),
        ),
        (
            "worker resident memory",
            flat(&series(|s| s.worker_rss as f64), 4e6),
        ),
        (
            "finished jobs kept in Redis",
            flat(&series(|s| s.job_data as f64), 1000.0),
        ),
        ("Redis memory", flat(&series(|s| s.redis_used as f64), 4e6)),
        (
            "Postgres connections",
            flat(&series(|s| s.pg_connections as f64), 1.0),
        ),
        ("the ready queue", flat(&series(|s| s.ready as f64), 100.0)),
    ];
    let _ = writeln!(out);
    header(
        &mut out,
        &["what", "flat (last third within 20 % of the middle third)"],
    );
    for (what, ok) in verdicts {
        row(
            &mut out,
            &[
                what.to_owned(),
                if ok { "yes".into() } else { "**no**".into() },
            ],
        );
    }
    let _ = writeln!(
        out,
        "\nPostgres grows with the payments by design (they are the record): bytes per payment \
         is every table and index of ours ÷ payments. docs/operations.md (\"Retention\") says \
         what may be deleted and when.\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_that_keeps_growing_is_not_flat() {
        assert!(flat(&[10.0, 30.0, 31.0, 30.0, 32.0, 31.0], 0.0));
        assert!(!flat(&[10.0, 20.0, 30.0, 40.0, 50.0, 60.0], 0.0));
        assert!(flat(&[0.0, 0.0, 0.0, 1.0, 0.0, 1.0], 1.0));
    }
}
