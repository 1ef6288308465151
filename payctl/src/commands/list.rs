//! `payctl list --state S` and `payctl dead`: the jobs in one place of the queue, each with
//! its meta (attempts, status, last result) and its transaction's current state.

use std::fmt::Write;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::ctx::{Ctx, Report};
use crate::table::{Table, opt, time_rel};
use shared::queue::scan;
use shared::queue::task::{Job, JobState, load_jobs};

#[derive(Debug, Serialize)]
pub struct JobList {
    pub state: JobState,
    /// How many jobs are in that state, whether listed or not.
    pub total: u64,
    pub jobs: Vec<Job>,
}

pub async fn run(ctx: &mut Ctx, state: JobState, limit: usize) -> anyhow::Result<JobList> {
    let workers: Vec<String> = ctx.workers().await?.into_iter().map(|w| w.name).collect();
    let total = count(ctx, state, &workers).await?;
    let places = scan::places(&mut ctx.redis, &ctx.keys, state, &workers, limit).await?;
    let mut jobs = load_jobs(&mut ctx.redis, &ctx.keys, places).await?;
    if state == JobState::Dead || state == JobState::Done {
        // Sets have no order; the latest failures are the ones an operator is after.
        jobs.sort_by_key(|j| std::cmp::Reverse(j.done_at));
    }
    add_transaction_states(ctx, &mut jobs).await?;
    Ok(JobList { state, total, jobs })
}

async fn count(ctx: &mut Ctx, state: JobState, workers: &[String]) -> anyhow::Result<u64> {
    let k = &ctx.keys;
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
    let counts: Vec<u64> = pipe
        .query_async(&mut ctx.redis)
        .await
        .context("counting jobs")?;
    Ok(counts.iter().sum())
}

/// Fills in each job's transaction state from Postgres, in one query.
pub async fn add_transaction_states(ctx: &mut Ctx, jobs: &mut [Job]) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = jobs.iter().filter_map(|j| j.transaction_id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let states = crate::txdb::states(ctx.pg().await?, &ids).await?;
    for job in jobs {
        job.transaction_state = job.transaction_id.map(|id| {
            states
                .get(&id)
                .cloned()
                .unwrap_or_else(|| "not found".into())
        });
    }
    Ok(())
}

/// What happens next (or last) to a job, in its place's terms.
fn when(job: &Job, now: DateTime<Utc>) -> String {
    match job.state {
        JobState::Scheduled => format!("due {}", time_rel(job.run_at, now)),
        JobState::Inflight => format!(
            "at {} since {}",
            opt(job.worker.as_ref()),
            time_rel(job.locked_at, now)
        ),
        JobState::Done | JobState::Dead => format!("ended {}", time_rel(job.done_at, now)),
        JobState::Active | JobState::Nowhere => String::new(),
    }
}

/// The table `list`, `dead` and `show` print.
pub fn jobs_table(jobs: &[Job]) -> String {
    let now = Utc::now();
    let mut t = Table::new(&[
        "TASK",
        "TRANSACTION",
        "STATE",
        "ATTEMPTS",
        "STATUS",
        "WHEN",
        "LAST RESULT",
        "TX STATE",
    ]);
    for j in jobs {
        t.row(vec![
            j.task_id.clone(),
            opt(j.transaction_id),
            j.state.as_str().into(),
            opt(j.attempts),
            opt(j.status.as_ref()),
            when(j, now),
            j.outcome(),
            opt(j.transaction_state.as_ref()),
        ]);
    }
    t.render()
}

impl Report for JobList {
    fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} jobs: {} (showing {})",
            self.state.as_str(),
            self.total,
            self.jobs.len()
        );
        if !self.jobs.is_empty() {
            out.push_str(&jobs_table(&self.jobs));
        }
        out
    }
}
