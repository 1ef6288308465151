//! The `StripeCharge` job: one attempt at charging one transaction.
//!
//! 1. While the circuit breaker is open, put the job back for later: no Stripe call, no
//!    attempt spent.
//! 2. Claim the row in Postgres (a lease, so two deliveries never call Stripe at once; the
//!    attempt is counted there, so crashes cannot make retries unbounded).
//! 3. One Stripe call with the transaction's own idempotency key, or a lookup when attempts
//!    are spent or the answer stays ambiguous.
//! 4. Record what Stripe said, forward-only; for a transient failure, schedule the next
//!    attempt as a new delayed job.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use rand::Rng;
use shared::db::PgPool;
use shared::models::{Transaction, TxError};
use shared::queue::{ChargeQueue, StripeCharge};
use shared::settings::RetrySettings;
use shared::transactions::{self as txq, Outcome};

use crate::policy::backoff;
use crate::stripe::{Stripe, Verdict};

/// Stripe may forget an idempotency key after 24 hours; past this age a create could run
/// again, so the intent is looked up first.
const KEY_SAFE_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(23);

/// Ambiguous answers (5xx) tolerated with the same key before the intent is looked up.
const UNKNOWN_BEFORE_LOOKUP: i32 = 3;

/// What every job needs; one per worker process, shared behind an `Arc`.
pub struct ChargeContext {
    pub db: PgPool,
    pub queue: ChargeQueue,
    pub stripe: Stripe,
    pub retry: RetrySettings,
    pub lease: Duration,
    /// How long a payment waiting for 3-D Secure rests before the worker reads it again.
    pub recheck: Duration,
    /// This process's worker name: the lease owner written into claimed rows.
    pub owner: String,
}

/// An error that makes apalis re-deliver the job later (its own short backoff). Used only when
/// nothing could be recorded: Postgres or Redis unreachable, or another worker's lease.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Redeliver(String);

fn db_err(e: impl std::fmt::Display) -> Redeliver {
    Redeliver(format!("postgres: {e}"))
}

#[tracing::instrument(skip_all, fields(transaction_id = %job.transaction_id))]
pub async fn stripe_charge(
    job: StripeCharge,
    ctx: Data<Arc<ChargeContext>>,
) -> Result<(), BoxDynError> {
    run(&ctx, job).await.map_err(|e| {
        tracing::warn!(error = %e, "charge job will be redelivered");
        count_job("redelivered");
        Box::new(e) as BoxDynError
    })
}

async fn run(ctx: &ChargeContext, job: StripeCharge) -> Result<(), Redeliver> {
    let id = job.transaction_id;
    // Held until the attempt ends: dropped on every path (no call made, an error, a panic, a
    // cancelled task), it gives back the breaker's probe slot if it holds it.
    let _permit = match ctx.stripe.breaker.allow() {
        Ok(permit) => permit,
        Err(wait) => {
            // Spread the returning jobs over a second so the probe is not followed by a stampede.
            let jitter = Duration::from_millis(rand::rng().random_range(0..1000));
            tracing::debug!(?wait, "circuit open: job put back");
            count_job("deferred");
            return ctx
                .queue
                .enqueue(id, Some(wait + jitter))
                .await
                .map_err(|e| Redeliver(e.to_string()));
        }
    };

    let claimed = {
        let mut conn = ctx.db.get().await.map_err(db_err)?;
        match txq::claim(&mut conn, id, &ctx.owner, ctx.lease)
            .await
            .map_err(db_err)?
        {
            Some(row) => row,
            None => return not_claimed(&mut conn, id).await,
        }
    }; // The pooled connection goes back before the Stripe call, which can take seconds.

    let verdict = decide(ctx, &claimed).await;
    let outcome = outcome_for(ctx, &claimed, verdict);
    tracing::info!(
        attempt = claimed.attempts,
        outcome = outcome_name(&outcome),
        "charge attempt done"
    );

    let recorded = match record(ctx, id, &outcome).await {
        Ok(row) => row,
        // Stripe has answered: one more try on a fresh connection (one Postgres closed between
        // checkout and query) rather than leave the answer unrecorded until the lease expires.
        Err(first) => {
            tracing::warn!(error = %first.0, "recording the outcome failed; trying once more");
            record(ctx, id, &outcome).await?
        }
    };
    count_job(outcome_name(&outcome));
    if matches!(outcome, Outcome::Retry { .. }) {
        metrics::counter!("payments_charge_retries_total").increment(1);
    }
    if let (Some(_), Outcome::Retry { delay, .. }) = (recorded, &outcome) {
        // If this push fails the row still says when it is due, and the sweeper re-enqueues it.
        ctx.queue
            .enqueue(id, Some(*delay))
            .await
            .map_err(|e| Redeliver(e.to_string()))?;
    }
    Ok(())
}

