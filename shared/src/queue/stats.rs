//! How many jobs are in each place of the queue and at each worker: for `payctl stats`, the
//! ops page and the queue gauges of `/metrics`. One pipelined round trip of O(1) commands, one
//! SCARD per registered worker: never a walk of the keyspace.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::workers::{self, Worker};

#[derive(Clone, Debug, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub scheduled: u64,
    /// Scheduled jobs already due: a worker moves them to `active` on its next poll.
    pub scheduled_due: u64,
    pub active: u64,
    pub inflight: u64,
    pub done: u64,
    pub dead: u64,
    /// Payloads in `{q}:data`: every job not yet purged.
    pub stored: u64,
    pub presumed_dead_after_secs: f64,
    pub workers: Vec<WorkerStats>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkerStats {
    #[serde(flatten)]
    pub worker: Worker,
    pub inflight: u64,
}

/// Counts every place of the queue; `dead_after` as for [`workers::registered`].
pub async fn stats(
    conn: &mut impl RedisConn,
    keys: &Keys,
    dead_after: Duration,
) -> anyhow::Result<QueueStats> {
    let workers = workers::registered(conn, keys, dead_after).await?;
    let now = Utc::now().timestamp();
    let mut pipe = redis::pipe();
    pipe.zcard(keys.scheduled())
        .zcount(keys.scheduled(), "-inf", now)
        .llen(keys.active())
        .scard(keys.done())
        .scard(keys.dead())
        .hlen(keys.data());
    for w in &workers {
        pipe.scard(keys.inflight(&w.name));
    }
    let counts: Vec<u64> = pipe.query_async(conn).await.context("counting jobs")?;
    let at = |i: usize| counts.get(i).copied().unwrap_or(0);
    let workers: Vec<WorkerStats> = workers
        .into_iter()
        .enumerate()
        .map(|(i, worker)| WorkerStats {
            worker,
            inflight: at(6 + i),
        })
        .collect();
    Ok(QueueStats {
        queue: keys.queue().to_owned(),
        scheduled: at(0),
        scheduled_due: at(1),
        active: at(2),
        inflight: workers.iter().map(|w| w.inflight).sum(),
        done: at(3),
        dead: at(4),
        stored: at(5),
        presumed_dead_after_secs: dead_after.as_secs_f64(),
        workers,
    })
}

/// Sets `payments_queue_jobs{state}`, `payments_queue_workers` (registered) and
/// `payments_queue_up` (0 on a Redis error, instead of failing the scrape).
pub async fn export(conn: &mut impl RedisConn, keys: &Keys, dead_after: Duration) {
    match stats(conn, keys, dead_after).await {
        Ok(s) => {
            metrics::gauge!("payments_queue_up").set(1.0);
            for (state, n) in [
                ("scheduled", s.scheduled),
                ("active", s.active),
                ("inflight", s.inflight),
                ("done", s.done),
                ("dead", s.dead),
            ] {
                metrics::gauge!("payments_queue_jobs", "state" => state).set(n as f64);
            }
            metrics::gauge!("payments_queue_workers").set(s.workers.len() as f64);
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "queue depths unavailable");
            metrics::gauge!("payments_queue_up").set(0.0);
        }
    }
}
