//! The charge policy: what each Stripe answer means for a payment, and what to do next.
//!
//! Money moves only when an intent whose id we hold is confirmed: the worker creates the
//! intent unconfirmed, stores its id, then confirms it by id. So "not charged" is never
//! concluded from an eventually consistent read (search): either Stripe's consistent read of
//! the intent says so, or we never sent a confirm.
//!
//! - Before an attempt: [`first_step`] (create, inspect an intent we hold, resolve a confirm
//!   whose answer was lost, re-check 3-D Secure, abandon it, cancel a failed payment's intent,
//!   or give up on one never confirmed).
//! - After each call: [`classify`] turns an answer (an intent, an error, none) into a
//!   [`Verdict`].
//! - Then [`outcome`] (in `schedule.rs`): the verdict as the change to record, with the backoff
//!   of a retry or the delay of a 3-D Secure re-check.
//! - Which failures are outages (the breaker counts them) and which are alarms about our own
//!   configuration, never verdicts on a card: [`is_outage`], [`is_alarm`].
//!
//! Everything here is pure: the job (`jobs::stripe_charge`) makes the calls and the writes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::intent::{self, IntentFacts, IntentVerdict, PaymentError};
use shared::models::{Transaction, TxError};
use shared::settings::RetrySettings;
use shared::state_machine::TxState;
use shared::state_machine::outcome::IntentAfter;

use crate::stripe::Priority;
use crate::stripe::http::{CallError, ErrorObject};

mod schedule;
pub use schedule::{Attempt, backoff, outcome, recheck_delay};

/// What a Stripe answer (or the lack of one) means.
#[derive(Clone, Debug)]
pub enum Verdict {
    Succeeded {
        stripe_id: String,
    },
    RequiresAction {
        stripe_id: String,
        client_secret: String,
    },
    /// Stripe says the card was not charged.
    Declined {
        stripe_id: Option<String>,
        error: TxError,
        intent: IntentAfter,
    },
    /// The intent waits for a confirm: none of ours executed.
    AwaitingConfirm {
        stripe_id: String,
    },
    /// Stripe canceled the intent at our request.
    Canceled {
        stripe_id: String,
    },
    /// The request was refused because of the intent's state: read the intent back.
    ReadBack,
    /// Stripe refused our configuration (key, permission, account): retried, and the attempt
    /// it cost is given back, so the payment waits for the fix instead of running out.
    Alarm {
        reason: String,
        outcome_unknown: bool,
    },
    /// Try again later with the same keys. `outcome_unknown`: a confirm may have executed.
    Transient {
        stripe_id: Option<String>,
        reason: String,
        retry_after: Option<Duration>,
        outcome_unknown: bool,
    },
}

pub fn transient(reason: String, outcome_unknown: bool) -> Verdict {
    Verdict::Transient {
        stripe_id: None,
        reason,
        retry_after: None,
        outcome_unknown,
    }
}

/// The calls the worker makes to Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Create,
    Confirm,
    Retrieve,
    Cancel,
    List,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Create => "create",
            Call::Confirm => "confirm",
            Call::Retrieve => "retrieve",
            Call::Cancel => "cancel",
            Call::List => "list",
        }
    }
}

/// How an attempt starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No intent yet: create it unconfirmed, store its id, confirm it.
    Create,
    /// We hold the intent's id: read it; confirm it if it still waits for a confirm.
    Inspect,
    /// A confirm was sent and its answer lost: read the intent back (not a charge attempt).
    Resolve,
    /// Waiting for the customer's 3-D Secure: read the intent back.
    Recheck,
    /// 3-D Secure not completed in time: cancel the intent; the payment fails unless Stripe
    /// says it succeeded meanwhile.
    Abandon,
    /// The payment failed with an intent that could still be confirmed: cancel it.
    Cancel,
    /// Every attempt spent without a definite answer: read the intent if we hold one; a
    /// payment never confirmed was not charged.
    GiveUp,
}

/// Whose work a step is under Stripe's rate limit: a new payment's charge (a first or a
/// retried attempt) and reading back a confirm whose answer was lost are what customers wait
/// on; re-checking a 3-D Secure that the customer has not finished, canceling an intent and
/// giving up are background work, which waits while customers use the budget.
pub fn priority(step: Step) -> Priority {
    match step {
        Step::Create | Step::Inspect | Step::Resolve => Priority::Customer,
        Step::Recheck | Step::Abandon | Step::Cancel | Step::GiveUp => Priority::Background,
    }
}

pub fn first_step(
    txn: &Transaction,
    retry: &RetrySettings,
    requires_action_timeout: Duration,
    now: DateTime<Utc>,
) -> Step {
    let waited = |since: Option<DateTime<Utc>>| {
        since.map_or(Duration::ZERO, |s| (now - s).to_std().unwrap_or_default())
    };
    match txn.state {
        TxState::Failed => Step::Cancel,
        TxState::RequiresAction if waited(txn.requires_action_since) >= requires_action_timeout => {
            Step::Abandon
        }
        TxState::RequiresAction => Step::Recheck,
        _ if txn.outcome_unknown_since.is_some() => Step::Resolve,
        _ if txn.attempts > retry.max_attempts => Step::GiveUp,
        _ if txn.stripe_id.is_none() => Step::Create,
        _ => Step::Inspect,
    }
}

