//! The Stripe calls the worker makes (async-stripe's typed PaymentIntent API, sent through our
//! [`http::HttpClient`]) and what their answers mean for a transaction.
//!
//! - [`http`]: pooled connections, response headers kept with each error.
//! - [`breaker`]: backs the whole worker off while Stripe is down.
//! - [`ratelimit`]: one request budget for every worker process, kept in Redis.

pub mod breaker;
pub mod http;
pub mod ratelimit;

use std::collections::HashMap;
use std::time::Duration;

use apalis_redis::ConnectionManager;
use shared::models::{Transaction, TxError};
use shared::settings::StripeSettings;
use stripe::{ApiErrors, ApiErrorsType, RequestStrategy, StripeRequest};
use stripe_core::payment_intent::{
    CreatePaymentIntent, RetrievePaymentIntent, SearchPaymentIntent,
};
use stripe_core::payment_intent::{
    CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects,
};
use stripe_core::{PaymentIntent, PaymentIntentStatus};

use self::breaker::Breaker;
use self::http::{CallError, HttpClient};
use self::ratelimit::RateLimiter;

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
    /// Try again later with the same key: timeouts, connection errors, 429, 409, `processing`.
    /// `retry_after` when Stripe named a wait.
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

pub struct Stripe {
    client: HttpClient,
    limiter: RateLimiter,
    pub breaker: Breaker,
}

impl Stripe {
    pub fn new(
        settings: &StripeSettings,
        redis: ConnectionManager,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let key = settings
            .secret_key
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("STRIPE_SECRET_KEY is not set"))?;
        let client = HttpClient::new(&settings.api_base, key.expose(), settings.timeout)
            .map_err(anyhow::Error::msg)?;
        Ok(Self {
            client,
            limiter: RateLimiter::new(redis, namespace, settings.rate_limit),
            breaker: Breaker::new(
                settings.breaker_threshold,
                settings.breaker_cooldown,
                settings.timeout,
            ),
        })
    }

    /// Every call goes through here: the shared rate limit first, then the call, timed and
    /// counted by outcome; the breaker is told what happened, and an answer that says our own
    /// configuration is wrong raises the alarm.
    async fn call<T>(
        &self,
        kind: Call,
        send: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        self.limiter.acquire().await;
        let started = std::time::Instant::now();
        let result = send.await;
        let label = kind.as_str();
        metrics::histogram!("payments_stripe_request_duration_seconds", "call" => label)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("payments_stripe_requests_total", "call" => label, "outcome" => outcome_label(&result))
            .increment(1);
        match &result {
            Err(e) if is_alarm(kind, e) => {
                raise_alarm(kind, e);
                self.breaker.record_failure();
            }
            Err(e) if is_outage(e) => self.breaker.record_failure(),
            _ => self.breaker.record_success(),
        }
        result
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
        let request = CreatePaymentIntent::new(txn.amount, currency)
            .payment_method(txn.payment_method.clone())
            .confirm(true)
            .metadata(metadata)
            .receipt_email(txn.email.clone())
            // Cards authenticate in the page with Stripe.js (`handleNextAction`), never by a
            // redirect, so no `return_url` is needed; `use_stripe_sdk` gives Stripe.js what it
            // needs for that.
            .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods {
                allow_redirects: Some(
                    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never,
                ),
                enabled: true,
            })
            .use_stripe_sdk(true)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key));
        classify(
            Call::Create,
            self.call(Call::Create, request.send(&self.client)).await,
        )
    }

    pub async fn retrieve(&self, stripe_id: &str) -> Verdict {
        classify(Call::Retrieve, self.retrieve_intent(stripe_id).await)
    }

    async fn retrieve_intent(&self, stripe_id: &str) -> Result<PaymentIntent, CallError> {
        let request = RetrievePaymentIntent::new(stripe_id).customize();
        self.call(Call::Retrieve, request.send(&self.client)).await
    }

    /// What became of the transaction at Stripe: the question to ask when an answer was lost.
    /// With the intent's id known, a retrieve (a consistent read) answers; without it, a search
    /// by `metadata[transaction_id]`. `Ok(None)`: the search found no such intent.
    pub async fn lookup(&self, txn: &Transaction) -> Result<Option<Verdict>, String> {
        if let Some(id) = &txn.stripe_id {
            return match self.retrieve_intent(id).await {
                Ok(pi) => Ok(Some(verdict_for_intent(pi))),
                Err(e) => Err(e.to_string()),
            };
        }
        let query = format!("metadata['transaction_id']:'{}'", txn.id);
        let request = SearchPaymentIntent::new(query).customize();
        let found = self
            .call(Call::Search, request.send(&self.client))
            .await
            .map_err(|e| e.to_string())?;
        // Several intents for one transaction could only come from an expired key; any one
        // that succeeded is the truth.
        let best = found
            .data
            .into_iter()
            .max_by_key(|pi| matches!(pi.status, PaymentIntentStatus::Succeeded));
        Ok(best.map(verdict_for_intent))
    }
}

