//! The PaymentIntent model: test payment methods, their outcomes, and the JSON Stripe sends.

use std::collections::BTreeMap;

use rand::RngExt;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::Value;

use crate::errors::ErrorObject;

/// What a card decline looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decline {
    Generic,
    InsufficientFunds,
    LostCard,
    StolenCard,
    Fraudulent,
    ExpiredCard,
    IncorrectCvc,
    ProcessingError,
}

impl Decline {
    /// `(code, decline_code, message)` exactly as Stripe words them.
    fn parts(self) -> (&'static str, Option<&'static str>, &'static str) {
        const DECLINED: &str = "Your card was declined.";
        match self {
            Self::Generic => ("card_declined", Some("generic_decline"), DECLINED),
            Self::InsufficientFunds => (
                "card_declined",
                Some("insufficient_funds"),
                "Your card has insufficient funds.",
            ),
            Self::LostCard => ("card_declined", Some("lost_card"), DECLINED),
            Self::StolenCard => ("card_declined", Some("stolen_card"), DECLINED),
            Self::Fraudulent => ("card_declined", Some("fraudulent"), DECLINED),
            Self::ExpiredCard => (
                "expired_card",
                Some("expired_card"),
                "Your card has expired.",
            ),
            Self::IncorrectCvc => (
                "incorrect_cvc",
                Some("incorrect_cvc"),
                "Your card's security code is incorrect.",
            ),
            Self::ProcessingError => (
                "processing_error",
                None,
                "An error occurred while processing your card. Try again in a little bit.",
            ),
        }
    }

    /// The error object for this decline (without the embedded PaymentIntent).
    pub fn error(self, charge: &str) -> ErrorObject {
        let (code, decline_code, message) = self.parts();
        let mut e = ErrorObject::new("card_error", Some(code), message);
        e.decline_code = decline_code.map(str::to_owned);
        e.charge = Some(charge.to_owned());
        e
    }
}

/// What confirming with a payment method does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    Succeed,
    Decline(Decline),
    /// 3-D Secure first; then succeed, or decline with `then_decline`.
    ThreeDs {
        then_decline: Option<Decline>,
    },
}

/// Maps a test payment method (`pm_card_*`, `tok_*`, or a test card number) to its
/// behaviour. `None` means Stripe would not know the payment method.
pub fn behavior_of(payment_method: &str) -> Option<Behavior> {
    let name = if let Some(rest) = payment_method.strip_prefix("pm_card_") {
        rest
    } else if let Some(rest) = payment_method.strip_prefix("tok_") {
        rest
    } else if payment_method
        .strip_prefix("pm_")
        .is_some_and(|r| !r.is_empty())
    {
        // A real-looking PaymentMethod id (pm_1Abc...): a card that just works.
        return Some(Behavior::Succeed);
    } else if !payment_method.is_empty() && payment_method.bytes().all(|b| b.is_ascii_digit()) {
        return by_card_number(payment_method);
    } else {
        return None;
    };
    let name = name.strip_prefix("visa_").unwrap_or(name);
    Some(match name {
        "chargeDeclined" => Behavior::Decline(Decline::Generic),
        "chargeDeclinedInsufficientFunds" => Behavior::Decline(Decline::InsufficientFunds),
        "chargeDeclinedLostCard" => Behavior::Decline(Decline::LostCard),
        "chargeDeclinedStolenCard" => Behavior::Decline(Decline::StolenCard),
        "chargeDeclinedFraudulent" => Behavior::Decline(Decline::Fraudulent),
        "chargeDeclinedExpiredCard" => Behavior::Decline(Decline::ExpiredCard),
        "chargeDeclinedIncorrectCvc" => Behavior::Decline(Decline::IncorrectCvc),
        "chargeDeclinedProcessingError" => Behavior::Decline(Decline::ProcessingError),
        "authenticationRequired" | "threeDSecure2Required" | "threeDSecureRequired" => {
            Behavior::ThreeDs { then_decline: None }
        }
        "threeDSecureRequiredChargeDeclined" => Behavior::ThreeDs {
            then_decline: Some(Decline::Generic),
        },
        // pm_card_visa, pm_card_mastercard, tok_amex, ...: any other test card succeeds.
        "" => return None,
        _ => Behavior::Succeed,
    })
}