/// An intent's status as a verdict.
pub fn verdict_for_intent(facts: IntentFacts) -> Verdict {
    let stripe_id = facts.id.clone();
    match facts.status.as_deref() {
        Some("requires_confirmation") => return Verdict::AwaitingConfirm { stripe_id },
        Some("canceled") => return Verdict::Canceled { stripe_id },
        _ => {}
    }
    match intent::verdict(&facts) {
        IntentVerdict::Succeeded => Verdict::Succeeded { stripe_id },
        IntentVerdict::RequiresAction { client_secret } => Verdict::RequiresAction {
            stripe_id,
            client_secret,
        },
        // Back to `requires_payment_method`: it can be confirmed again, so it is canceled.
        IntentVerdict::NotCharged(error) => Verdict::Declined {
            stripe_id: Some(stripe_id),
            error,
            intent: IntentAfter::Cancel,
        },
        // `processing`: Stripe has not decided; nobody knows yet whether money moved.
        IntentVerdict::Undecided(reason) => Verdict::Transient {
            stripe_id: Some(stripe_id),
            reason,
            retry_after: None,
            outcome_unknown: true,
        },
    }
}

/// An answer to `call` as a verdict. `was_unknown`: the payment's outcome was unknown before
/// this call (an answer that settles nothing keeps it so).
pub fn classify(call: Call, answer: Result<IntentFacts, CallError>, was_unknown: bool) -> Verdict {
    // A confirm that may have executed leaves the outcome unknown until a read settles it.
    let maybe_ran = was_unknown || call == Call::Confirm;
    match answer {
        Ok(facts) => verdict_for_intent(facts),
        Err(e) if is_alarm(call, &e).is_some() => Verdict::Alarm {
            reason: e.to_string(),
            outcome_unknown: was_unknown,
        },
        Err(CallError::Api {
            status,
            error,
            retry_after,
            should_retry,
        }) => verdict_for_error(
            call,
            &error,
            status,
            retry_after,
            should_retry,
            maybe_ran,
            was_unknown,
        ),
        // Never left, or refused before anything ran.
        Err(e @ (CallError::Connect(_) | CallError::NotSent(_))) => {
            transient(e.to_string(), was_unknown)
        }
        // No (readable) answer: the request may have executed. The same key makes the retry
        // safe: Stripe replays what it did.
        Err(e) => transient(e.to_string(), maybe_ran && call != Call::Cancel),
    }
}

fn verdict_for_error(
    call: Call,
    err: &ErrorObject,
    status: u16,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
    maybe_ran: bool,
    was_unknown: bool,
) -> Verdict {
    let reason = format!(
        "stripe {status} {} {}",
        err.type_,
        err.code.as_deref().unwrap_or("-")
    );
    let transient = |reason, outcome_unknown| Verdict::Transient {
        stripe_id: None,
        reason,
        retry_after,
        outcome_unknown,
    };
    match (err.type_.as_str(), status) {
        // A decline is Stripe's final word, whatever else the response says; the intent is
        // back to `requires_payment_method` and is canceled.
        ("card_error", _) => Verdict::Declined {
            stripe_id: err.payment_intent.clone(),
            error: intent::customer_error(Some(&PaymentError {
                type_: Some(err.type_.clone()),
                code: err.code.clone(),
                decline_code: err.decline_code.clone(),
                message: err.message.clone(),
            })),
            intent: IntentAfter::Cancel,
        },
        // Rate limits and collisions are answered before anything runs; but a collision on a
        // confirm means our own earlier confirm is still executing.
        (_, 429) => transient(reason, was_unknown),
        ("idempotency_error", _) | (_, 409) | (_, 500..=599) => transient(reason, maybe_ran),
        // Stripe-Should-Retry overrides the guess from the status code.
        _ if should_retry == Some(true) => transient(reason, maybe_ran),
        ("invalid_request_error", 400 | 402 | 404) => refused(call, reason, was_unknown),
        _ if should_retry == Some(false) => refused(call, reason, was_unknown),
        // Anything new: not the customer's fault; try later.
        _ => transient(reason, maybe_ran),
    }
}

/// Stripe refused the request. A create refused can never charge (nothing was confirmed); a
/// confirm or cancel refused for the intent's state needs a read of the intent.
fn refused(call: Call, reason: String, was_unknown: bool) -> Verdict {
    match call {
        Call::Create => {
            tracing::warn!(detail = %reason, "stripe rejected the payment as invalid");
            Verdict::Declined {
                stripe_id: None,
                error: intent::invalid_request(),
                intent: IntentAfter::Nothing,
            }
        }
        Call::Confirm | Call::Cancel => Verdict::ReadBack,
        Call::Retrieve | Call::List => transient(reason, was_unknown),
    }
}

/// Failures that say "Stripe (or the way to it) is down", as opposed to answers about a payment.
pub fn is_outage(e: &CallError) -> bool {
    match e {
        CallError::Api { status, .. } => *status >= 500,
        CallError::Timeout
        | CallError::Connect(_)
        | CallError::Broken(_)
        | CallError::Unreadable { .. } => true,
        CallError::NotSent(_) => false,
    }
}

/// Answers that say nothing about the payment and everything about our setup: a refused key
/// (401, a rolled or test/live mixed key), a refused permission (403, a restricted key), and a
/// missing intent we created ourselves (404 on reading, confirming or canceling it: the wrong
/// account or mode). Never a verdict on the payment: the payment is retried, the breaker counts
/// them, ops are alarmed.
pub fn is_alarm(call: Call, e: &CallError) -> Option<&'static str> {
    match e {
        CallError::Api { status: 401, .. } => Some("authentication"),
        CallError::Api { status: 403, .. } => Some("permission"),
        CallError::Api {
            status: 404, error, ..
        } if call != Call::Create && error.code.as_deref() == Some("resource_missing") => {
            Some("intent_missing")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
