//! The `StripeCharge` job: one attempt at moving one transaction on.
//!
//! 1. While the circuit breaker is open, put the job back for later: no Stripe call, no
//!    attempt spent.
//! 2. Claim the row in Postgres: a lease, so two deliveries never call Stripe at once, kept
//!    long enough to cover every call (`crate::lease`); a charge attempt is counted there, so
//!    crashes cannot make retries unbounded.
//! 3. The Stripe calls the charge policy's step asks for (`crate::policy`): create the intent
//!    unconfirmed, store its id, confirm it; or read it back, re-check 3-D Secure, cancel it.
//! 4. Record what Stripe said, forward-only; schedule what comes next (a retry, a re-check, a
//!    cancel) as a job of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use apalis::prelude::{BoxDynError, Data};
use chrono::Utc;
use rand::RngExt;
use shared::db::PgPool;
use shared::intent;
use shared::models::{Transaction, TxError};
use shared::queue::{ChargeQueue, StripeCharge};
use shared::settings::RetrySettings;
use shared::state_machine::change::{self, NotClaimed};
use shared::state_machine::outcome::{IntentAfter, Outcome};

use crate::batch::{Batches, Write};
use crate::lease::Lease;
use crate::policy::{self, Attempt, Call, Step, Verdict};
use crate::stripe::{Priority, Stripe};

