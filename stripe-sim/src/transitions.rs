//! What confirming and canceling do to a PaymentIntent, as Stripe documents it: only
//! `requires_payment_method`, `requires_confirmation` and `requires_action` can be confirmed
//! (a declined or failed-authentication intent returns to `requires_payment_method` and can be
//! confirmed again, by anyone holding its client secret); cancel is allowed from those and
//! `requires_capture`; `succeeded` and `canceled` are final.

use axum::http::StatusCode;

use crate::errors::{ApiError, ErrorObject};
use crate::intent::{Behavior, PaymentIntent, behavior_of, new_id};
use crate::state::Inner;

/// Statuses a confirm is accepted in.
pub const CONFIRMABLE: [&str; 3] = [
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
];
/// Statuses a cancel is accepted in.
pub const CANCELABLE: [&str; 4] = [
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "requires_capture",
];

/// Confirms `pi` with its payment method's behaviour: charged, declined (the error to answer,
/// the intent embedded), or 3-D Secure first. `None`: answer the intent itself.
pub fn apply_confirmation(pi: &mut PaymentIntent, base_url: &str) -> Option<ApiError> {
    match pi.behavior {
        Some(Behavior::Succeed) => {
            pi.succeed();
            None
        }
        Some(Behavior::Decline(decline)) => {
            let mut error = decline.error(&new_id("ch_"));
            pi.fail(error.clone());
            error.payment_intent = Some(pi.to_json());
            Some(ApiError::new(StatusCode::PAYMENT_REQUIRED, error))
        }
        Some(Behavior::ThreeDs { .. }) => {
            pi.status = "requires_action";
            pi.last_payment_error = None;
            pi.next_action_url = Some(format!(
                "{base_url}/sim/3ds/{}?client_secret={}",
                pi.id, pi.client_secret
            ));
            None
        }
        // Nothing to charge: Stripe asks for a payment method.
        None => Some(
            ApiError::invalid_request(
                StatusCode::BAD_REQUEST,
                Some("payment_intent_unexpected_state"),
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
            )
            .param("payment_method"),
        ),
    }
}

/// Stripe's 400 for an intent in a status the request cannot act on, with the intent embedded.
fn unexpected_state(pi: &PaymentIntent, verb: &str) -> ApiError {
    let mut error = ErrorObject::new(
        "invalid_request_error",
        Some("payment_intent_unexpected_state"),
        format!(
            "You cannot {verb} this PaymentIntent because it has a status of {}.",
            pi.status
        ),
    );
    error.payment_intent = Some(pi.to_json());
    ApiError::new(StatusCode::BAD_REQUEST, error)
}

fn missing(id: &str) -> (StatusCode, String) {
    let e = ApiError::no_such("payment_intent", id, "intent", StatusCode::NOT_FOUND);
    (e.status, e.body())
}

/// `POST /v1/payment_intents/{id}/confirm`, optionally with another payment method.
pub fn confirm(
    inner: &mut Inner,
    id: &str,
    payment_method: Option<(String, Behavior)>,
    base_url: &str,
) -> (StatusCode, String) {
    let answer = inner.modify(id, |pi| {
        if !CONFIRMABLE.contains(&pi.status) {
            return Err(unexpected_state(pi, "confirm"));
        }
        if let Some((pm, behavior)) = payment_method {
            pi.payment_method = Some(pm);
            pi.behavior = Some(behavior);
        }
        match apply_confirmation(pi, base_url) {
            Some(e) => Err(e),
            None => Ok(pi.to_json().to_string()),
        }
    });
    match answer {
        None => missing(id),
        Some(Ok(body)) => (StatusCode::OK, body),
        Some(Err(e)) => (e.status, e.body()),
    }
}

/// `POST /v1/payment_intents/{id}/cancel`.
pub fn cancel(inner: &mut Inner, id: &str, reason: Option<String>) -> (StatusCode, String) {
    let answer = inner.modify(id, |pi| {
        if !CANCELABLE.contains(&pi.status) {
            return Err(unexpected_state(pi, "cancel"));
        }
        pi.status = "canceled";
        pi.next_action_url = None;
        pi.cancellation_reason = Some(reason.unwrap_or_else(|| "requested_by_customer".into()));
        Ok(pi.to_json().to_string())
    });
    match answer {
        None => missing(id),
        Some(Ok(body)) => (StatusCode::OK, body),
        Some(Err(e)) => (e.status, e.body()),
    }
}

/// A customer confirms the intent after the fact, from a browser holding its client secret,
/// with `payment_method` (a card that works, by default): what Stripe allows for any intent
/// that is not `succeeded` or `canceled`, whatever our service recorded.
pub fn customer_confirm(
    inner: &mut Inner,
    id: &str,
    payment_method: Option<&str>,
) -> Result<PaymentIntent, String> {
    let pm = payment_method.unwrap_or("pm_card_visa");
    let behavior = behavior_of(pm).ok_or_else(|| format!("No such PaymentMethod: '{pm}'"))?;
    let done = inner.modify(id, |pi| {
        if !CONFIRMABLE.contains(&pi.status) {
            return Err(format!(
                "PaymentIntent {id} has status {}: it cannot be confirmed",
                pi.status
            ));
        }
        pi.payment_method = Some(pm.to_owned());
        // The customer completes any authentication in the browser.
        pi.behavior = Some(match behavior {
            Behavior::ThreeDs { then_decline: None } => Behavior::Succeed,
            Behavior::ThreeDs {
                then_decline: Some(d),
            } => Behavior::Decline(d),
            other => other,
        });
        let _ = apply_confirmation(pi, "");
        Ok(pi.clone())
    });
    done.unwrap_or_else(|| Err(format!("No such payment_intent: '{id}'")))
}