/// The calls the worker makes, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Create,
    Retrieve,
    Search,
}

impl Call {
    fn as_str(self) -> &'static str {
        match self {
            Call::Create => "create",
            Call::Retrieve => "retrieve",
            Call::Search => "search",
        }
    }
}

/// Answers that say nothing about the payment and everything about our setup: a refused key
/// (401, a rolled or test/live mixed key), a refused permission (403, a restricted key), and a
/// missing intent we created ourselves (404 on retrieve: the wrong account or mode). Never a
/// verdict on the payment: the payment is retried, the breaker counts them, ops are alarmed.
fn is_alarm(kind: Call, e: &CallError) -> bool {
    match e {
        CallError::Api { status, .. } => {
            matches!(status, 401 | 403) || (kind == Call::Retrieve && *status == 404)
        }
        _ => false,
    }
}

fn raise_alarm(kind: Call, e: &CallError) {
    let reason = match e {
        CallError::Api { status: 401, .. } => "authentication",
        CallError::Api { status: 403, .. } => "permission",
        _ => "intent_missing",
    };
    tracing::error!(call = kind.as_str(), reason, error = %e,
        "stripe refused our configuration (key, mode or account); payments are held, not failed");
    metrics::counter!("payments_stripe_alarms_total", "reason" => reason).increment(1);
}

/// A small, fixed set of labels: never the error text (unbounded cardinality).
fn outcome_label<T>(result: &Result<T, CallError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(CallError::Api { status: 402, .. }) => "card_error",
        Err(CallError::Api { status: 409, .. }) => "conflict",
        Err(CallError::Api { status: 429, .. }) => "rate_limited",
        Err(CallError::Api { status, .. }) if *status >= 500 => "server_error",
        Err(CallError::Api { .. }) => "client_error",
        Err(CallError::Timeout) => "timeout",
        Err(CallError::Connect(_)) => "connect_error",
        Err(CallError::Broken(_)) => "connection_broken",
        Err(CallError::Unreadable { .. }) => "unreadable",
    }
}

/// Failures that say "Stripe (or the way to it) is down", as opposed to answers about a payment.
fn is_outage(e: &CallError) -> bool {
    match e {
        CallError::Api { status, .. } => *status >= 500,
        CallError::Timeout
        | CallError::Connect(_)
        | CallError::Broken(_)
        | CallError::Unreadable { .. } => true,
    }
}

fn classify(kind: Call, result: Result<PaymentIntent, CallError>) -> Verdict {
    match result {
        Ok(pi) => verdict_for_intent(pi),
        Err(e) if is_alarm(kind, &e) => Verdict::Transient {
            stripe_id: None,
            reason: e.to_string(),
            retry_after: None,
        },
        Err(CallError::Api {
            status,
            error,
            retry_after,
            should_retry,
        }) => verdict_for_error(&error, status, retry_after, should_retry),
        // No (readable) answer: the request may have executed. The same key makes the retry
        // safe: Stripe replays what it did.
        Err(e) => Verdict::Transient {
            stripe_id: None,
            reason: e.to_string(),
            retry_after: None,
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
                retry_after: None,
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
            retry_after: None,
        },
    }
}

fn verdict_for_error(
    err: &ApiErrors,
    status: u16,
    retry_after: Option<Duration>,
    should_retry: Option<bool>,
) -> Verdict {
    let reason = format!(
        "stripe {status} {} {}",
        err.type_.as_str(),
        err.code.as_ref().map_or("-", |c| c.as_str())
    );
    let transient = |reason| Verdict::Transient {
        stripe_id: None,
        reason,
        retry_after,
    };
    match (&err.type_, status) {
        // A decline is Stripe's final word, whatever else the response says.
        (ApiErrorsType::CardError, _) => Verdict::Declined {
            stripe_id: err.payment_intent.as_ref().map(|pi| pi.id.to_string()),
            error: customer_error(err),
        },
        // The first request with our key is still running at Stripe.
        (ApiErrorsType::IdempotencyError, 409) => transient(reason),
        // Our key met different parameters: only a lookup can tell what the first one did.
        (ApiErrorsType::IdempotencyError, _) => Verdict::Unknown { reason },
        // 5xx may have executed; Stripe may even have stored it and replay it for our key.
        (_, 500..=599) => Verdict::Unknown { reason },
        // Stripe-Should-Retry overrides the guess from the status code.
        _ if should_retry == Some(true) => transient(reason),
        // Refused before doing anything (bad parameters, unknown payment method): retrying
        // cannot help, and nothing was charged.
        (ApiErrorsType::InvalidRequestError, 400 | 402 | 404) => Verdict::Declined {
            stripe_id: None,
            error: invalid_request(err.message.as_deref().unwrap_or("invalid request")),
        },
        // Our key or its permissions (see `is_alarm`): never the customer's card.
        (_, 401 | 403) => transient(reason),
        _ if should_retry == Some(false) => Verdict::Declined {
            stripe_id: None,
            error: invalid_request(&reason),
        },
        // 429 and anything new: not the customer's fault; try later.
        _ => transient(reason),
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
