//! What Stripe (or the lack of an answer) decided about a payment, and the guarded update each
//! decision makes: the target state and the states it may be reached from.

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
    },
    /// No final answer yet: try again after `delay`, with the same idempotency key.
    Retry {
        stripe_id: Option<String>,
        reason: String,
        delay: Duration,
    },
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
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// A retry happens while a worker has the payment: a `pending` row was never claimed.
const RETRYABLE: &[TxState] = &[TxState::Processing, TxState::RequiresAction];

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
        };
        match self {
            Outcome::Complete { stripe_id } => Update {
                state: Some(TxState::Complete),
                from: TxState::Complete.predecessors(),
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
            Outcome::Failed { stripe_id, error } => Update {
                state: Some(TxState::Failed),
                from: TxState::Failed.predecessors(),
                stripe_id: stripe_id.as_deref(),
                error_code: Some(&error.code),
                error_decline_code: error.decline_code.as_deref(),
                error_message: Some(&error.message),
                ..base
            },
            Outcome::Retry {
                stripe_id,
                reason,
                delay,
            } => Update {
                state: None,
                from: RETRYABLE,
                stripe_id: stripe_id.as_deref(),
                reason: Some(reason),
                due_in_ms: Some(millis(*delay)),
                holder_only: true,
                ..base
            },
        }
    }
}