fn by_card_number(number: &str) -> Option<Behavior> {
    Some(match number {
        "4242424242424242" | "5555555555554444" => Behavior::Succeed,
        "4000000000000002" => Behavior::Decline(Decline::Generic),
        "4000000000009995" => Behavior::Decline(Decline::InsufficientFunds),
        "4000000000000119" => Behavior::Decline(Decline::ProcessingError),
        "4000002760003184" | "4000000000003220" => Behavior::ThreeDs { then_decline: None },
        "4000008400001629" => Behavior::ThreeDs {
            then_decline: Some(Decline::Generic),
        },
        _ => return None,
    })
}

/// `prefix` + 24 random alphanumerics, like Stripe's ids. Ids use the thread RNG, not
/// the seeded one, so creating objects never shifts the fault sequence.
pub fn new_id(prefix: &str) -> String {
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}{suffix}")
}

/// A stored PaymentIntent plus the simulator's bookkeeping.
#[derive(Clone, Debug)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: &'static str,
    pub created: i64,
    pub client_secret: String,
    pub payment_method: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub description: Option<String>,
    pub receipt_email: Option<String>,
    pub return_url: Option<String>,
    pub latest_charge: Option<String>,
    pub amount_received: i64,
    pub last_payment_error: Option<ErrorObject>,
    /// The 3-D Secure page, while `status` is `requires_action`.
    pub next_action_url: Option<String>,
    /// What approving the 3-D Secure challenge leads to.
    pub behavior: Option<Behavior>,
    pub idempotency_key: Option<String>,
    /// When search starts to see it (`Faults::search_lag_ms` after creation).
    pub searchable_at: std::time::Instant,
    /// Set when canceled (`requested_by_customer`, `abandoned`, `duplicate`, ...).
    pub cancellation_reason: Option<String>,
}

#[derive(Serialize)]
struct RedirectToUrl<'a> {
    url: &'a str,
    return_url: Option<&'a str>,
}

#[derive(Serialize)]
struct NextAction<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    redirect_to_url: RedirectToUrl<'a>,
}

/// The wire form of a PaymentIntent. `()` fields serialize as `null`: Stripe sends
/// them, and async-stripe accepts them, but the simulator has nothing to put there.
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a str,
    object: &'static str,
    amount: i64,
    amount_capturable: i64,
    amount_details: (),
    amount_received: i64,
    application: (),
    application_fee_amount: (),
    automatic_payment_methods: (),
    canceled_at: (),
    cancellation_reason: Option<&'a str>,
    capture_method: &'static str,
    client_secret: &'a str,
    confirmation_method: &'static str,
    created: i64,
    currency: &'a str,
    customer: (),
    description: Option<&'a str>,
    excluded_payment_method_types: (),
    last_payment_error: Option<&'a ErrorObject>,
    latest_charge: Option<&'a str>,
    livemode: bool,
    metadata: &'a BTreeMap<String, String>,
    next_action: Option<NextAction<'a>>,
    on_behalf_of: (),
    payment_method: Option<&'a str>,
    payment_method_configuration_details: (),
    payment_method_options: (),
    payment_method_types: [&'static str; 1],
    processing: (),
    receipt_email: Option<&'a str>,
    review: (),
    setup_future_usage: (),
    shipping: (),
    source: (),
    statement_descriptor: (),
    statement_descriptor_suffix: (),
    status: &'a str,
    transfer_data: (),
    transfer_group: (),
}

