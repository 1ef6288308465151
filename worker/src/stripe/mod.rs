//! The Stripe calls the worker makes: async-stripe's typed PaymentIntent API, sent through our
//! [`http::HttpClient`], each behind the shared rate limit and counted, with the breaker told
//! what happened. What the answers mean is the charge policy's (`crate::policy`).
//!
//! - [`http`]: pooled connections, response headers kept with each error.
//! - [`breaker`]: backs the whole worker off while Stripe is down.
//! - [`ratelimit`]: one request budget for every worker process, kept in Redis.

pub mod breaker;
pub mod http;
pub mod ratelimit;

use std::collections::HashMap;

use apalis_redis::ConnectionManager;
use shared::intent::{IntentFacts, PaymentError};
use shared::models::Transaction;
use shared::settings::StripeSettings;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::payment_intent::{
    CreatePaymentIntent, RetrievePaymentIntent, SearchPaymentIntent,
};
use stripe_core::payment_intent::{
    CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects,
};
use stripe_core::{PaymentIntent, PaymentIntentStatus};

use self::breaker::Breaker;
use self::http::{CallError, ErrorObject, HttpClient};
use self::ratelimit::RateLimiter;
use crate::policy::{self, Call, Verdict};

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
            Err(e) => match policy::is_alarm(kind, e) {
                Some(reason) => {
                    raise_alarm(kind, reason, e);
                    self.breaker.record_failure();
                }
                None if policy::is_outage(e) => self.breaker.record_failure(),
                None => self.breaker.record_success(),
            },
            Ok(_) => self.breaker.record_success(),
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
        let key = match IdempotencyKey::new(&txn.stripe_idempotency_key) {
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
        let answer = self.call(Call::Create, request.send(&self.client)).await;
        policy::classify(Call::Create, answer.map(facts))
    }

    pub async fn retrieve(&self, stripe_id: &str) -> Verdict {
        policy::classify(Call::Retrieve, self.retrieve_intent(stripe_id).await)
    }

    async fn retrieve_intent(&self, stripe_id: &str) -> Result<IntentFacts, CallError> {
        let request = RetrievePaymentIntent::new(stripe_id).customize();
        let answer = self.call(Call::Retrieve, request.send(&self.client)).await;
        answer.map(facts)
    }

    /// What became of the transaction at Stripe: the question to ask when an answer was lost.
    /// With the intent's id known, a retrieve (a consistent read) answers; without it, a search
    /// by `metadata[transaction_id]`. `Ok(None)`: the search found no such intent.
    pub async fn lookup(&self, txn: &Transaction) -> Result<Option<Verdict>, String> {
        if let Some(id) = &txn.stripe_id {
            return match self.retrieve_intent(id).await {
                Ok(found) => Ok(Some(policy::verdict_for_intent(found))),
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
        Ok(best.map(|pi| policy::verdict_for_intent(facts(pi))))
    }
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

fn raise_alarm(call: Call, reason: &'static str, e: &CallError) {
    tracing::error!(call = call.as_str(), reason, error = %e,
        "stripe refused our configuration (key, mode or account); payments are held, not failed");
    metrics::counter!("payments_stripe_alarms_total", "reason" => reason).increment(1);
}

/// The facts of an intent the policy reads.
fn facts(pi: PaymentIntent) -> IntentFacts {
    IntentFacts {
        id: pi.id.to_string(),
        status: Some(pi.status.as_str().to_owned()),
        amount: Some(pi.amount),
        currency: Some(pi.currency.to_string()),
        client_secret: pi.client_secret,
        last_payment_error: pi.last_payment_error.as_deref().map(|e| {
            let e = ErrorObject::from(e);
            PaymentError {
                type_: Some(e.type_),
                code: e.code,
                decline_code: e.decline_code,
                message: e.message,
            }
        }),
    }
}
