//! The one way a payment's state changes: [`change`], for every [`Transition`] (a worker's
//! claim, what it learned and its lease, Stripe's webhook, the reconciler, the 3-D Secure
//! re-check, an operator's retry).
//!
//! Each transition is one statement (`statements.rs`) that locks the row, writes it if its guard
//! allows, and returns the row as it is now with the state it had before, whether or not the
//! guard allowed it. So every caller learns the previous and the new state, and why nothing
//! changed, in one round trip; the corrections (`failed` → `complete`) and the event log hook
//! in here.

use std::time::Duration;

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::TxState;
use super::outcome::Outcome;
use super::statements::{
    Canceled, Caused, ChangeRow, ClaimMany, Correct, DueNow, IntentsCreated, RecordMany, Renew,
    StripeAction,
};
use crate::db::{DbResult, interval};
use crate::models::Transaction;
use crate::prepared::Prepared;

/// The name Stripe's webhooks write under. No worker holds a lease by that name, so a webhook
/// can write final outcomes only: a retry belongs to the lease holder.
pub const WEBHOOK_OWNER: &str = "stripe-webhook";

/// Who learned what Stripe said, for the records a correction leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Worker,
    Webhook,
    Reconciler,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Worker => "worker",
            Source::Webhook => "webhook",
            Source::Reconciler => "reconciler",
        }
    }
}

/// A change someone asks of a payment.
#[derive(Clone, Copy, Debug)]
pub enum Transition<'a> {
    /// A worker takes the payment for one attempt: a lease (or an expired one over),
    /// `pending` → `processing` (`requires_action` stays: the attempt re-reads the intent). A
    /// charge attempt is counted only when a create or confirm may be sent. Only an unfinished,
    /// due row with no live lease, or a failed one whose intent is still to cancel.
    Claim { owner: &'a str, lease: Duration },
    /// The holder extends its lease before a Stripe call, so no call outlives it.
    Renew { owner: &'a str, lease: Duration },
    /// The holder stores the id of the intent it created, before confirming it.
    IntentCreated {
        owner: &'a str,
        stripe_id: &'a str,
        client_secret: Option<&'a str>,
    },
    /// The holder writes what Stripe decided and releases the lease. Only the lease holder
    /// may: no attempt outlives its lease, so a worker whose lease was taken over has nothing
    /// to write. `complete` for a payment recorded `failed` is the correction.
    Record {
        owner: &'a str,
        outcome: &'a Outcome,
    },
    /// Stripe's word from outside an attempt (a webhook, the reconciler): final outcomes
    /// forward only, whoever holds the lease (Stripe's word decides); `requires_action` moves
    /// only a payment that has not reached it and leaves any lease alone; `complete` for a
    /// `failed` payment is the correction. A retry says nothing here.
    FromStripe {
        outcome: &'a Outcome,
        source: Source,
        /// The Stripe event that said so, when a webhook did (its event's cause).
        stripe_event: Option<&'a str>,
    },
    /// The holder canceled a failed payment's intent.
    Canceled { owner: &'a str },
    /// The browser finished a 3-D Secure challenge: a `requires_action` payment is due now.
    /// Only that state: moving a `processing` payment's retry forward would let a caller burn
    /// its attempts and backoff by calling in a loop.
    RecheckNow,
    /// An operator's retry: any unfinished payment is due now.
    DueNow,
}

/// What [`change`] found and did.
#[derive(Clone, Debug)]
pub struct Change {
    /// Whether the guard allowed the change (the row was written).
    pub applied: bool,
    /// The state before.
    pub previous: TxState,
    /// The row as it is now: changed if `applied`, else as it was.
    pub row: Transaction,
}

impl Change {
    /// The row, if the change applied.
    pub fn applied_row(self) -> Option<Transaction> {
        self.applied.then_some(self.row)
    }

    /// A payment recorded failed that Stripe charged, just corrected to complete.
    pub fn is_correction(&self) -> bool {
        self.applied && self.previous == TxState::Failed && self.row.state == TxState::Complete
    }
}

fn from(r: ChangeRow) -> Change {
    Change {
        applied: r.applied,
        previous: r.previous_state,
        row: r.row,
    }
}

impl Transition<'_> {
    /// Who asks, as the event a change of state writes records it: `worker <name>`, `webhook
    /// <Stripe event id>`, `reconciler`, `customer` (back from 3-D Secure), `ops`.
    pub fn cause(&self) -> String {
        match self {
            Transition::Claim { owner, .. }
            | Transition::Renew { owner, .. }
            | Transition::IntentCreated { owner, .. }
            | Transition::Record { owner, .. }
            | Transition::Canceled { owner } => worker_cause(owner),
            Transition::FromStripe {
                source: Source::Webhook,
                stripe_event: Some(event),
                ..
            } => format!("webhook {event}"),
            Transition::FromStripe { source, .. } => source.as_str().to_owned(),
            Transition::RecheckNow => "customer".to_owned(),
            Transition::DueNow => "ops".to_owned(),
        }
    }
}

fn worker_cause(owner: &str) -> String {
    format!("worker {owner}")
}

/// Applies `transition` to transaction `id`. `None`: no such transaction (or a transition that
/// asks nothing, a retry reported by Stripe). A change of state writes its event in the same
/// statement (`payment_events`, with its webhook deliveries).
pub async fn change(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    transition: Transition<'_>,
) -> DbResult<Option<Change>> {
    let cause = transition.cause();
    let changed = match transition {
        Transition::Claim { owner, lease } => {
            let ids = [id];
            let s = ClaimMany {
                ids: &ids,
                owner,
                lease: interval(lease),
            };
            run(conn, s, &cause).await?
        }
        Transition::Renew { owner, lease } => {
            let s = Renew {
                id,
                owner,
                lease: interval(lease),
            };
            run(conn, s, &cause).await?
        }
        Transition::IntentCreated {
            owner,
            stripe_id,
            client_secret,
        } => {
            let s = IntentsCreated::new(owner, &[(id, stripe_id, client_secret)]);
            run(conn, s, &cause).await?
        }
        Transition::Record { owner, outcome } => {
            let s = RecordMany::new(owner, &[(id, held(outcome))]);
            let recorded = run(conn, s, &cause).await?;
            correct_if_failed(conn, id, recorded, outcome, Source::Worker, &cause).await?
        }
        Transition::FromStripe {
            outcome, source, ..
        } => match outcome {
            Outcome::Complete { .. } | Outcome::Failed { .. } => {
                let s = RecordMany::new(WEBHOOK_OWNER, &[(id, outcome.update())]);
                let recorded = run(conn, s, &cause).await?;
                correct_if_failed(conn, id, recorded, outcome, source, &cause).await?
            }
            Outcome::RequiresAction {
                stripe_id,
                client_secret,
                ..
            } => {
                let s = StripeAction {
                    id,
                    stripe_id,
                    client_secret,
                };
                run(conn, s, &cause).await?
            }
            Outcome::Retry { .. } => None,
        },
        Transition::Canceled { owner } => run(conn, Canceled { id, owner }, &cause).await?,
        Transition::RecheckNow => {
            let s = DueNow {
                id,
                from: &[TxState::RequiresAction],
            };
            run(conn, s, &cause).await?
        }
        Transition::DueNow => {
            let s = DueNow {
                id,
                from: &TxState::UNFINISHED,
            };
            run(conn, s, &cause).await?
        }
    };
    note_correction(&changed);
    Ok(changed)
}

/// A worker's record: only while it holds the lease.
fn held(outcome: &Outcome) -> super::outcome::Update<'_> {
    let mut update = outcome.update();
    update.holder_only = true;
    update
}