impl PaymentIntent {
    /// The JSON object Stripe would return for this PaymentIntent.
    pub fn to_json(&self) -> Value {
        let wire = Wire {
            id: &self.id,
            object: "payment_intent",
            amount: self.amount,
            amount_capturable: 0,
            amount_details: (),
            amount_received: self.amount_received,
            application: (),
            application_fee_amount: (),
            automatic_payment_methods: (),
            canceled_at: (),
            cancellation_reason: self.cancellation_reason.as_deref(),
            capture_method: "automatic",
            client_secret: &self.client_secret,
            confirmation_method: "automatic",
            created: self.created,
            currency: &self.currency,
            customer: (),
            description: self.description.as_deref(),
            excluded_payment_method_types: (),
            last_payment_error: self.last_payment_error.as_ref(),
            latest_charge: self.latest_charge.as_deref(),
            livemode: false,
            metadata: &self.metadata,
            next_action: self.next_action_url.as_deref().map(|url| NextAction {
                type_: "redirect_to_url",
                redirect_to_url: RedirectToUrl {
                    url,
                    return_url: self.return_url.as_deref(),
                },
            }),
            on_behalf_of: (),
            payment_method: self.payment_method.as_deref(),
            payment_method_configuration_details: (),
            payment_method_options: (),
            payment_method_types: ["card"],
            processing: (),
            receipt_email: self.receipt_email.as_deref(),
            review: (),
            setup_future_usage: (),
            shipping: (),
            source: (),
            statement_descriptor: (),
            statement_descriptor_suffix: (),
            status: self.status,
            transfer_data: (),
            transfer_group: (),
        };
        serde_json::to_value(wire).unwrap_or(Value::Null)
    }

    /// Marks the payment as charged: `succeeded`, with a new charge id (returned).
    pub fn succeed(&mut self) -> String {
        let charge = new_id("ch_");
        self.status = "succeeded";
        self.amount_received = self.amount;
        self.latest_charge = Some(charge.clone());
        self.last_payment_error = None;
        self.next_action_url = None;
        charge
    }

    /// Records a failed attempt: back to `requires_payment_method` with the error.
    pub fn fail(&mut self, error: ErrorObject) {
        if let Some(charge) = &error.charge {
            self.latest_charge = Some(charge.clone());
        }
        self.status = "requires_payment_method";
        self.last_payment_error = Some(error);
        self.next_action_url = None;
    }

    /// The `transaction_id` metadata entry our services attach, if any.
    pub fn transaction_id(&self) -> Option<&str> {
        self.metadata.get("transaction_id").map(String::as_str)
    }
}

#[cfg(test)]
// Test code: a failed unwrap is a failed test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn payment_method_table() {
        assert_eq!(behavior_of("pm_card_visa"), Some(Behavior::Succeed));
        assert_eq!(behavior_of("tok_mastercard"), Some(Behavior::Succeed));
        assert_eq!(behavior_of("pm_1NxYz"), Some(Behavior::Succeed));
        assert_eq!(
            behavior_of("pm_card_visa_chargeDeclined"),
            Some(Behavior::Decline(Decline::Generic))
        );
        assert_eq!(
            behavior_of("tok_chargeDeclinedInsufficientFunds"),
            Some(Behavior::Decline(Decline::InsufficientFunds))
        );
        assert_eq!(
            behavior_of("pm_card_chargeDeclinedProcessingError"),
            Some(Behavior::Decline(Decline::ProcessingError))
        );
        assert_eq!(
            behavior_of("tok_threeDSecureRequiredChargeDeclined"),
            Some(Behavior::ThreeDs {
                then_decline: Some(Decline::Generic)
            })
        );
        assert_eq!(
            behavior_of("4000000000009995"),
            behavior_of("pm_card_visa_chargeDeclinedInsufficientFunds")
        );
        assert_eq!(behavior_of("card_123"), None);
        assert_eq!(behavior_of("pm_"), None);
        assert_eq!(behavior_of("pm_card_"), None);
        assert_eq!(behavior_of("1234"), None);
    }
}
