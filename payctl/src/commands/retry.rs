//! `payctl retry <task-id>` / `--all-dead`: dead jobs back on the schedule.
//!
//! The transaction is made due first, then the task moved (one Lua script): the other order
//! would let a worker fetch the task before the row is due, find nothing to claim and finish
//! the job with the payment still waiting. Re-running a charge is safe: every attempt sends
//! the transaction's own Stripe idempotency key, and the row's lease and forward-only states
//! absorb a duplicate.

use std::fmt::Write;

use anyhow::{Context, bail};
use chrono::Utc;
use redis::AsyncCommands;
use serde::Serialize;
use uuid::Uuid;

use crate::commands::check_task_id;
use crate::ctx::{Ctx, Report};
use crate::table::{Table, opt};
use shared::queue::scan;
use shared::queue::scripts::{self, RetryOutcome};
use shared::queue::task::{locate, parse_payload};

#[derive(Debug, Serialize)]
pub struct RetryReport {
    pub retried: Vec<Retried>,
    pub failed: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct Retried {
    pub task_id: String,
    pub transaction_id: Uuid,
    pub transaction_state: String,
    /// False when the transaction is already final: the job will run and find nothing to do.
    pub transaction_rescheduled: bool,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub task_id: String,
    pub error: String,
}

/// Retries one dead job; anything else (unknown id, a job that is not dead) is an error.
pub async fn one(ctx: &mut Ctx, task_id: &str) -> anyhow::Result<RetryReport> {
    let task_id = check_task_id(task_id)?;
    let retried = retry(ctx, task_id).await?;
    Ok(RetryReport {
        retried: vec![retried],
        failed: vec![],
    })
}

/// Retries every job in the dead set; those that cannot be retried are reported, not fatal.
pub async fn all_dead(ctx: &mut Ctx) -> anyhow::Result<RetryReport> {
    let dead = scan::set_members(&mut ctx.redis, &ctx.keys.dead(), None).await?;
    let mut report = RetryReport {
        retried: vec![],
        failed: vec![],
    };
    for task_id in dead {
        match retry(ctx, &task_id).await {
            Ok(r) => report.retried.push(r),
            Err(e) => report.failed.push(Failure {
                task_id,
                error: format!("{e:#}"),
            }),
        }
    }
    Ok(report)
}

async fn retry(ctx: &mut Ctx, task_id: &str) -> anyhow::Result<Retried> {
    let queue = ctx.keys.queue().to_owned();
    let is_dead: bool = ctx
        .redis
        .sismember(ctx.keys.dead(), task_id)
        .await
        .context("reading the dead set")?;
    if !is_dead {
        let workers: Vec<String> = ctx.workers().await?.into_iter().map(|w| w.name).collect();
        match locate(&mut ctx.redis, &ctx.keys, task_id, &workers).await? {
            None => bail!("no task `{task_id}` in queue {queue}"),
            Some(p) => bail!(
                "task {task_id} is {}, not dead: only dead jobs can be retried",
                p.state.as_str()
            ),
        }
    }
    let payload: Option<Vec<u8>> = ctx
        .redis
        .hget(ctx.keys.data(), task_id)
        .await
        .context("reading the payload")?;
    let transaction_id = parse_payload(payload.as_deref())
        .map_err(|e| anyhow::anyhow!("task {task_id} cannot be retried: {e}"))?;

    let conn = ctx.pg().await?;
    let Some(txn) = crate::txdb::find(conn, transaction_id).await? else {
        bail!("task {task_id} is for transaction {transaction_id}, which does not exist");
    };
    let rescheduled = crate::txdb::due_now(conn, transaction_id).await?;

    match scripts::retry(&mut ctx.redis, &ctx.keys, task_id, Utc::now().timestamp()).await? {
        RetryOutcome::Moved => Ok(Retried {
            task_id: task_id.to_owned(),
            transaction_id,
            transaction_state: txn.state,
            transaction_rescheduled: rescheduled,
        }),
        RetryOutcome::NotDead => bail!("task {task_id} left the dead set meanwhile; nothing moved"),
        RetryOutcome::NoPayload => {
            bail!("task {task_id} lost its payload meanwhile; nothing moved")
        }
    }
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
