//! The workers registered for the queue (`{q}:workers`, name → last heartbeat) and which of
//! them a live worker would presume dead.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::task;

/// A worker registered in `{q}:workers`, with the age of its last heartbeat.
#[derive(Clone, Debug, Serialize)]
pub struct Worker {
    pub name: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub age_secs: i64,
    /// No heartbeat for longer than `WORKER_HEARTBEAT_MS × WORKER_MISSED_HEARTBEATS`: a live
    /// worker will re-queue its in-flight jobs.
    pub presumed_dead: bool,
}

/// Every registered worker, by name. The set holds one entry per worker process start (a cleanly
/// stopped worker stays listed), so it is small enough to read at once. `dead_after`: how long a
/// worker may go without a heartbeat before apalis presumes it dead
/// (`WORKER_HEARTBEAT_MS × WORKER_MISSED_HEARTBEATS`).
pub async fn registered(
    conn: &mut impl RedisConn,
    keys: &Keys,
    dead_after: Duration,
) -> anyhow::Result<Vec<Worker>> {
    let key = keys.workers();
    let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(conn)
        .await
        .with_context(|| format!("reading {key}"))?;
    let now = Utc::now().timestamp();
    let limit = dead_after.as_secs_f64();
    Ok(rows
        .into_iter()
        .map(|(name, score)| {
            // Heartbeats are whole unix seconds, so an age is up to a second short.
            let age_secs = now - score as i64;
            Worker {
                name,
                last_heartbeat: task::timestamp(score as i64),
                age_secs,
                presumed_dead: age_secs as f64 > limit,
            }
        })
        .collect())
}
