//! What a Stripe PaymentIntent says about a payment, and the words the customer is shown.
//!
//! The worker (from async-stripe's typed PaymentIntent) and the api's webhooks (from an event's
//! JSON) both read an intent into the same small [`IntentFacts`], so `shared` and the api never
//! link async-stripe, and both turn it into a payment's fate through [`verdict`] and into
//! customer-facing errors through [`customer_error`]: one meaning of each status, one set of
//! messages.

use crate::models::TxError;

/// Shown when Stripe gave no message fit for customers.
pub const GENERIC_DECLINE: &str = "Your payment could not be completed. Please try another card.";
/// An intent that returned to `requires_payment_method` (or was canceled) without an error.
pub const NOT_COMPLETED: &str = "The payment was not completed. Please try another card.";
/// Stripe refused the request itself (bad parameters, an unknown payment method).
pub const NOT_PROCESSABLE: &str =
    "This payment could not be processed. Please try another payment method.";
/// 3-D Secure was not completed in time: the intent was canceled.
pub const AUTHENTICATION_NOT_COMPLETED: &str =
    "The card's authentication (3-D Secure) was not completed. You have not been charged.";
/// Stripe never created an intent for the payment.
pub const NOT_REACHED: &str =
    "We could not reach the card processor. You have not been charged; please try again.";

/// The facts of a PaymentIntent we read; Stripe sends many more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntentFacts {
    pub id: String,
    /// Stripe's status name: `succeeded`, `requires_action`, `requires_payment_method`, ...
    pub status: Option<String>,
    pub amount: Option<i64>,
    pub currency: Option<String>,
    pub client_secret: Option<String>,
    pub last_payment_error: Option<PaymentError>,
    /// `metadata[transaction_id]`: the payment the intent was created for.
    pub transaction_id: Option<String>,
    /// Unix seconds.
    pub created: Option<i64>,
}

/// An error as Stripe describes it, on an intent (`last_payment_error`) or in an error answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentError {
    /// `card_error`, `invalid_request_error`, ...
    pub type_: Option<String>,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
}

/// What an intent's status means for its payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentVerdict {
    /// The card was charged.
    Succeeded,
    /// The customer must authenticate (3-D Secure) with the client secret.
    RequiresAction { client_secret: String },
    /// Stripe holds the intent without a charge: declined (back to `requires_payment_method`)
    /// or canceled. The error is fit for the customer.
    NotCharged(TxError),
    /// Not decided yet (`processing`, `requires_confirmation`, `requires_capture`, or
    /// `requires_action` without the secret the browser needs): the status, to read again later.
    Undecided(String),
}

/// The meaning of `facts.status`.
pub fn verdict(facts: &IntentFacts) -> IntentVerdict {
    match facts.status.as_deref().unwrap_or("") {
        "succeeded" => IntentVerdict::Succeeded,
        "requires_action" => match &facts.client_secret {
            Some(secret) => IntentVerdict::RequiresAction {
                client_secret: secret.clone(),
            },
            None => IntentVerdict::Undecided("requires_action without a client secret".into()),
        },
        "requires_payment_method" | "canceled" => {
            IntentVerdict::NotCharged(customer_error(facts.last_payment_error.as_ref()))
        }
        other => IntentVerdict::Undecided(format!("payment intent is {other}")),
    }
}

/// Stripe's codes plus a message fit for the customer. A card error's message is written for
/// customers ("Your card has insufficient funds."); anything else gets a generic line, never
/// Stripe's text meant for developers.
pub fn customer_error(err: Option<&PaymentError>) -> TxError {
    let Some(err) = err else {
        return TxError {
            code: "payment_failed".into(),
            decline_code: None,
            message: NOT_COMPLETED.into(),
        };
    };
    let message = match err.type_.as_deref() {
        Some("card_error") => err.message.clone(),
        _ => None,
    };
    TxError {
        code: err.code.clone().unwrap_or_else(|| "card_declined".into()),
        decline_code: err.decline_code.clone(),
        message: message.unwrap_or_else(|| GENERIC_DECLINE.into()),
    }
}

/// The payment failed because Stripe refused the request, not the card.
pub fn invalid_request() -> TxError {
    TxError {
        code: "invalid_request".into(),
        decline_code: None,
        message: NOT_PROCESSABLE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: &str) -> IntentFacts {
        IntentFacts {
            id: "pi_1".into(),
            status: Some(status.into()),
            ..Default::default()
        }
    }

    #[test]
    fn each_status_has_one_meaning() {
        assert_eq!(verdict(&facts("succeeded")), IntentVerdict::Succeeded);
        assert!(matches!(
            verdict(&facts("requires_action")),
            IntentVerdict::Undecided(_)
        ));
        let with_secret = IntentFacts {
            client_secret: Some("pi_1_secret".into()),
            ..facts("requires_action")
        };
        assert!(matches!(
            verdict(&with_secret),
            IntentVerdict::RequiresAction { .. }
        ));
        for not_charged in ["requires_payment_method", "canceled"] {
            assert!(matches!(
                verdict(&facts(not_charged)),
                IntentVerdict::NotCharged(_)
            ));
        }
        for undecided in [
            "processing",
            "requires_confirmation",
            "requires_capture",
            "new",
        ] {
            assert!(matches!(
                verdict(&facts(undecided)),
                IntentVerdict::Undecided(_)
            ));
        }
    }

    #[test]
    fn only_card_errors_show_stripes_message() {
        let card = PaymentError {
            type_: Some("card_error".into()),
            code: Some("card_declined".into()),
            decline_code: Some("insufficient_funds".into()),
            message: Some("Your card has insufficient funds.".into()),
        };
        assert_eq!(
            customer_error(Some(&card)).message,
            "Your card has insufficient funds."
        );
        let internal = PaymentError {
            type_: Some("invalid_request_error".into()),
            message: Some("internal detail".into()),
            ..card
        };
        assert_eq!(customer_error(Some(&internal)).message, GENERIC_DECLINE);
        assert_eq!(customer_error(None).code, "payment_failed");
    }
}
