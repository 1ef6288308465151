//! What Stripe (or the lack of an answer) decided about a payment, and the guarded update each
//! decision makes: the target state, the states it may be reached from, and what it records
//! beside the state (an unknown outcome, a cancel to make).

use std::time::Duration;

use super::TxState;
use crate::models::TxError;

/// What a Stripe call decided about a payment.
#[derive(Clone, Debug)]
pub enum Outcome {
    Complete {
        stripe_id: String,
    },
    /// 3-D Secure pending; the row is checked against Stripe again after `recheck_in` (and at
    /// once when the browser reports the challenge done).
    RequiresAction {
        stripe_id: String,
        client_secret: String,
        recheck_in: Duration,
    },
    Failed {
        stripe_id: Option<String>,
        error: TxError,
        /// What must still happen to the intent.
        intent: IntentAfter,
    },
    /// No final answer yet: try again after `delay`, with the same idempotency key.
    Retry {
        stripe_id: Option<String>,
        reason: String,
        delay: Duration,
        /// A confirm may have executed: the card may be charged, and only a consistent read
        /// of the intent may settle it (the payment shows `outcome_unknown`).
        outcome_unknown: bool,
        /// The attempt the claim counted is given back (Stripe refused our configuration: the
        /// payment must wait for the fix, not run out of attempts).
        attempt_given_back: bool,
    },
}

/// The intent of a failed payment, after the failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentAfter {
    /// It can still be confirmed (`requires_payment_method`, `requires_confirmation`,
    /// `requires_action`): the worker cancels it, so nobody charges it later.
    Cancel,
    /// Stripe canceled it: nothing more to do.
    Canceled,
    /// There is none (or none we know of: it was never confirmed).
    Nothing,
}

impl Outcome {
    /// The metric label and log word for this outcome.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Complete { .. } => "complete",
            Outcome::RequiresAction { .. } => "requires_action",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "retry",
        }
    }
}

/// One guarded UPDATE, described by name rather than by position.
pub(super) struct Update<'a> {
    /// `None` keeps the state (a retry never moves `requires_action` back to `processing`).
    pub state: Option<TxState>,
    /// The states the row may be in for the update to apply.
    pub from: &'static [TxState],
    pub stripe_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    /// The customer-facing error; all three are written (cleared) whatever the outcome.
    pub error_code: Option<&'a str>,
    pub error_decline_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub due_in_ms: Option<i64>,
    /// Only the lease holder may write this update.
    pub holder_only: bool,
    /// `outcome_unknown_since`: kept (or set) when true, cleared when false.
    pub outcome_unknown: bool,
    /// Ask the worker to cancel the intent (`cancel_requested_at`).
    pub cancel_intent: bool,
    /// The intent is canceled (`canceled_at`).
    pub canceled: bool,
    /// Give back the charge attempt the claim counted.
    pub give_back_attempt: bool,
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A retry happens while a worker has the payment: a `pending` row was never claimed; a
/// `failed` one is retried only while the worker cancels its intent.
const RETRYABLE: &[TxState] = &[
    TxState::Processing,
    TxState::RequiresAction,
    TxState::Failed,
];

/// An ordinary record moves forward only; `failed` → `complete` is the correction (`change`).
const FORWARD_TO_FINAL: &[TxState] = &TxState::UNFINISHED;

impl Outcome {
    pub(super) fn update(&self) -> Update<'_> {
        let base = Update {
            state: None,
            from: &[],
            stripe_id: None,
            client_secret: None,
            error_code: None,
            error_decline_code: None,
            error_message: None,
            reason: None,
            due_in_ms: None,
            holder_only: false,
            outcome_unknown: false,
            cancel_intent: false,
            canceled: false,
            give_back_attempt: false,
        };
        match self {
            Outcome::Complete { stripe_id } => Update {
                state: Some(TxState::Complete),
                from: FORWARD_TO_FINAL,
                stripe_id: Some(stripe_id),
                ..base
            },
            Outcome::RequiresAction {
                stripe_id,
                client_secret,
                recheck_in,
            } => Update {
                state: Some(TxState::RequiresAction),
                // Re-reading an intent still waiting for the customer is a legal no-op move.
                from: &TxState::UNFINISHED,
                stripe_id: Some(stripe_id),
                client_secret: Some(client_secret),
                due_in_ms: Some(millis(*recheck_in)),
                ..base
            },
            Outcome::Failed {
                stripe_id,
                error,
                intent,
            } => Update {
                state: Some(TxState::Failed),
                from: FORWARD_TO_FINAL,
                stripe_id: stripe_id.as_deref(),
                error_code: Some(&error.code),
                error_decline_code: error.decline_code.as_deref(),
                error_message: Some(&error.message),
                cancel_intent: *intent == IntentAfter::Cancel && stripe_id.is_some(),
                canceled: *intent == IntentAfter::Canceled,
                // A cancel to make is due at once.
                due_in_ms: Some(0),
                ..base
            },
            Outcome::Retry {
                stripe_id,
                reason,
                delay,
                outcome_unknown,
                attempt_given_back,
            } => Update {
                state: None,
                from: RETRYABLE,
                stripe_id: stripe_id.as_deref(),
                reason: Some(reason),
                due_in_ms: Some(millis(*delay)),
                holder_only: true,
                outcome_unknown: *outcome_unknown,
                give_back_attempt: *attempt_given_back,
                ..base
            },
        }
    }
}
