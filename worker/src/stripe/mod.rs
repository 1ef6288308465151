//! The Stripe calls the worker makes: async-stripe's typed PaymentIntent API, sent through our
//! [`http::HttpClient`], each behind the shared rate limit and, in an attempt, the lease, counted,
//! with the breaker told what happened. What the answers mean is the charge policy's
//! (`crate::policy`).
//!
//! The intent is created unconfirmed and its id stored before it is confirmed by id: money can
//! move only on a confirm of an intent whose id we hold, so every later doubt is a retrieve
//! (a consistent read), never a search.
//!
//! - [`http`]: pooled connections, response headers kept with each error.
//! - [`breaker`]: backs the whole worker off while Stripe is down.
//! - [`ratelimit`]: one request budget for every worker process, kept in Redis.

pub mod breaker;
pub mod http;
pub mod ratelimit;

use std::collections::HashMap;
use std::time::Duration;
use tracing::Instrument;

use redis::aio::ConnectionManager;
use shared::intent::{IntentFacts, PaymentError};
use shared::models::Transaction;
use shared::settings::StripeSettings;
use stripe_client_core::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_core::PaymentIntent;
use stripe_core::payment_intent::{
    CancelPaymentIntent, CancelPaymentIntentCancellationReason, ConfirmPaymentIntent,
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, ListPaymentIntent,
    RetrievePaymentIntent,
};
use stripe_types::{RangeBoundsTs, RangeQueryTs};

use self::breaker::Breaker;
use self::http::{CallError, ErrorObject, HttpClient};
pub use self::ratelimit::Priority;
use self::ratelimit::RateLimiter;
use crate::lease::Lease;
use crate::policy::{self, Call};

pub struct Stripe {
    client: HttpClient,
    limiter: RateLimiter,
    /// One permit per request open toward Stripe (`STRIPE_MAX_CONCURRENT_REQUESTS`): what
    /// bounds this process's connections, and the memory each one holds.
    open: tokio::sync::Semaphore,
    pub breaker: Breaker,
    /// Each call's own timeout: what a lease must cover before the call is sent.
    timeout: Duration,
}

/// What a Stripe call's answer was, or why there was none.
pub type Answer = Result<IntentFacts, CallError>;

