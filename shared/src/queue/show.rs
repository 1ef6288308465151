//! One job and its transaction side by side, or a transaction and every job that names it:
//! `payctl show`.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use uuid::Uuid;

use crate::models::Transaction;
use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::listing::add_transaction_states;
use crate::queue::scan;
use crate::queue::task::{Job, JobState, Place, load_jobs, locate};

async fn find(pg: &mut AsyncPgConnection, id: Uuid) -> anyhow::Result<Option<Transaction>> {
    crate::transactions::find(pg, id)
        .await
        .context("reading the transaction")
}

#[derive(Debug, Serialize)]
pub struct ShowReport {
    /// `transaction` or `task`: which kind of id was given.
    pub found_by: &'static str,
    pub transaction: Option<TxView>,
    pub jobs: Vec<Job>,
    /// The transaction's event log, oldest first.
    pub history: Vec<crate::events::PaymentEvent>,
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
            state: t.state.as_str().to_owned(),
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

/// A transaction id: the transaction and every job whose payload names it; a task id: the job
/// and its transaction. `workers` are the registered workers' names.
pub async fn show(
    conn: &mut impl RedisConn,
    pg: &mut AsyncPgConnection,
    keys: &Keys,
    id: &str,
    workers: &[String],
) -> anyhow::Result<ShowReport> {
    if let Ok(txn_id) = Uuid::parse_str(id)
        && let Some(txn) = find(pg, txn_id).await?
    {
        let mut places = Vec::new();
        for task in scan::tasks_for_transaction(conn, keys, txn_id).await? {
            let place = locate(conn, keys, &task, workers).await?;
            places.push(place.unwrap_or_else(|| Place::new(task, JobState::Nowhere)));
        }
        let mut jobs = load_jobs(conn, keys, places).await?;
        jobs.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        for j in &mut jobs {
            j.transaction_state = Some(txn.state.as_str().to_owned());
        }
        let history = crate::events::history(pg, txn_id).await?;
        return Ok(ShowReport {
            found_by: "transaction",
            transaction: Some(txn.into()),
            jobs,
            history,
        });
    }
    let Some(place) = locate(conn, keys, id, workers).await? else {
        bail!("no transaction or task with id `{id}`");
    };
    let mut jobs = load_jobs(conn, keys, vec![place]).await?;
    add_transaction_states(pg, &mut jobs).await?;
    let txn_id = jobs.first().and_then(|j| j.transaction_id);
    let transaction = match txn_id {
        Some(txn_id) => find(pg, txn_id).await?.map(TxView::from),
        None => None,
    };
    let history = match (txn_id, &transaction) {
        (Some(id), Some(_)) => crate::events::history(pg, id).await?,
        _ => Vec::new(),
    };
    Ok(ShowReport {
        found_by: "task",
        transaction,
        jobs,
        history,
    })
}
