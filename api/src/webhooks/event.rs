//! A verified Stripe event as we read it, and what it means for a transaction. Only the
//! fields we use are read; Stripe sends many more, and adds new ones, all ignored.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use shared::intent::{self, IntentFacts, PaymentError};
use shared::models::TxError;
use shared::state_machine::outcome::{IntentAfter, Outcome};
use shared::transactions::AfterCharge;
use uuid::Uuid;

/// Stripe's event ids are short; anything longer is not one of theirs.
const MAX_EVENT_ID_LEN: usize = 255;

#[derive(Debug, Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    type_: String,
    created: i64,
    data: RawData,
}

#[derive(Debug, Deserialize)]
struct RawData {
    object: StripeObject,
}

/// The fields of a PaymentIntent, Charge or Dispute that we read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StripeObject {
    id: String,
    status: Option<String>,
    amount: Option<i64>,
    currency: Option<String>,
    client_secret: Option<String>,
    metadata: Option<HashMap<String, Value>>,
    /// On a Charge or Dispute: the PaymentIntent's id (or the expanded object).
    payment_intent: Option<Value>,
    last_payment_error: Option<RawError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawError {
    #[serde(rename = "type")]
    type_: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
}

impl StripeObject {
    /// The intent's facts, as the worker reads them from its own calls.
    fn facts(&self) -> IntentFacts {
        IntentFacts {
            id: self.id.clone(),
            status: self.status.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            client_secret: self.client_secret.clone(),
            last_payment_error: self.last_payment_error.as_ref().map(|e| PaymentError {
                type_: e.type_.clone(),
                code: e.code.clone(),
                decline_code: e.decline_code.clone(),
                message: e.message.clone(),
            }),
            transaction_id: self
                .metadata
                .as_ref()
                .and_then(|m| m.get("transaction_id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            created: None,
        }
    }
}

/// Which transaction an event is about: ours by `metadata.transaction_id`, else the one whose
/// `stripe_id` is the event's PaymentIntent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub transaction_id: Option<Uuid>,
    pub payment_intent: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Effect {
    /// A PaymentIntent reached a state the payment must follow.
    Payment {
        outcome: Outcome,
        intent: Box<IntentFacts>,
    },
    /// A charged payment was refunded or disputed.
    AfterCharge(AfterCharge),
    /// Nothing we act on; acknowledged and recorded so a repeat is recognised.
    Nothing,
}

#[derive(Clone, Debug)]
pub struct Event {
    pub id: String,
    pub type_: String,
    pub created: i64,
    pub target: Target,
    pub effect: Effect,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Stripe event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the event id is empty or too long")]
    BadId,
}

/// Reads a verified event body.
pub fn decode(body: &[u8]) -> Result<Event, DecodeError> {
    let raw: RawEvent = serde_json::from_slice(body)?;
    if raw.id.is_empty() || raw.id.len() > MAX_EVENT_ID_LEN {
        return Err(DecodeError::BadId);
    }
    let object = raw.data.object;
    let target = target_of(&object);
    let effect = effect_of(&raw.type_, object);
    Ok(Event {
        id: raw.id,
        type_: raw.type_,
        created: raw.created,
        target,
        effect,
    })
}

fn target_of(object: &StripeObject) -> Target {
    let transaction_id = object
        .metadata
        .as_ref()
        .and_then(|m| m.get("transaction_id"))
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    let payment_intent = match &object.payment_intent {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(pi)) => pi.get("id").and_then(Value::as_str).map(str::to_owned),
        // A PaymentIntent event: the object is the intent itself.
        _ if object.id.starts_with("pi_") => Some(object.id.clone()),
        _ => None,
    };
    Target {
        transaction_id,
        payment_intent,
    }
}

fn effect_of(event_type: &str, object: StripeObject) -> Effect {
    let intent = object.facts();
    let payment = |outcome| Effect::Payment {
        outcome,
        intent: Box::new(intent.clone()),
    };
    match event_type {
        "payment_intent.succeeded" if object.status.as_deref() == Some("succeeded") => {
            payment(Outcome::Complete {
                stripe_id: object.id,
            })
        }
        // Back to `requires_payment_method`: it could be confirmed again, so the worker cancels it.
        "payment_intent.payment_failed" => payment(Outcome::Failed {
            error: intent::customer_error(intent.last_payment_error.as_ref()),
            stripe_id: Some(object.id),
            intent: IntentAfter::Cancel,
        }),
        // Canceled at Stripe (by us, or on the Dashboard): not charged, and never will be.
        "payment_intent.canceled" if object.status.as_deref() == Some("canceled") => {
            payment(Outcome::Failed {
                error: TxError {
                    code: "payment_canceled".into(),
                    decline_code: None,
                    message: intent::NOT_COMPLETED.into(),
                },
                stripe_id: Some(object.id),
                intent: IntentAfter::Canceled,
            })
        }
        "payment_intent.requires_action" => match object.client_secret {
            Some(client_secret) => payment(Outcome::RequiresAction {
                stripe_id: object.id,
                client_secret,
                // Not used for webhooks: the worker keeps its own re-check schedule.
                recheck_in: Duration::ZERO,
            }),
            None => Effect::Nothing,
        },
        "charge.refunded" => Effect::AfterCharge(AfterCharge::Refunded),
        "charge.dispute.created" => Effect::AfterCharge(AfterCharge::Disputed),
        _ => Effect::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(type_: &str, object: Value) -> Event {
        let body = json!({"id": "evt_1", "object": "event", "type": type_, "created": 1,
                          "data": {"object": object}});
        decode(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_succeeded_intent_completes_its_transaction() {
        let id = Uuid::new_v4();
        let e = event(
            "payment_intent.succeeded",
            json!({"id": "pi_1", "status": "succeeded", "amount": 1000, "currency": "usd",
                   "metadata": {"transaction_id": id.to_string()}}),
        );
        assert_eq!(e.target.transaction_id, Some(id));
        assert_eq!(e.target.payment_intent.as_deref(), Some("pi_1"));
        assert!(matches!(
            e.effect,
            Effect::Payment { outcome: Outcome::Complete { ref stripe_id }, .. } if stripe_id == "pi_1"
        ));
    }

    #[test]
    fn a_failed_intent_carries_a_customer_fit_error() {
        let e = event(
            "payment_intent.payment_failed",
            json!({"id": "pi_1", "status": "requires_payment_method",
                   "last_payment_error": {"type": "card_error", "code": "card_declined",
                     "decline_code": "insufficient_funds",
                     "message": "Your card has insufficient funds."}}),
        );
        let Effect::Payment {
            outcome: Outcome::Failed { error, .. },
            ..
        } = e.effect
        else {
            panic!("{e:?}")
        };
        assert_eq!(error.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(error.message, "Your card has insufficient funds.");
        let e = event(
            "payment_intent.payment_failed",
            json!({"id": "pi_1", "last_payment_error": {"type": "invalid_request_error",
                   "code": "payment_intent_authentication_failure", "message": "internal"}}),
        );
        let Effect::Payment {
            outcome: Outcome::Failed { error, .. },
            ..
        } = e.effect
        else {
            panic!("{e:?}")
        };
        assert!(!error.message.contains("internal"), "{error:?}");
    }

    #[test]
    fn charge_events_find_the_payment_through_their_intent() {
        let e = event(
            "charge.dispute.created",
            json!({"id": "dp_1", "charge": "ch_1", "payment_intent": "pi_9", "metadata": {}}),
        );
        assert_eq!(e.target.transaction_id, None);
        assert_eq!(e.target.payment_intent.as_deref(), Some("pi_9"));
        assert!(matches!(
            e.effect,
            Effect::AfterCharge(AfterCharge::Disputed)
        ));
    }

    #[test]
    fn unknown_types_and_bad_metadata_do_nothing() {
        let e = event(
            "customer.created",
            json!({"id": "cus_1", "metadata": {"transaction_id": "not-a-uuid"}}),
        );
        assert_eq!(e.target, Target::default());
        assert!(matches!(e.effect, Effect::Nothing));
        assert!(decode(b"{}").is_err());
        assert!(decode(b"[1,2]").is_err());
    }
}