/// The idempotency key of each call that changes an intent, derived from the transaction's own
/// (`txn_<id>`): fixed for life, so a retry of any of them is safe.
fn key(txn: &Transaction, suffix: &str) -> Result<RequestStrategy, CallError> {
    let key = format!("{}{suffix}", txn.stripe_idempotency_key);
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| CallError::NotSent(format!("bad idempotency key: {e}")))
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
            open: tokio::sync::Semaphore::new(settings.max_concurrent_requests),
            breaker: Breaker::new(
                settings.breaker_threshold,
                settings.breaker_cooldown,
                settings.timeout,
            ),
            timeout: settings.timeout,
        })
    }

    /// Every call goes through here: a place among this process's open requests first (waited
    /// for before the rate limit, so a slot of the budget is never spent waiting), then the
    /// shared rate limit, then (in an attempt) the lease made to cover the call, then the call, timed and counted by outcome; the breaker
    /// is told what happened, and an answer that says our own configuration is wrong raises
    /// the alarm.
    async fn call<T>(
        &self,
        kind: Call,
        priority: Priority,
        lease: Option<&mut Lease>,
        send: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        // Never closed, so `acquire` cannot fail; a call without its permit is not sent.
        let _open = self
            .open
            .acquire()
            .await
            .map_err(|_| CallError::NotSent("the worker is stopping".into()))?;
        self.limiter.acquire(priority).await;
        if let Some(lease) = lease {
            lease
                .cover(self.timeout)
                .await
                .map_err(CallError::NotSent)?;
        }
        let started = std::time::Instant::now();
        let label = kind.as_str();
        let result = send
            .instrument(tracing::info_span!("stripe", call = label))
            .await;
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

    /// Creates the PaymentIntent, unconfirmed: no money can move until it is confirmed by id.
    /// Every create for one transaction sends the transaction's own key, so retries make one
    /// intent (within Stripe's 24 hours; a second one after that can never be confirmed).
    pub async fn create(&self, txn: &Transaction, lease: &mut Lease) -> Answer {
        // Infallible: an unknown code parses to `Currency::Unknown`, which Stripe rejects as an
        // invalid request (the api only accepts supported currencies anyway).
        let currency: stripe_types::Currency = match txn.currency.parse() {
            Ok(c) => c,
            Err(never) => match never {},
        };
        // The merchant's metadata and reference show in Stripe's Dashboard beside our id.
        let metadata: HashMap<String, String> =
            shared::merchant_data::stripe_metadata(txn.id, txn.reference.as_deref(), &txn.metadata)
                .into_iter()
                .collect();
        let request = CreatePaymentIntent::new(txn.amount, currency)
            .payment_method(txn.payment_method.clone())
            .metadata(metadata)
            .receipt_email(txn.email.clone())
            // Cards authenticate in the page with Stripe.js (`handleNextAction`), never by a
            // redirect, so no `return_url` is needed.
            .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods {
                allow_redirects: Some(
                    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never,
                ),
                enabled: true,
            })
            .customize()
            .request_strategy(key(txn, "")?);
        let answer = self
            .call(
                Call::Create,
                Priority::Customer,
                Some(lease),
                request.send(&self.client),
            )
            .await;
        answer.map(facts)
    }

    /// Confirms the intent `stripe_id`: the one call that moves money. Its own key, derived
    /// from the transaction's, makes a retried confirm replay the first one's answer.
    pub async fn confirm(&self, txn: &Transaction, stripe_id: &str, lease: &mut Lease) -> Answer {
        let request = ConfirmPaymentIntent::new(stripe_id)
            // What Stripe.js needs for 3-D Secure in the page (`handleNextAction`).
            .use_stripe_sdk(true)
            .customize()
            .request_strategy(key(txn, ":confirm")?);
        let answer = self
            .call(
                Call::Confirm,
                Priority::Customer,
                Some(lease),
                request.send(&self.client),
            )
            .await;
        answer.map(facts)
    }

    /// Reads the intent back: a consistent read, with the priority of the work it is for.
    pub async fn retrieve(
        &self,
        stripe_id: &str,
        priority: Priority,
        lease: Option<&mut Lease>,
    ) -> Answer {
        let request = RetrievePaymentIntent::new(stripe_id).customize();
        let answer = self
            .call(Call::Retrieve, priority, lease, request.send(&self.client))
            .await;
        answer.map(facts)
    }

    /// Cancels the intent, so nobody can confirm (charge) it later. Background work: no customer
    /// waits on it.
    pub async fn cancel(
        &self,
        txn: &Transaction,
        stripe_id: &str,
        abandoned: bool,
        lease: &mut Lease,
    ) -> Answer {
        let reason = if abandoned {
            CancelPaymentIntentCancellationReason::Abandoned
        } else {
            CancelPaymentIntentCancellationReason::RequestedByCustomer
        };
        let request = CancelPaymentIntent::new(stripe_id)
            .cancellation_reason(reason)
            .customize()
            .request_strategy(key(txn, ":cancel")?);
        let answer = self
            .call(
                Call::Cancel,
                Priority::Background,
                Some(lease),
                request.send(&self.client),
            )
            .await;
        answer.map(facts)
    }

    /// One page (up to 100, newest first) of the intents created within `[from, to]` (Unix
    /// seconds), after `starting_after`: the consistent list the reconciler reads. Waits for
    /// the rate limit behind every call made for a customer.
    pub async fn list(
        &self,
        from: i64,
        to: i64,
        starting_after: Option<&str>,
    ) -> Result<(Vec<IntentFacts>, bool), CallError> {
        let mut request = ListPaymentIntent::new()
            .created(RangeQueryTs::Bounds(RangeBoundsTs {
                gte: Some(from),
                lte: Some(to),
                gt: None,
                lt: None,
            }))
            .limit(100);
        if let Some(after) = starting_after {
            request = request.starting_after(after);
        }
        let page = self
            .call(
                Call::List,
                Priority::Background,
                None,
                request.customize().send(&self.client),
            )
            .await?;
        Ok((page.data.into_iter().map(facts).collect(), page.has_more))
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
        Err(CallError::NotSent(_)) => "not_sent",
    }
}

fn raise_alarm(call: Call, reason: &'static str, e: &CallError) {
    tracing::error!(call = call.as_str(), reason, error = %e,
        "stripe refused our configuration (key, mode or account); payments are held, not failed");
    metrics::counter!("payments_stripe_alarms_total", "reason" => reason).increment(1);
}

/// The facts of an intent the policy and the reconciler read.
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
        transaction_id: pi.metadata.get("transaction_id").cloned(),
        created: Some(pi.created),
    }
}