async fn record(
    ctx: &ChargeContext,
    id: uuid::Uuid,
    outcome: &Outcome,
) -> Result<Option<Transaction>, Redeliver> {
    let mut conn = ctx.db.get().await.map_err(db_err)?;
    txq::record(&mut conn, id, &ctx.owner, outcome)
        .await
        .map_err(db_err)
}

/// Why the claim failed decides whether this delivery is dropped or retried.
async fn not_claimed(conn: &mut shared::db::PgConn<'_>, id: uuid::Uuid) -> Result<(), Redeliver> {
    match txq::find(conn, id).await.map_err(db_err)? {
        None => tracing::warn!("no such transaction; dropping the job"),
        Some(t)
            if !t.tx_state().is_final()
                && t.lease_expires_at.is_some_and(|until| until > Utc::now()) =>
        {
            // Another delivery holds the lease; come back after it could have expired.
            return Err(Redeliver(format!(
                "leased by {}",
                t.lease_owner.unwrap_or_default()
            )));
        }
        Some(t) => tracing::debug!(state = %t.state, "nothing to do for this delivery"),
    }
    count_job("skipped");
    Ok(())
}

/// The Stripe call, or only a lookup when a create would not be safe or useful.
async fn decide(ctx: &ChargeContext, txn: &Transaction) -> Verdict {
    if txn.attempts > ctx.retry.max_attempts {
        // Every create was answered or timed out at least one backoff ago, so none can still
        // be executing: ask Stripe what happened instead of sending again.
        return resolve(ctx, txn).await;
    }
    if txn.stripe_id.is_none() && Utc::now() - txn.created_at > KEY_SAFE_AGE {
        // Our key may have expired at Stripe: a create could charge a second time.
        match ctx.stripe.lookup(txn).await {
            Ok(Some(found)) => return found,
            Ok(None) => {}
            Err(e) => return transient(format!("lookup failed: {e}")),
        }
    }
    match ctx.stripe.charge(txn).await {
        // The same key keeps replaying an ambiguous answer (a stored 500): look it up.
        Verdict::Unknown { reason } if txn.attempts >= UNKNOWN_BEFORE_LOOKUP => {
            match ctx.stripe.lookup(txn).await {
                Ok(Some(found)) => found,
                _ => Verdict::Unknown { reason },
            }
        }
        v => v,
    }
}

fn transient(reason: String) -> Verdict {
    Verdict::Transient {
        stripe_id: None,
        reason,
        retry_after: None,
    }
}

/// Asks Stripe what became of the transaction (by the intent's id when it is known, else by
/// `metadata[transaction_id]`). Found: its status is the answer. Not found: Stripe never created
/// a PaymentIntent for it, so the card was not charged and the payment fails. Lookup failed
/// (including a known intent Stripe says it does not have): try again later, never guess.
async fn resolve(ctx: &ChargeContext, txn: &Transaction) -> Verdict {
    match ctx.stripe.lookup(txn).await {
        Ok(Some(v)) => v,
        Ok(None) => Verdict::Declined {
            stripe_id: None,
            error: TxError {
                code: "processing_error".into(),
                decline_code: None,
                message: "We could not reach the card processor. You have not been charged; please try again."
                    .into(),
            },
        },
        Err(e) => transient(format!("lookup failed: {e}")),
    }
}

fn outcome_for(ctx: &ChargeContext, txn: &Transaction, verdict: Verdict) -> Outcome {
    let delay = |at_least: Option<Duration>| {
        backoff(&ctx.retry, txn.attempts).max(at_least.unwrap_or_default())
    };
    match verdict {
        Verdict::Succeeded { stripe_id } => Outcome::Complete { stripe_id },
        Verdict::RequiresAction {
            stripe_id,
            client_secret,
        } => Outcome::RequiresAction {
            stripe_id,
            client_secret,
            recheck_in: ctx.recheck,
        },
        Verdict::Declined { stripe_id, error } => Outcome::Failed { stripe_id, error },
        Verdict::Transient {
            stripe_id,
            reason,
            retry_after,
        } => Outcome::Retry {
            stripe_id,
            reason,
            delay: delay(retry_after),
        },
        Verdict::Unknown { reason } => Outcome::Retry {
            stripe_id: None,
            reason,
            delay: delay(None),
        },
    }
}

/// `payments_jobs_total{outcome}`: complete, failed, requires_action, retry (a charge attempt
/// that will be retried), skipped (nothing to do: duplicate or finished), deferred (circuit
/// open), redelivered (could not record; apalis runs it again).
fn count_job(outcome: &'static str) {
    metrics::counter!("payments_jobs_total", "outcome" => outcome).increment(1);
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Complete { .. } => "complete",
        Outcome::RequiresAction { .. } => "requires_action",
        Outcome::Failed { .. } => "failed",
        Outcome::Retry { .. } => "retry",
    }
}
