//! `payctl retry <task-id>` / `--all-dead`: dead jobs back on the schedule
//! (`shared::queue::dead` says how, and why in that order).

use std::fmt::Write;

use shared::queue::dead::{self, RetryReport};

use crate::commands::check_task_id;
use crate::ctx::{Ctx, Report};
use crate::table::{Table, opt};

/// Retries one dead job; anything else (unknown id, a job that is not dead) is an error.
pub async fn one(ctx: &mut Ctx, task_id: &str) -> anyhow::Result<RetryReport> {
    let task_id = check_task_id(task_id)?;
    let workers = ctx.worker_names().await?;
    let (redis, pg, keys) = ctx.parts().await?;
    let retried = dead::retry(redis, pg, keys, task_id, &workers).await?;
    Ok(RetryReport {
        retried: vec![retried],
        failed: vec![],
    })
}

/// Retries every job in the dead set; those that cannot be retried are reported, not fatal.
pub async fn all_dead(ctx: &mut Ctx) -> anyhow::Result<RetryReport> {
    let workers = ctx.worker_names().await?;
    let (redis, pg, keys) = ctx.parts().await?;
    dead::retry_all(redis, pg, keys, &workers).await
}

impl Report for RetryReport {
    fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "retried: {}, could not retry: {}",
            self.retried.len(),
            self.failed.len()
        );
        if !self.retried.is_empty() {
            let mut t = Table::new(&["TASK", "TRANSACTION", "TX STATE", "NOTE"]);
            for r in &self.retried {
                let note = if r.transaction_rescheduled {
                    "scheduled now; the transaction is due"
                } else {
                    "scheduled now; the transaction is final, the job will do nothing"
                };
                t.row(vec![
                    r.task_id.clone(),
                    opt(Some(r.transaction_id)),
                    r.transaction_state.clone(),
                    note.into(),
                ]);
            }
            out.push_str(&t.render());
        }
        if !self.failed.is_empty() {
            let mut t = Table::new(&["TASK", "ERROR"]);
            for f in &self.failed {
                t.row(vec![f.task_id.clone(), f.error.clone()]);
            }
            out.push_str(&t.render());
        }
        out
    }

    fn partial_failure(&self) -> Option<String> {
        (!self.failed.is_empty())
            .then(|| format!("{} dead job(s) could not be retried", self.failed.len()))
    }
}
