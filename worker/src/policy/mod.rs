//! The charge policy: what each Stripe answer means for a payment, and what to do next.
//!
//! - Before a call: [`first_step`] (charge, look the intent up first when our idempotency key
//!   may have expired, or only resolve once the attempts are spent).
//! - After a call: [`classify`] turns an answer (an intent, an error, no answer) into a
//!   [`Verdict`]; [`look_up_after`] says when an ambiguous answer calls for a lookup;
//!   [`resolved`] reads a lookup's result.
//! - Then [`outcome`]: the verdict as the state change to record, with the backoff of a retry.
//! - Which failures are outages (the breaker counts them) and which are alarms about our own
//!   configuration, never verdicts on a card: [`is_outage`], [`is_alarm`].
//!
//! Everything here is pure: the job (`jobs::stripe_charge`) makes the calls and the writes.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngExt;
use shared::intent::{self, IntentFacts, IntentVerdict, PaymentError};
use shared::models::{Transaction, TxError};
use shared::settings::RetrySettings;
use shared::state_machine::outcome::Outcome;

use crate::stripe::http::{CallError, ErrorObject};

/// Stripe may forget an idempotency key after 24 hours; past this age a create could run
/// again, so the intent is looked up first.
pub const KEY_SAFE_AGE: TimeDelta = TimeDelta::hours(23);

/// Ambiguous answers (5xx) tolerated with the same key before the intent is looked up.
pub const UNKNOWN_BEFORE_LOOKUP: i32 = 3;

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
    /// Stripe says the card was not charged and will not be for this transaction.
    Declined {
        stripe_id: Option<String>,
        error: TxError,
    },
    /// Try again later with the same key: timeouts, connection errors, 429, 409, `processing`,
    /// our own configuration refused. `retry_after` when Stripe named a wait.
    Transient {
        stripe_id: Option<String>,
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The answer does not tell what happened (a 5xx, perhaps stored and replayed; a key used
    /// with other parameters): retry with the same key, and look the intent up if it persists.
    Unknown {
        reason: String,
    },
}

pub fn transient(reason: String) -> Verdict {
    Verdict::Transient {
        stripe_id: None,
        reason,
        retry_after: None,
    }
}

/// The calls the worker makes to Stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Create,
    Retrieve,
    Search,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Create => "create",
            Call::Retrieve => "retrieve",
            Call::Search => "search",
        }
    }
}

/// How an attempt starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create (or, with the intent's id known, retrieve) with the transaction's own key.
    Charge,
    /// The key may have expired at Stripe, so a create could charge a second time: look the
    /// intent up, and create only if there is none.
    LookUpFirst,
    /// Every create was answered or timed out at least one backoff ago, so none can still be
    /// executing: ask Stripe what happened instead of sending again.
    Resolve,
}

pub fn first_step(txn: &Transaction, retry: &RetrySettings, now: DateTime<Utc>) -> Step {
    if txn.attempts > retry.max_attempts {
        Step::Resolve
    } else if txn.stripe_id.is_none() && now - txn.created_at > KEY_SAFE_AGE {
        Step::LookUpFirst
    } else {
        Step::Charge
    }
}

/// The same key keeps replaying an ambiguous answer (a stored 500): look the intent up.
pub fn look_up_after(verdict: &Verdict, attempts: i32) -> bool {
    matches!(verdict, Verdict::Unknown { .. }) && attempts >= UNKNOWN_BEFORE_LOOKUP
}

/// What a lookup found. Found: its status is the answer. Not found: Stripe never created a
/// PaymentIntent for it, so the card was not charged and the payment fails. Lookup failed
/// (including a known intent Stripe says it does not have): try again later, never guess.
pub fn resolved(lookup: Result<Option<Verdict>, String>) -> Verdict {
    match lookup {
        Ok(Some(v)) => v,
        Ok(None) => Verdict::Declined {
            stripe_id: None,
            error: TxError {
                code: "processing_error".into(),
                decline_code: None,
                message: intent::NOT_REACHED.into(),
            },
        },
        Err(e) => transient(format!("lookup failed: {e}")),
    }
}

/// An intent's status as a verdict.
pub fn verdict_for_intent(facts: IntentFacts) -> Verdict {
    let stripe_id = facts.id.clone();
    match intent::verdict(&facts) {
        IntentVerdict::Succeeded => Verdict::Succeeded { stripe_id },
        IntentVerdict::RequiresAction { client_secret } => Verdict::RequiresAction {
            stripe_id,
            client_secret,
        },
        IntentVerdict::NotCharged(error) => Verdict::Declined {
            stripe_id: Some(stripe_id),
            error,
        },
        IntentVerdict::Undecided(reason) => Verdict::Transient {
            stripe_id: Some(stripe_id),
            reason,
            retry_after: None,
        },
    }
}

