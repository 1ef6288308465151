//! The Stripe calls the worker makes (async-stripe's typed PaymentIntent API) and what their
//! answers mean for a transaction.

use std::collections::HashMap;
use std::time::Duration;

use shared::models::{Transaction, TxError};
use shared::settings::StripeSettings;
use stripe::{
    ApiErrors, ApiErrorsType, Client, ClientBuilder, RequestStrategy, StripeError, StripeRequest,
};
use stripe_core::payment_intent::{
    CreatePaymentIntent, RetrievePaymentIntent, SearchPaymentIntent,
};
use stripe_core::{PaymentIntent, PaymentIntentStatus};

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
    /// Stripe says the card was not charged and will not be for this attempt.
    Declined {
        stripe_id: Option<String>,
        error: TxError,
    },
    /// Try again later with the same key: timeouts, connection errors, 5xx, 429, 409, and
    /// PaymentIntents still `processing`. `stripe_id` when Stripe told us the intent's id.
    Transient {
        stripe_id: Option<String>,
        reason: String,
    },
    /// The answer does not tell what happened (a replayed stored 500, a key used with other
    /// parameters): look the PaymentIntent up before deciding anything.
    Unknown {
        reason: String,
    },
}

#[derive(Clone)]
pub struct Stripe {
    client: Client,
    timeout: Duration,
}

impl Stripe {
    pub fn new(settings: &StripeSettings) -> Result<Self, StripeError> {
        let key = settings
            .secret_key
            .as_ref()
            .map(|s| s.expose().to_owned())
            .ok_or_else(|| StripeError::ConfigError("STRIPE_SECRET_KEY is not set".into()))?;
        // async-stripe appends `v1/...` to the base, so the base must end with a slash.
        let base = format!("{}/", settings.api_base.trim_end_matches('/'));
        let client = ClientBuilder::new(key)
            .url(base)
            .timeout(settings.timeout)
            .build()?;
        Ok(Self {
            client,
            timeout: settings.timeout,
        })
    }

    /// Creates and confirms the PaymentIntent, or, once its id is known, reads it back. Every
    /// create for one transaction sends the transaction's own idempotency key, so any number of
    /// attempts makes at most one charge.
    pub async fn charge(&self, txn: &Transaction) -> Verdict {
        if let Some(id) = &txn.stripe_id {
            return self.retrieve(id).await;
        }
        // Infallible: an unknown code parses to `Currency::Unknown`, which Stripe rejects as an
        // invalid request (the api only accepts supported currencies anyway).
        let currency: stripe_types::Currency = match txn.currency.parse() {
            Ok(c) => c,
            Err(never) => match never {},
        };
        let key = match stripe::IdempotencyKey::new(&txn.stripe_idempotency_key) {
            Ok(k) => k,
            Err(e) => {
                return Verdict::Unknown {
                    reason: format!("bad idempotency key: {e}"),
                };
            }
        };
        let metadata = HashMap::from([("transaction_id".to_owned(), txn.id.to_string())]);
        let result = CreatePaymentIntent::new(txn.amount, currency)
            .payment_method(txn.payment_method.clone())
            .confirm(true)
            .metadata(metadata)
            .receipt_email(txn.email.clone())
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .timeout(self.timeout)
            .send(&self.client)
            .await;
        classify(result)
    }

    pub async fn retrieve(&self, stripe_id: &str) -> Verdict {
        let result = RetrievePaymentIntent::new(stripe_id)
            .customize()
            .request_strategy(RequestStrategy::Once)
            .timeout(self.timeout)
            .send(&self.client)
            .await;
        classify(result)
    }

    /// Finds the transaction's PaymentIntent through its `metadata[transaction_id]`: the
    /// question to ask when an answer was lost. `Ok(None)`: Stripe holds no such intent.
    pub async fn find_by_transaction(&self, txn: &Transaction) -> Result<Option<Verdict>, String> {
        let query = format!("metadata['transaction_id']:'{}'", txn.id);
        let found = SearchPaymentIntent::new(query)
            .customize()
            .request_strategy(RequestStrategy::Once)
            .timeout(self.timeout)
            .send(&self.client)
            .await
            .map_err(|e| describe(&e))?;
        // Several intents for one transaction can only come from a key that expired; any one
        // that succeeded is the truth.
        let best = found
            .data
            .into_iter()
            .max_by_key(|pi| matches!(pi.status, PaymentIntentStatus::Succeeded));
        Ok(best.map(verdict_for_intent))
    }
}