fn note_correction(changed: &Option<Change>) {
    if let Some(c) = changed
        && c.is_correction()
    {
        metrics::counter!("payments_corrections_total").increment(1);
        tracing::warn!(transaction_id = %c.row.id, stripe_id = c.row.stripe_id.as_deref(),
            "payment recorded failed was charged by Stripe: corrected to complete");
    }
}

/// [`Transition::Record`] by `owner` of every `(id, outcome)`, in one statement (one round trip,
/// one commit): the worker's group commit of a round's outcomes (`worker/src/batch.rs`). Each
/// row is written, or not, exactly as [`change`] alone would (a `complete` that finds the
/// payment `failed` is then the correction, in a statement of its own); the answers come back
/// in the order given. `outcomes` must not name a payment twice.
pub async fn record_many(
    conn: &mut AsyncPgConnection,
    owner: &str,
    outcomes: &[(Uuid, &Outcome)],
) -> DbResult<Vec<Option<Change>>> {
    let cause = worker_cause(owner);
    let updates: Vec<_> = outcomes.iter().map(|(id, o)| (*id, held(o))).collect();
    let recorded = run_many(conn, RecordMany::new(owner, &updates), &cause).await?;
    let mut answers = Vec::with_capacity(outcomes.len());
    for ((id, outcome), recorded) in outcomes.iter().zip(recorded) {
        let changed =
            correct_if_failed(conn, *id, recorded, outcome, Source::Worker, &cause).await?;
        note_correction(&changed);
        answers.push(changed);
    }
    Ok(answers)
}

/// [`Transition::IntentCreated`] by `owner` of every `(id, intent id, client secret)`, in one
/// statement whose commit waits for its WAL flush whatever the connection's
/// `synchronous_commit` (an intent's id must be on disk before the intent is confirmed). The
/// answers come back in the order given; `intents` must not name a payment twice.
pub async fn intents_created(
    conn: &mut AsyncPgConnection,
    owner: &str,
    intents: &[(Uuid, &str, Option<&str>)],
) -> DbResult<Vec<Option<Change>>> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let cause = worker_cause(owner);
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        conn.batch_execute("SET LOCAL synchronous_commit = on")
            .await?;
        run_many(conn, IntentsCreated::new(owner, intents), &cause).await
    })
    .await
}

