//! `payctl list --state S` and `payctl dead`: the jobs in one place of the queue, each with
//! its meta (attempts, status, last result) and its transaction's current state.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use shared::queue::listing::{self, JobList};
use shared::queue::task::{Job, JobState};

use crate::ctx::{Ctx, Report};
use crate::table::{Table, opt, time_rel};

pub async fn run(ctx: &mut Ctx, state: JobState, limit: usize) -> anyhow::Result<JobList> {
    let workers: Vec<String> = ctx.workers().await?.into_iter().map(|w| w.name).collect();
    let mut list = listing::list(&mut ctx.redis, &ctx.keys, state, &workers, limit).await?;
    listing::add_transaction_states(ctx.pg().await?, &mut list.jobs).await?;
    Ok(list)
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
