//! Stripe's webhooks: the second path to the truth beside the worker. A payment whose job was
//! lost, or whose answer never reached the worker, still ends as Stripe decided, because
//! Stripe tells us.
//!
//! Trust nothing: the signature is checked over the raw bytes before anything is parsed;
//! the event is looked up by id in `stripe_events` in the same database transaction as the
//! change it makes, so a repeat changes nothing; the change itself only moves a payment
//! forward; and an intent that is not the payment's own (another PaymentIntent id, another
//! amount) is acknowledged and ignored. No Stripe call is made here: Stripe wants a 2xx fast.
//!
//! - `shared::signature`: `Stripe-Signature` parsing and verification.
//! - [`event`]: what an event says and what it means for a transaction.

pub mod event;

use std::time::{SystemTime, UNIX_EPOCH};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use shared::discrepancies::{self, NewDiscrepancy};
use shared::models::Transaction;
use shared::state_machine::change::{Source, Transition, change};
use shared::state_machine::outcome::Outcome;
use shared::stripe_events::{self, NewStripeEvent};
use shared::transactions::{self as txq, DbResult};
use tracing::Instrument;

use crate::error::ApiError;
use crate::http::json_guard;
use crate::state::AppState;
use event::{Effect, Event, Target};
use shared::intent::IntentFacts;

/// What became of a delivery we accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receipt {
    Processed,
    /// The event id was processed before: nothing changed.
    Duplicate,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Verifies, reads and applies one delivery.
pub async fn receive(
    state: &AppState,
    signature_header: Option<&str>,
    body: &[u8],
) -> Result<Receipt, ApiError> {
    let stripe = &state.settings.stripe;
    let secret = stripe
        .webhook_secret
        .as_ref()
        .ok_or(ApiError::WebhooksDisabled)?;
    shared::signature::verify(
        signature_header,
        body,
        secret.expose().as_bytes(),
        stripe.webhook_tolerance,
        now_unix(),
    )
    .map_err(|reason| {
        // Why is for our logs only: the caller learns nothing about which part was wrong.
        tracing::warn!(%reason, "webhook refused");
        ApiError::InvalidSignature
    })?;
    json_guard::check(body, json_guard::STRIPE_EVENT)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let event = event::decode(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let span = tracing::info_span!("stripe_event", id = %event.id, r#type = %event.type_);
    async {
        let mut conn = state.db.get().await?;
        let receipt = apply(state, &mut conn, &event).await?;
        tracing::info!(?receipt, "webhook processed");
        Ok(receipt)
    }
    .instrument(span)
    .await
}

/// Records the event and makes its change in one database transaction; pushes the job that
/// cancels a failed payment's intent once that transaction is committed (the api never calls
/// Stripe itself).
async fn apply(state: &AppState, conn: &mut AsyncPgConnection, event: &Event) -> DbResult<Receipt> {
    let (receipt, cancel) = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let txn = locate(conn, &event.target).await?;
            let record = NewStripeEvent {
                id: &event.id,
                type_: &event.type_,
                transaction_id: txn.as_ref().map(|t| t.id),
                created: event.created,
            };
            if !stripe_events::insert_new(conn, &record).await? {
                return Ok((Receipt::Duplicate, None));
            }
            let (note, cancel) = match txn {
                Some(txn) => apply_effect(conn, &txn, event).await?,
                // Acknowledged all the same, or Stripe would retry for days.
                None if !matches!(event.effect, Effect::Nothing) => {
                    ("ignored: for no transaction of ours".to_owned(), None)
                }
                None => ("ignored: not an event we act on".to_owned(), None),
            };
            if note.starts_with("ignored") {
                tracing::warn!(target_ = ?event.target, %note, "stripe event changed nothing");
            }
            stripe_events::set_outcome(conn, &event.id, &note).await?;
            Ok((Receipt::Processed, cancel))
        })
        .await?;
    if let Some(id) = cancel
        && let Err(e) = state.queue.enqueue(id, None).await
    {
        tracing::warn!(error = %e, "enqueue failed; the sweeper will pick the cancel up");
    }
    Ok(receipt)
}

async fn locate(conn: &mut AsyncPgConnection, target: &Target) -> DbResult<Option<Transaction>> {
    if let Some(id) = target.transaction_id
        && let Some(txn) = txq::find(conn, id).await?
    {
        return Ok(Some(txn));
    }
    match &target.payment_intent {
        Some(pi) => txq::find_by_stripe_id(conn, pi).await,
        None => Ok(None),
    }
}

/// Applies the event to `txn`: what it did (for `stripe_events.outcome`), and the payment whose
/// intent the worker must now cancel, if any.
async fn apply_effect(
    conn: &mut AsyncPgConnection,
    txn: &Transaction,
    event: &Event,
) -> DbResult<(String, Option<uuid::Uuid>)> {
    match &event.effect {
        Effect::Payment { outcome, intent } => {
            if let Err(why) = belongs_to(txn, intent) {
                if matches!(outcome, Outcome::Complete { .. }) {
                    // Succeeded, for one of ours, but not its own intent: money taken twice?
                    let d = NewDiscrepancy {
                        kind: "other_succeeded_intent",
                        transaction_id: Some(txn.id),
                        stripe_id: Some(&intent.id),
                        related_transaction_id: None,
                        detail: why,
                        source: Source::Webhook.as_str(),
                    };
                    discrepancies::record(conn, &d).await?;
                }
                return Ok((format!("ignored: {why}"), None));
            }
            let from_stripe = Transition::FromStripe {
                outcome,
                source: Source::Webhook,
                stripe_event: Some(&event.id),
            };
            let Some(changed) = change(conn, txn.id, from_stripe).await? else {
                return Ok(("ignored: nothing to change".into(), None));
            };
            if !changed.applied {
                let note = format!("ignored: the payment is already {}", changed.row.state);
                return Ok((note, None));
            }
            tracing::info!(transaction_id = %txn.id, from = %changed.previous,
                to = %changed.row.state, "payment updated from Stripe");
            let cancel = changed.row.cancel_pending().then_some(txn.id);
            Ok((
                format!("applied: {} -> {}", changed.previous, changed.row.state),
                cancel,
            ))
        }
        Effect::AfterCharge(what) => {
            txq::record_after_charge(conn, txn.id, *what, &format!("webhook {}", event.id)).await?;
            tracing::info!(transaction_id = %txn.id, ?what, "charge event recorded");
            Ok((format!("noted: {what:?}"), None))
        }
        Effect::Nothing => Ok(("ignored: not an event we act on".into(), None)),
    }
}

/// An intent speaks for a payment only if it is the payment's own: the same PaymentIntent
/// (once the worker knows it) and the same amount and currency.
fn belongs_to(txn: &Transaction, intent: &IntentFacts) -> Result<(), &'static str> {
    if txn.stripe_id.as_deref().is_some_and(|id| id != intent.id) {
        return Err("the payment has another PaymentIntent");
    }
    if intent.amount.is_some_and(|a| a != txn.amount)
        || intent
            .currency
            .as_deref()
            .is_some_and(|c| !c.eq_ignore_ascii_case(&txn.currency))
    {
        return Err("the PaymentIntent's amount or currency differs from the payment's");
    }
    Ok(())
}