/// What every job needs; one per worker process, shared behind an `Arc`.
pub struct ChargeContext {
    pub db: PgPool,
    /// Claims and writes go through here, committed together with other jobs' (group commit).
    pub batches: Batches,
    pub queue: ChargeQueue,
    pub stripe: Stripe,
    pub retry: RetrySettings,
    pub lease: Duration,
    /// The first 3-D Secure re-check's delay (they double from there).
    pub recheck: Duration,
    pub requires_action_timeout: Duration,
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

pub async fn stripe_charge(
    job: StripeCharge,
    ctx: Data<Arc<ChargeContext>>,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("stripe_charge", transaction_id = %job.transaction_id);
    // The payment's trace, when traces are exported: this job joins the api's request.
    if let Some(parent) = &job.trace {
        shared::telemetry::continue_trace(&span, parent);
    }
    async move {
        run(&ctx, job).await.map_err(|e| {
            tracing::warn!(error = %e, "charge job will be redelivered");
            count_job("redelivered");
            Box::new(e) as BoxDynError
        })
    }
    .instrument(span)
    .await
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

    // 2. The pooled connection goes back before the Stripe calls, which can take seconds.
    let taken_at = Instant::now();
    let claim = ctx
        .batches
        .claim(id)
        .instrument(tracing::info_span!("claim"));
    let claimed = match claim.await.map_err(db_err)? {
        Ok(row) => row,
        Err(why) => return not_claimed(why),
    };
    let mut lease = Lease::taken(&ctx.db, id, &ctx.owner, ctx.lease, taken_at);

    // 3.
    let step = policy::first_step(
        &claimed,
        &ctx.retry,
        ctx.requires_action_timeout,
        Utc::now(),
    );
    let verdict = decide(ctx, &claimed, step, &mut lease).await;
    if lease.lost() {
        // Another worker has the payment now; it will learn what this one would have.
        count_job("lease_lost");
        return Ok(());
    }

    // 4.
    let outcome = match (step, verdict) {
        (Step::Cancel, Verdict::Canceled { .. }) => return canceled(ctx, &claimed).await,
        (_, verdict) => policy::outcome(
            verdict,
            &Attempt {
                txn: &claimed,
                retry: &ctx.retry,
                recheck: ctx.recheck,
                requires_action_timeout: ctx.requires_action_timeout,
                now: Utc::now(),
            },
        ),
    };
    tracing::info!(
        ?step,
        attempt = claimed.attempts,
        outcome = outcome.name(),
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
    count_job(outcome.name());
    if matches!(outcome, Outcome::Retry { .. }) {
        metrics::counter!("payments_charge_retries_total").increment(1);
    }
    // If this push fails the row still says when it is due, and the sweeper re-enqueues it.
    if let Some(delay) = recorded.as_ref().and_then(|row| next_job(row, &outcome)) {
        ctx.queue
            .enqueue(id, Some(delay))
            .await
            .map_err(|e| Redeliver(e.to_string()))?;
    }
    Ok(())
}

/// When the job that moves the payment on must run: a retry after its backoff, a 3-D Secure
/// re-check after its delay, a cancel at once.
fn next_job(row: &Transaction, outcome: &Outcome) -> Option<Duration> {
    match outcome {
        Outcome::Retry { delay, .. } => Some(*delay),
        Outcome::RequiresAction { recheck_in, .. } => Some(*recheck_in),
        Outcome::Failed { .. } if row.cancel_pending() => Some(Duration::ZERO),
        _ => None,
    }
}

/// The row when the outcome was written.
async fn record(
    ctx: &ChargeContext,
    id: uuid::Uuid,
    outcome: &Outcome,
) -> Result<Option<Transaction>, Redeliver> {
    ctx.batches
        .write(id, Write::Record(outcome.clone()))
        .instrument(tracing::info_span!("record", outcome = outcome.name()))
        .await
        .map(|c| c.and_then(change::Change::applied_row))
        .map_err(db_err)
}

async fn canceled(ctx: &ChargeContext, txn: &Transaction) -> Result<(), Redeliver> {
    ctx.batches
        .write(txn.id, Write::Canceled)
        .await
        .map_err(db_err)?;
    tracing::info!(
        stripe_id = txn.stripe_id.as_deref(),
        "failed payment's intent canceled"
    );
    count_job("canceled");
    Ok(())
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

/// The Stripe calls of `step`, and what they decided.
async fn decide(ctx: &ChargeContext, txn: &Transaction, step: Step, lease: &mut Lease) -> Verdict {
    let stripe = &ctx.stripe;
    let was_unknown = txn.outcome_unknown_since.is_some();
    let priority = policy::priority(step);
    let Some(stripe_id) = txn.stripe_id.clone() else {
        return match step {
            Step::Create => create_and_confirm(ctx, txn, lease).await,
            // Never confirmed, so never charged: Stripe holds at most an intent nobody can
            // confirm (the reconciler lists it).
            _ => not_reached(),
        };
    };
    match step {
        Step::Create | Step::Inspect => {
            match read(stripe, &stripe_id, was_unknown, priority, lease).await {
                Verdict::AwaitingConfirm { stripe_id } => {
                    confirm(ctx, txn, &stripe_id, lease).await
                }
                v => v,
            }
        }
        Step::Resolve | Step::Recheck => {
            read(stripe, &stripe_id, was_unknown, priority, lease).await
        }
        Step::GiveUp => match read(stripe, &stripe_id, was_unknown, priority, lease).await {
            // Every confirm was refused before it ran: not charged; cancel the intent.
            Verdict::AwaitingConfirm { stripe_id } => Verdict::Declined {
                stripe_id: Some(stripe_id),
                error: not_reached_error(),
                intent: IntentAfter::Cancel,
            },
            v => v,
        },
        Step::Abandon | Step::Cancel => {
            let abandoned = step == Step::Abandon;
            let answer = stripe.cancel(txn, &stripe_id, abandoned, lease).await;
            match policy::classify(Call::Cancel, answer, false) {
                // "Already succeeded" or "already canceled": the intent says which.
                Verdict::ReadBack => read(stripe, &stripe_id, was_unknown, priority, lease).await,
                v => v,
            }
        }
    }
}

/// Reads the intent back (a consistent read) and says what it means.
async fn read(
    stripe: &Stripe,
    stripe_id: &str,
    was_unknown: bool,
    priority: Priority,
    lease: &mut Lease,
) -> Verdict {
    let answer = stripe.retrieve(stripe_id, priority, Some(lease)).await;
    policy::classify(Call::Retrieve, answer, was_unknown)
}

/// Creates the intent unconfirmed, stores its id, and confirms it by that id.
async fn create_and_confirm(ctx: &ChargeContext, txn: &Transaction, lease: &mut Lease) -> Verdict {
    let created = match ctx.stripe.create(txn, lease).await {
        Ok(facts) => facts,
        Err(e) => return policy::classify(Call::Create, Err(e), false),
    };
    let store = Write::IntentCreated {
        stripe_id: created.id.clone(),
        client_secret: created.client_secret.clone(),
    };
    match ctx.batches.write(txn.id, store).await {
        // The id stored (an earlier one, if another create under an expired key made this one).
        Ok(Some(c)) if c.applied => match c.row.stripe_id {
            Some(id) => confirm(ctx, txn, &id, lease).await,
            None => policy::transient("intent id not stored".into(), false),
        },
        // Not stored, so not confirmed: nothing can have been charged.
        Ok(_) => policy::transient("lease lost before the intent was stored".into(), false),
        Err(e) => policy::transient(format!("storing the intent id: {e}"), false),
    }
}

async fn confirm(
    ctx: &ChargeContext,
    txn: &Transaction,
    stripe_id: &str,
    lease: &mut Lease,
) -> Verdict {
    let answer = ctx.stripe.confirm(txn, stripe_id, lease).await;
    match policy::classify(Call::Confirm, answer, txn.outcome_unknown_since.is_some()) {
        // Refused for the intent's state: the intent says what happened.
        Verdict::ReadBack => {
            match read(&ctx.stripe, stripe_id, true, Priority::Customer, lease).await {
                Verdict::AwaitingConfirm { stripe_id } => Verdict::Declined {
                    stripe_id: Some(stripe_id),
                    error: intent::invalid_request(),
                    intent: IntentAfter::Cancel,
                },
                v => v,
            }
        }
        v => v,
    }
}

fn not_reached_error() -> TxError {
    TxError {
        code: "processing_error".into(),
        decline_code: None,
        message: intent::NOT_REACHED.into(),
    }
}

fn not_reached() -> Verdict {
    Verdict::Declined {
        stripe_id: None,
        error: not_reached_error(),
        intent: IntentAfter::Nothing,
    }
}

/// `payments_jobs_total{outcome}`: complete, failed, requires_action, retry (an attempt that
/// will be retried), canceled (a failed payment's intent), skipped (nothing to do: duplicate or
/// finished), deferred (circuit open), lease_lost, redelivered (could not record).
fn count_job(outcome: &'static str) {
    metrics::counter!("payments_jobs_total", "outcome" => outcome).increment(1);
}