fn classify(result: Result<PaymentIntent, StripeError>) -> Verdict {
    match result {
        Ok(pi) => verdict_for_intent(pi),
        Err(StripeError::Stripe(err, status)) => verdict_for_error(&err, status),
        Err(e) => Verdict::Transient {
            stripe_id: None,
            reason: describe(&e),
        },
    }
}

pub fn verdict_for_intent(pi: PaymentIntent) -> Verdict {
    let stripe_id = pi.id.to_string();
    match pi.status {
        PaymentIntentStatus::Succeeded => Verdict::Succeeded { stripe_id },
        PaymentIntentStatus::RequiresAction => match pi.client_secret {
            Some(client_secret) => Verdict::RequiresAction {
                stripe_id,
                client_secret,
            },
            None => Verdict::Transient {
                stripe_id: Some(stripe_id),
                reason: "requires_action without a client secret".into(),
            },
        },
        PaymentIntentStatus::RequiresPaymentMethod | PaymentIntentStatus::Canceled => {
            let error = pi
                .last_payment_error
                .as_deref()
                .map(customer_error)
                .unwrap_or_else(|| TxError {
                    code: "payment_failed".into(),
                    decline_code: None,
                    message: "The payment was not completed. Please try another card.".into(),
                });
            Verdict::Declined {
                stripe_id: Some(stripe_id),
                error,
            }
        }
        other => Verdict::Transient {
            stripe_id: Some(stripe_id),
            reason: format!("payment intent is {}", other.as_str()),
        },
    }
}

fn verdict_for_error(err: &ApiErrors, status: u16) -> Verdict {
    let code = err.code.as_ref().map(|c| c.as_str().to_owned());
    let reason = format!(
        "stripe {status} {} {}",
        err.type_.as_str(),
        code.as_deref().unwrap_or("-")
    );
    match (&err.type_, status) {
        (ApiErrorsType::CardError, _) => Verdict::Declined {
            stripe_id: err.payment_intent.as_ref().map(|pi| pi.id.to_string()),
            error: customer_error(err),
        },
        (ApiErrorsType::IdempotencyError, 409) => Verdict::Transient {
            stripe_id: None,
            reason,
        },
        // Our key met different parameters: only a lookup can tell what the first request did.
        (ApiErrorsType::IdempotencyError, _) => Verdict::Unknown { reason },
        // A request Stripe refused before doing anything (bad parameters, unknown payment
        // method): retrying cannot help, and nothing was charged.
        (ApiErrorsType::InvalidRequestError, 400 | 404) => Verdict::Declined {
            stripe_id: None,
            error: invalid_request(err.message.as_deref().unwrap_or("invalid request")),
        },
        // 5xx may have executed: same key again, and if it stays a stored 500, look it up.
        (_, 500..=599) => Verdict::Unknown { reason },
        // 401/403 (our key), 429 and anything new: not the customer's fault, try later.
        _ => Verdict::Transient {
            stripe_id: None,
            reason,
        },
    }
}

/// Stripe's codes plus a message fit for the customer. Card-error messages from Stripe are
/// written for customers ("Your card has insufficient funds."); others get a generic line.
fn customer_error(err: &ApiErrors) -> TxError {
    let code = err
        .code
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_else(|| "card_declined".into());
    let message = match err.type_ {
        ApiErrorsType::CardError => err.message.clone(),
        _ => None,
    }
    .unwrap_or_else(|| "Your payment could not be completed. Please try another card.".into());
    TxError {
        code,
        decline_code: err.decline_code.clone(),
        message,
    }
}

fn invalid_request(detail: &str) -> TxError {
    tracing::warn!(detail, "stripe rejected the request as invalid");
    TxError {
        code: "invalid_request".into(),
        decline_code: None,
        message: "This payment could not be processed. Please try another payment method.".into(),
    }
}

/// A log-safe description of an error: async-stripe's errors never carry the secret key.
fn describe(e: &StripeError) -> String {
    match e {
        StripeError::Stripe(err, status) => format!(
            "stripe {status} {} {}",
            err.type_.as_str(),
            err.code.as_ref().map_or("-", |c| c.as_str())
        ),
        StripeError::Timeout => "timeout".into(),
        StripeError::ClientError(m) => format!("connection: {m}"),
        StripeError::JSONDeserialize(m) => format!("unreadable response: {m}"),
        StripeError::ConfigError(m) => format!("config: {m}"),
    }
}
