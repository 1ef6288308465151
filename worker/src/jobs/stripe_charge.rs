//! The `StripeCharge` job: one attempt at charging one transaction.
//!
//! 1. While the circuit breaker is open, put the job back for later: no Stripe call, no
//!    attempt spent.
//! 2. Claim the row in Postgres (a lease, so two deliveries never call Stripe at once; the
//!    attempt is counted there, so crashes cannot make retries unbounded).
//! 3. One Stripe call with the transaction's own idempotency key, or a lookup when the charge
//!    policy says so (`crate::policy`: attempts spent, an old key, an answer that stays
//!    ambiguous).
//! 4. Record what Stripe said, forward-only; for a transient failure, schedule the next
//!    attempt as a new delayed job.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use rand::RngExt;
use shared::db::PgPool;
use shared::models::Transaction;
use shared::queue::{ChargeQueue, StripeCharge};
use shared::settings::RetrySettings;
use shared::state_machine::change::{self, NotClaimed};
use shared::state_machine::outcome::Outcome;

use crate::policy::{self, Step, Verdict};
use crate::stripe::Stripe;

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
    // 1. Held until the attempt ends: dropped on every path (no call made, an error, a panic,
    // a cancelled task), it gives back the breaker's probe slot if it holds it.
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

    // 2. The pooled connection goes back before the Stripe call, which can take seconds.
    let claimed = {
        let mut conn = ctx.db.get().await.map_err(db_err)?;
        let claim = change::claim(&mut conn, id, &ctx.owner, ctx.lease);
        match claim.await.map_err(db_err)? {
            Ok(row) => row,
            Err(why) => return not_claimed(why),
        }
    };

    // 3.
    let verdict = decide(ctx, &claimed).await;
    let outcome = policy::outcome(verdict, claimed.attempts, &ctx.retry, ctx.recheck);
    tracing::info!(
        attempt = claimed.attempts,
        outcome = outcome.name(),
        "charge attempt done"
    );

    // 4.
    let recorded = match record(ctx, id, &outcome).await {
        Ok(row) => row,
        // Stripe has answered: one more try on a fresh connection (one Postgres closed between
        // checkout and query) rather than leave the answer unrecorded until the lease expires.
        Err(first) => {
            tracing::warn!(error = %first.0, "recording the outcome failed; trying once more");
            record(ctx, id, &outcome).await?
        }
    };
    count_job(outcome.name());
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

/// The row when the outcome was written.
async fn record(
    ctx: &ChargeContext,
    id: uuid::Uuid,
    outcome: &Outcome,
) -> Result<Option<Transaction>, Redeliver> {
    let mut conn = ctx.db.get().await.map_err(db_err)?;
    change::record(&mut conn, id, &ctx.owner, outcome)
        .await
        .map_err(db_err)
}

/// Why the claim failed decides whether this delivery is dropped or retried.
fn not_claimed(why: NotClaimed) -> Result<(), Redeliver> {
    match why {
        NotClaimed::Missing => tracing::warn!("no such transaction; dropping the job"),
        // Another delivery holds the lease; come back after it could have expired.
        NotClaimed::Leased { owner, .. } => {
            return Err(Redeliver(format!(
                "leased by {}",
                owner.unwrap_or_default()
            )));
        }
        NotClaimed::Finished(state) => {
            tracing::debug!(%state, "nothing to do for this delivery")
        }
        NotClaimed::NotDue(at) => tracing::debug!(%at, "not due yet; its own job will come"),
    }
    count_job("skipped");
    Ok(())
}

/// The Stripe call, or only a lookup, as the charge policy says.
async fn decide(ctx: &ChargeContext, txn: &Transaction) -> Verdict {
    match policy::first_step(txn, &ctx.retry, Utc::now()) {
        Step::Resolve => return policy::resolved(ctx.stripe.lookup(txn).await),
        Step::LookUpFirst => match ctx.stripe.lookup(txn).await {
            Ok(Some(found)) => return found,
            Ok(None) => {}
            Err(e) => return policy::transient(format!("lookup failed: {e}")),
        },
        Step::Charge => {}
    }
    let verdict = ctx.stripe.charge(txn).await;
    if policy::look_up_after(&verdict, txn.attempts)
        && let Ok(Some(found)) = ctx.stripe.lookup(txn).await
    {
        return found;
    }
    verdict
}

/// `payments_jobs_total{outcome}`: complete, failed, requires_action, retry (a charge attempt
/// that will be retried), skipped (nothing to do: duplicate or finished), deferred (circuit
/// open), redelivered (could not record; apalis runs it again).
fn count_job(outcome: &'static str) {
    metrics::counter!("payments_jobs_total", "outcome" => outcome).increment(1);
}
