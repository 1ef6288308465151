//! Dead jobs (apalis gave up on them) back on the schedule, for `payctl retry` and the ops
//! page's retry button.
//!
//! The transaction is made due first, then the task moved (one Lua script): the other order
//! would let a worker fetch the task before the row is due, find nothing to claim and finish
//! the job with the payment still waiting. Re-running a charge is safe: every attempt sends
//! the transaction's own Stripe idempotency key, and the row's lease and forward-only states
//! absorb a duplicate.

use anyhow::{Context, bail};
use chrono::Utc;
use diesel_async::AsyncPgConnection;
use redis::AsyncCommands;
use serde::Serialize;
use uuid::Uuid;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::scan;
use crate::queue::scripts::{self, RetryOutcome};
use crate::queue::task::{locate, parse_payload};
use crate::state_machine::change::{Transition, change};

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

/// Retries every job in the dead set; those that cannot be retried are reported, not fatal.
pub async fn retry_all(
    conn: &mut impl RedisConn,
    pg: &mut AsyncPgConnection,
    keys: &Keys,
    workers: &[String],
) -> anyhow::Result<RetryReport> {
    let dead = scan::set_members(conn, &keys.dead(), None).await?;
    let mut report = RetryReport {
        retried: vec![],
        failed: vec![],
    };
    for task_id in dead {
        match retry(conn, pg, keys, &task_id, workers).await {
            Ok(r) => report.retried.push(r),
            Err(e) => report.failed.push(Failure {
                task_id,
                error: format!("{e:#}"),
            }),
        }
    }
    Ok(report)
}

/// Whether `task_id` is in the dead set.
pub async fn is_dead(
    conn: &mut impl RedisConn,
    keys: &Keys,
    task_id: &str,
) -> anyhow::Result<bool> {
    conn.sismember(keys.dead(), task_id)
        .await
        .context("reading the dead set")
}

/// Retries one dead job: the transaction is made due (through the state machine), then the
/// task moved. Anything else (unknown id, a job that is not dead) is an error; `workers` are the
/// registered workers' names, to say where a task that is not dead is.
pub async fn retry(
    conn: &mut impl RedisConn,
    pg: &mut AsyncPgConnection,
    keys: &Keys,
    task_id: &str,
    workers: &[String],
) -> anyhow::Result<Retried> {
    let queue = keys.queue().to_owned();
    if !is_dead(conn, keys, task_id).await? {
        match locate(conn, keys, task_id, workers).await? {
            None => bail!("no task `{task_id}` in queue {queue}"),
            Some(p) => bail!(
                "task {task_id} is {}, not dead: only dead jobs can be retried",
                p.state.as_str()
            ),
        }
    }
    let payload: Option<Vec<u8>> = conn
        .hget(keys.data(), task_id)
        .await
        .context("reading the payload")?;
    let transaction_id = parse_payload(payload.as_deref())
        .map_err(|e| anyhow::anyhow!("task {task_id} cannot be retried: {e}"))?;

    // An operator's retry may move any unfinished payment forward, which the api's own
    // 3-D Secure re-check deliberately does not allow.
    let due = change(pg, transaction_id, Transition::DueNow)
        .await
        .context("rescheduling the transaction")?;
    let Some(due) = due else {
        bail!("task {task_id} is for transaction {transaction_id}, which does not exist");
    };

    match scripts::retry(conn, keys, task_id, Utc::now().timestamp()).await? {
        RetryOutcome::Moved => Ok(Retried {
            task_id: task_id.to_owned(),
            transaction_id,
            transaction_state: due.previous.as_str().to_owned(),
            transaction_rescheduled: due.applied,
        }),
        RetryOutcome::NotDead => bail!("task {task_id} left the dead set meanwhile; nothing moved"),
        RetryOutcome::NoPayload => {
            bail!("task {task_id} lost its payload meanwhile; nothing moved")
        }
    }
}
