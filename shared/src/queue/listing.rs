//! Listing the jobs in one place of the queue, each with its meta (attempts, status, last
//! result) and, from Postgres, its transaction's current state.

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use uuid::Uuid;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::scan;
use crate::queue::task::{Job, JobState, load_jobs};

#[derive(Debug, Serialize)]
pub struct JobList {
    pub state: JobState,
    /// How many jobs are in that state, whether listed or not.
    pub total: u64,
    pub jobs: Vec<Job>,
}

/// Up to `limit` jobs in `state` (dead and done ones latest first), with how many there are in
/// all; `workers` are the registered workers' names, whose in-flight sets are read.
pub async fn list(
    conn: &mut impl RedisConn,
    keys: &Keys,
    state: JobState,
    workers: &[String],
    limit: usize,
) -> anyhow::Result<JobList> {
    let total = count(conn, keys, state, workers).await?;
    let places = scan::places(conn, keys, state, workers, limit).await?;
    let mut jobs = load_jobs(conn, keys, places).await?;
    if state == JobState::Dead || state == JobState::Done {
        // Sets have no order; the latest failures are the ones an operator is after.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.done_at));
    }
    Ok(JobList { state, total, jobs })
}

async fn count(
    conn: &mut impl RedisConn,
    keys: &Keys,
    state: JobState,
    workers: &[String],
) -> anyhow::Result<u64> {
    let k = keys;
    let mut pipe = redis::pipe();
    match state {
        JobState::Scheduled => pipe.zcard(k.scheduled()),
        JobState::Active => pipe.llen(k.active()),
        JobState::Done => pipe.scard(k.done()),
        JobState::Dead => pipe.scard(k.dead()),
        // With no worker registered nothing is in flight (and an empty pipeline is an error).
        JobState::Inflight | JobState::Nowhere if workers.is_empty() => return Ok(0),
        JobState::Inflight | JobState::Nowhere => {
            for w in workers {
                pipe.scard(k.inflight(w));
            }
            &mut pipe
        }
    };
    let counts: Vec<u64> = pipe.query_async(conn).await.context("counting jobs")?;
    Ok(counts.iter().sum())
}

/// Fills in each job's transaction state from Postgres, in one query.
pub async fn add_transaction_states(
    pg: &mut AsyncPgConnection,
    jobs: &mut [Job],
) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = jobs.iter().filter_map(|j| j.transaction_id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let states = crate::transactions::states_of(pg, &ids)
        .await
        .context("reading transaction states")?;
    for job in jobs {
        job.transaction_state = job.transaction_id.map(|id| {
            states
                .get(&id)
                .map_or_else(|| "not found".into(), |s| s.as_str().to_owned())
        });
    }
    Ok(())
}
