//! `payctl show <task-id|transaction-id>`: a job and its transaction side by side. A
//! transaction id shows the transaction and every job whose payload names it.

use anyhow::bail;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::models::Transaction;
use uuid::Uuid;

use crate::commands::check_task_id;
use crate::commands::list::{add_transaction_states, jobs_table};
use crate::ctx::{Ctx, Report};
use crate::table::{block, opt, side_by_side, time, time_rel};
use shared::queue::scan;
use shared::queue::task::{Job, Place, load_jobs, locate};

#[derive(Debug, Serialize)]
pub struct ShowReport {
    /// `transaction` or `task`: which kind of id was given.
    pub found_by: &'static str,
    pub transaction: Option<TxView>,
    pub jobs: Vec<Job>,
}

/// The row without what an operator must not see or need not: the client secret.
#[derive(Debug, Serialize)]
pub struct TxView {
    pub id: Uuid,
    pub state: String,
    pub amount: i64,
    pub currency: String,
    pub email: String,
    pub price: Option<String>,
    pub stripe_id: Option<String>,
    pub stripe_idempotency_key: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub error_code: Option<String>,
    pub error_decline_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Transaction> for TxView {
    fn from(t: Transaction) -> Self {
        TxView {
            id: t.id,
            state: t.state,
            amount: t.amount,
            currency: t.currency,
            email: t.email,
            price: t.price,
            stripe_id: t.stripe_id,
            stripe_idempotency_key: t.stripe_idempotency_key,
            attempts: t.attempts,
            next_attempt_at: t.next_attempt_at,
            lease_owner: t.lease_owner,
            lease_expires_at: t.lease_expires_at,
            last_error: t.last_error,
            error_code: t.error_code,
            error_decline_code: t.error_decline_code,
            error_message: t.error_message,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

pub async fn run(ctx: &mut Ctx, id: &str) -> anyhow::Result<ShowReport> {
    let id = check_task_id(id)?;
    let workers: Vec<String> = ctx.workers().await?.into_iter().map(|w| w.name).collect();
    if let Ok(txn_id) = Uuid::parse_str(id)
        && let Some(txn) = crate::txdb::find(ctx.pg().await?, txn_id).await?
    {
        let mut places = Vec::new();
        for task in scan::tasks_for_transaction(&mut ctx.redis, &ctx.keys, txn_id).await? {
            let place = locate(&mut ctx.redis, &ctx.keys, &task, &workers).await?;
            places.push(
                place.unwrap_or_else(|| Place::new(task, shared::queue::task::JobState::Nowhere)),
            );
        }
        let mut jobs = load_jobs(&mut ctx.redis, &ctx.keys, places).await?;
        jobs.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let state = txn.state.clone();
        for j in &mut jobs {
            j.transaction_state = Some(state.clone());
        }
        return Ok(ShowReport {
            found_by: "transaction",
            transaction: Some(txn.into()),
            jobs,
        });
    }
    let Some(place) = locate(&mut ctx.redis, &ctx.keys, id, &workers).await? else {
        bail!("no transaction or task with id `{id}`");
    };
    let mut jobs = load_jobs(&mut ctx.redis, &ctx.keys, vec![place]).await?;
    add_transaction_states(ctx, &mut jobs).await?;
    let transaction = match jobs.first().and_then(|j| j.transaction_id) {
        Some(txn_id) => crate::txdb::find(ctx.pg().await?, txn_id)
            .await?
            .map(TxView::from),
        None => None,
    };
    Ok(ShowReport {
        found_by: "task",
        transaction,
        jobs,
    })
}

fn job_block(j: &Job, now: DateTime<Utc>) -> Vec<String> {
    block(&[
        ("state", j.state.as_str().into()),
        ("due", time_rel(j.run_at, now)),
        ("worker", opt(j.worker.as_ref())),
        ("status", opt(j.status.as_ref())),
        (
            "attempts",
            format!("{} of {}", opt(j.attempts), opt(j.max_attempts)),
        ),
        ("locked by", opt(j.locked_by.as_ref())),
        ("locked at", time_rel(j.locked_at, now)),
        ("ended at", time_rel(j.done_at, now)),
        ("last result", j.outcome()),
        ("transaction", opt(j.transaction_id)),
    ])
}

fn tx_block(t: &TxView, now: DateTime<Utc>) -> Vec<String> {
    block(&[
        ("state", t.state.clone()),
        ("amount", format!("{} {}", t.amount, t.currency)),
        ("email", t.email.clone()),
        ("stripe id", opt(t.stripe_id.as_ref())),
        ("attempts", t.attempts.to_string()),
        ("next attempt", time_rel(Some(t.next_attempt_at), now)),
        ("lease owner", opt(t.lease_owner.as_ref())),
        ("lease until", time_rel(t.lease_expires_at, now)),
        ("last error", opt(t.last_error.as_ref())),
        ("error", opt(t.error_code.as_ref())),
        ("decline code", opt(t.error_decline_code.as_ref())),
        ("created", time(Some(t.created_at))),
        ("updated", time(Some(t.updated_at))),
    ])
}

impl Report for ShowReport {
    fn human(&self) -> String {
        let now = Utc::now();
        let tx_title = |t: &TxView| format!("transaction {}", t.id);
        match (self.found_by, &self.transaction, self.jobs.first()) {
            ("task", Some(t), Some(j)) => side_by_side(
                &format!("job {}", j.task_id),
                &job_block(j, now),
                &tx_title(t),
                &tx_block(t, now),
            ),
            ("task", None, Some(j)) => side_by_side(
                &format!("job {}", j.task_id),
                &job_block(j, now),
                "no transaction",
                &[],
            ),
            (_, Some(t), _) => {
                let mut out = format!("{}\n", tx_title(t));
                for line in tx_block(t, now) {
                    out.push_str(&format!("  {line}\n"));
                }
                out.push_str(&format!("\njobs: {}\n", self.jobs.len()));
                if !self.jobs.is_empty() {
                    out.push_str(&jobs_table(&self.jobs));
                }
                out
            }
            _ => "nothing found\n".into(),
        }
    }
}
