//! When the next step comes, and the verdict as the change to record: a retry's backoff
//! (charge attempts, or reads while resolving), a 3-D Secure re-check's delay.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use shared::intent;
use shared::models::{Transaction, TxError};
use shared::settings::RetrySettings;
use shared::state_machine::TxState;
use shared::state_machine::outcome::{IntentAfter, Outcome};

use super::Verdict;

/// The longest a payment waiting for 3-D Secure rests between two re-checks.
pub const RECHECK_MAX: Duration = Duration::from_secs(600);

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

/// When a payment waiting for 3-D Secure is read again: `first` after it began waiting,
/// doubling per re-check up to [`RECHECK_MAX`], and never past the moment it is abandoned.
pub fn recheck_delay(
    txn: &Transaction,
    first: Duration,
    timeout: Duration,
    now: DateTime<Utc>,
) -> Duration {
    let exp = u32::try_from(txn.lookups.clamp(0, 16)).unwrap_or(16);
    let delay = first.saturating_mul(2u32.pow(exp)).min(RECHECK_MAX);
    let since = txn.requires_action_since.unwrap_or(now);
    let left = (since + chrono::TimeDelta::from_std(timeout).unwrap_or_default() - now)
        .to_std()
        .unwrap_or_default();
    delay.min(left).max(Duration::from_secs(1))
}

/// What the attempt knew, to turn its verdict into the change to record.
pub struct Attempt<'a> {
    pub txn: &'a Transaction,
    pub retry: &'a RetrySettings,
    /// The first 3-D Secure re-check's delay.
    pub recheck: Duration,
    pub requires_action_timeout: Duration,
    pub now: DateTime<Utc>,
}

/// The verdict as the change to record. A retry waits out its backoff (or Stripe's
/// `Retry-After`, if longer), counted in charge attempts, or in reads while resolving.
pub fn outcome(verdict: Verdict, a: &Attempt<'_>) -> Outcome {
    let txn = a.txn;
    let delay = |at_least: Option<Duration>, unknown: bool| {
        let n = if unknown || txn.state == TxState::Failed {
            txn.lookups
        } else {
            txn.attempts
        };
        backoff(a.retry, n).max(at_least.unwrap_or_default())
    };
    match verdict {
        Verdict::Succeeded { stripe_id } => Outcome::Complete { stripe_id },
        Verdict::RequiresAction {
            stripe_id,
            client_secret,
        } => Outcome::RequiresAction {
            stripe_id,
            client_secret,
            recheck_in: recheck_delay(txn, a.recheck, a.requires_action_timeout, a.now),
        },
        Verdict::Declined {
            stripe_id,
            error,
            intent,
        } => Outcome::Failed {
            stripe_id: stripe_id.or_else(|| txn.stripe_id.clone()),
            error,
            intent,
        },
        // Resolving found no confirm executed: inspect (and confirm) at the next attempt.
        Verdict::AwaitingConfirm { stripe_id } => Outcome::Retry {
            stripe_id: Some(stripe_id),
            reason: "the intent still waits for a confirm".into(),
            delay: Duration::ZERO,
            outcome_unknown: false,
            attempt_given_back: false,
        },
        // Abandoned 3-D Secure (a failed payment's cancel is recorded apart, by the job).
        Verdict::Canceled { stripe_id } => Outcome::Failed {
            stripe_id: Some(stripe_id),
            error: TxError {
                code: "authentication_not_completed".into(),
                decline_code: None,
                message: intent::AUTHENTICATION_NOT_COMPLETED.into(),
            },
            intent: IntentAfter::Canceled,
        },
        Verdict::ReadBack => Outcome::Retry {
            stripe_id: None,
            reason: "refused for the intent's state; to be read again".into(),
            delay: delay(None, txn.outcome_unknown_since.is_some()),
            outcome_unknown: txn.outcome_unknown_since.is_some(),
            attempt_given_back: false,
        },
        Verdict::Alarm {
            reason,
            outcome_unknown,
        } => Outcome::Retry {
            stripe_id: None,
            reason,
            delay: backoff(a.retry, txn.attempts.max(txn.lookups)),
            outcome_unknown,
            attempt_given_back: true,
        },
        Verdict::Transient {
            stripe_id,
            reason,
            retry_after,
            outcome_unknown,
        } => Outcome::Retry {
            stripe_id,
            reason,
            delay: delay(retry_after, outcome_unknown),
            outcome_unknown,
            attempt_given_back: false,
        },
    }
}