/// An answer to `call` as a verdict.
pub fn classify(call: Call, result: Result<IntentFacts, CallError>) -> Verdict {
    match result {
        Ok(facts) => verdict_for_intent(facts),
        Err(e) if is_alarm(call, &e).is_some() => transient(e.to_string()),
        Err(CallError::Api {
            status,
            error,
            retry_after,
            should_retry,
        }) => verdict_for_error(&error, status, retry_after, should_retry),
        // No (readable) answer: the request may have executed. The same key makes the retry
        // safe: Stripe replays what it did.
        Err(e) => transient(e.to_string()),
    }
}

fn verdict_for_error(
    err: &ErrorObject,
    status: u16,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
) -> Verdict {
    let reason = format!(
        "stripe {status} {} {}",
        err.type_,
        err.code.as_deref().unwrap_or("-")
    );
    let transient = |reason| Verdict::Transient {
        stripe_id: None,
        reason,
        retry_after,
    };
    match (err.type_.as_str(), status) {
        // A decline is Stripe's final word, whatever else the response says.
        ("card_error", _) => Verdict::Declined {
            stripe_id: err.payment_intent.clone(),
            error: intent::customer_error(Some(&PaymentError {
                type_: Some(err.type_.clone()),
                code: err.code.clone(),
                decline_code: err.decline_code.clone(),
                message: err.message.clone(),
            })),
        },
        // The first request with our key is still running at Stripe.
        ("idempotency_error", 409) => transient(reason),
        // Our key met different parameters: only a lookup can tell what the first one did.
        ("idempotency_error", _) => Verdict::Unknown { reason },
        // 5xx may have executed; Stripe may even have stored it and replay it for our key.
        (_, 500..=599) => Verdict::Unknown { reason },
        // Stripe-Should-Retry overrides the guess from the status code.
        _ if should_retry == Some(true) => transient(reason),
        // Refused before doing anything (bad parameters, unknown payment method): retrying
        // cannot help, and nothing was charged.
        ("invalid_request_error", 400 | 402 | 404) => {
            tracing::warn!(
                detail = err.message.as_deref().unwrap_or("invalid request"),
                "stripe rejected the request as invalid"
            );
            Verdict::Declined {
                stripe_id: None,
                error: intent::invalid_request(),
            }
        }
        _ if should_retry == Some(false) => {
            tracing::warn!(detail = %reason, "stripe rejected the request as invalid");
            Verdict::Declined {
                stripe_id: None,
                error: intent::invalid_request(),
            }
        }
        // 429 and anything new: not the customer's fault; try later.
        _ => transient(reason),
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
    }
}

/// Answers that say nothing about the payment and everything about our setup: a refused key
/// (401, a rolled or test/live mixed key), a refused permission (403, a restricted key), and a
/// missing intent we created ourselves (404 on retrieve: the wrong account or mode). Never a
/// verdict on the payment: the payment is retried, the breaker counts them, ops are alarmed.
pub fn is_alarm(call: Call, e: &CallError) -> Option<&'static str> {
    match e {
        CallError::Api { status: 401, .. } => Some("authentication"),
        CallError::Api { status: 403, .. } => Some("permission"),
        CallError::Api { status: 404, .. } if call == Call::Retrieve => Some("intent_missing"),
        _ => None,
    }
}

/// Delay before attempt `attempts + 1`: `base * 2^(attempts-1)`, capped at `max`, then drawn
/// uniformly from its upper half, so workers that failed together do not retry together.
pub fn backoff(settings: &RetrySettings, attempts: i32) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let ceiling = settings
        .base_delay
        .saturating_mul(2u32.saturating_pow(exp))
        .min(settings.max_delay);
    let half = ceiling / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter_ms)
}

/// The verdict as the change to record: a retry waits out its backoff (or Stripe's
/// `Retry-After`, if longer); a payment waiting for 3-D Secure is read again after `recheck`.
pub fn outcome(
    verdict: Verdict,
    attempts: i32,
    retry: &RetrySettings,
    recheck: Duration,
) -> Outcome {
    let delay =
        |at_least: Option<Duration>| backoff(retry, attempts).max(at_least.unwrap_or_default());
    match verdict {
        Verdict::Succeeded { stripe_id } => Outcome::Complete { stripe_id },
        Verdict::RequiresAction {
            stripe_id,
            client_secret,
        } => Outcome::RequiresAction {
            stripe_id,
            client_secret,
            recheck_in: recheck,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(&settings(), 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(101));
            let fourth = backoff(&settings(), 4);
            assert!(fourth >= Duration::from_millis(400) && fourth <= Duration::from_millis(801));
            let late = backoff(&settings(), 30);
            assert!(late >= Duration::from_secs(1) && late <= Duration::from_millis(2001));
        }
    }
}