/// [`change`] of each `(id, transition)` in turn, all in one transaction: one commit for all
/// (the worker's group commit, `worker/src/batch.rs`). Give them in id order, the order every
/// statement locks rows in. Any error rolls all of them back. `durable`: the commit waits for
/// its WAL flush even on a connection whose commits otherwise do not (the worker's: an intent's
/// id must be on disk before the intent is confirmed).
pub async fn change_all(
    conn: &mut AsyncPgConnection,
    changes: &[(Uuid, Transition<'_>)],
    durable: bool,
) -> DbResult<Vec<Option<Change>>> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        if durable {
            conn.batch_execute("SET LOCAL synchronous_commit = on")
                .await?;
        }
        let mut done = Vec::with_capacity(changes.len());
        for (id, transition) in changes {
            done.push(change(conn, *id, *transition).await?);
        }
        Ok(done)
    })
    .await
}

async fn run<S>(conn: &mut AsyncPgConnection, statement: S, cause: &str) -> DbResult<Option<Change>>
where
    S: crate::prepared::FixedSql + Send,
{
    let caused = Caused { statement, cause };
    let row: Option<ChangeRow> = Prepared(caused).get_result(conn).await.optional()?;
    Ok(row.map(from))
}

/// A statement over many rows (`id = ANY($1)`, `$1` the ids): its changes, in the order of
/// `ids`; `None` for a payment that does not exist.
async fn run_many<S>(
    conn: &mut AsyncPgConnection,
    statement: S,
    cause: &str,
) -> DbResult<Vec<Option<Change>>>
where
    S: crate::prepared::FixedSql + super::statements::ManyRows + Send,
{
    let ids = statement.ids().to_vec();
    let caused = Caused { statement, cause };
    let rows: Vec<ChangeRow> = Prepared(caused).load(conn).await?;
    let mut by_id: std::collections::HashMap<Uuid, Change> =
        rows.into_iter().map(|r| (r.row.id, from(r))).collect();
    Ok(ids.iter().map(|id| by_id.remove(id)).collect())
}

/// Stripe's `succeeded` always wins: a `complete` that found the payment `failed` becomes the
/// correction.
async fn correct_if_failed(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    changed: Option<Change>,
    outcome: &Outcome,
    source: Source,
    cause: &str,
) -> DbResult<Option<Change>> {
    let Outcome::Complete { stripe_id } = outcome else {
        return Ok(changed);
    };
    match changed {
        Some(c) if !c.applied && c.row.state == TxState::Failed => {
            let s = Correct {
                id,
                stripe_id,
                source: source.as_str(),
            };
            run(conn, s, cause).await
        }
        other => Ok(other),
    }
}

/// Why a claim took nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotClaimed {
    /// No such transaction.
    Missing,
    /// The payment is `complete`, or `failed` with nothing left to cancel.
    Finished(TxState),
    /// Another delivery holds a live lease, until then.
    Leased {
        owner: Option<String>,
        until: chrono::DateTime<Utc>,
    },
    /// Its next attempt is later (a retry's backoff, a 3-D Secure re-check).
    NotDue(chrono::DateTime<Utc>),
}

/// [`Transition::Claim`], with the reason when nothing was claimed, read off the row the
/// statement returned (no second query).
pub async fn claim(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    lease: Duration,
) -> DbResult<Result<Transaction, NotClaimed>> {
    let Some(c) = change(conn, id, Transition::Claim { owner, lease }).await? else {
        return Ok(Err(NotClaimed::Missing));
    };
    Ok(claimed(c))
}

/// [`claim`] of every payment in `ids` for `owner`, in one statement (one round trip, one
/// commit): each row is claimed or not exactly as [`claim`] alone would, and the answers come
/// back in the order of `ids`. `ids` must not repeat an id (a second claim of a row in the same
/// statement would look like a first).
pub async fn claim_many(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
    owner: &str,
    lease: Duration,
) -> DbResult<Vec<Result<Transaction, NotClaimed>>> {
    debug_assert!(
        ids.iter().collect::<std::collections::HashSet<_>>().len() == ids.len(),
        "claim_many: repeated id"
    );
    let cause = Transition::Claim { owner, lease }.cause();
    let s = ClaimMany {
        ids,
        owner,
        lease: interval(lease),
    };
    let changes = run_many(conn, s, &cause).await?;
    Ok(changes
        .into_iter()
        .map(|c| c.map_or(Err(NotClaimed::Missing), claimed))
        .collect())
}

/// The claimed row, or why the claim took nothing.
fn claimed(c: Change) -> Result<Transaction, NotClaimed> {
    if c.applied {
        return Ok(c.row);
    }
    let t = c.row;
    let now = Utc::now();
    Err(if t.state.is_final() && !t.cancel_pending() {
        NotClaimed::Finished(t.state)
    } else if let Some(until) = t.lease_expires_at.filter(|u| *u >= now) {
        NotClaimed::Leased {
            owner: t.lease_owner,
            until,
        }
    } else {
        NotClaimed::NotDue(t.next_attempt_at)
    })
}

/// [`Transition::Record`] through [`change`]: the row when it changed.
pub async fn record(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    owner: &str,
    outcome: &Outcome,
) -> DbResult<Option<Transaction>> {
    let changed = change(conn, id, Transition::Record { owner, outcome }).await?;
    Ok(changed.and_then(Change::applied_row))
}
