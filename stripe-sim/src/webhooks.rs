//! Webhook deliveries, as Stripe makes them: an event (`evt_...`) per PaymentIntent change,
//! refund or dispute, POSTed to the configured endpoint with a `Stripe-Signature` header
//! (HMAC-SHA256 over `"{t}.{body}"` with the endpoint secret), from a task of its own so no
//! API answer waits for it, and retried with backoff while the endpoint does not answer 2xx.
//! Every attempt is kept for tests (`GET /sim/webhooks`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::intent::{PaymentIntent, new_id};

/// The API version our events claim; the receiver does not depend on it.
pub const API_VERSION: &str = "2025-03-31.basil";
/// Attempts per event before it is given up (Stripe keeps trying for three days).
const MAX_ATTEMPTS: u32 = 5;
/// First pause between attempts; doubles after each.
const FIRST_RETRY: Duration = Duration::from_millis(200);
/// Stripe gives an endpoint a few seconds to answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where events go and the secret they are signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// When an event goes out: `delay` after it happened, and once more after delivery if
/// `repeat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeliveryPlan {
    pub delay: Duration,
    pub repeat: bool,
}

/// One try at delivering an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// The endpoint's HTTP status; `None` when it did not answer.
    pub status: Option<u16>,
    /// Why there was no answer (connection refused, timeout).
    pub error: Option<String>,
    /// Unix seconds: the `t` the attempt was signed with.
    pub at: i64,
    /// The `Stripe-Signature` header sent, so a test can replay the exact delivery.
    pub signature: String,
}

/// An event and what became of its delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    /// The exact body sent (the signed bytes).
    pub payload: String,
    pub attempts: Vec<DeliveryAttempt>,
    /// An attempt got a 2xx.
    pub delivered: bool,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

/// The simulator's outgoing webhooks. Lives inside the state mutex; delivery tasks record
/// their attempts in `log`, a lock of its own, so they never wait on the simulator's.
pub(crate) struct Outbox {
    endpoint: Option<Endpoint>,
    log: Log,
    client: Option<reqwest::Client>,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock(log: &Log) -> std::sync::MutexGuard<'_, Vec<Delivery>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `t=<t>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, exactly as Stripe signs.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length: this cannot happen, and an unsigned header is refused.
        return format!("t={t}");
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The event a PaymentIntent's current status announces, if any.
pub fn intent_event_type(pi: &PaymentIntent) -> Option<&'static str> {
    match pi.status {
        "succeeded" => Some("payment_intent.succeeded"),
        "requires_action" => Some("payment_intent.requires_action"),
        "requires_payment_method" if pi.last_payment_error.is_some() => {
            Some("payment_intent.payment_failed")
        }
        "canceled" => Some("payment_intent.canceled"),
        _ => None,
    }
}

impl Outbox {
    pub fn new(endpoint: Option<Endpoint>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .build()
            .map_err(|e| tracing::error!(error = %e, "no HTTP client: webhooks will not be sent"))
            .ok();
        Self {
            endpoint,
            log: Arc::default(),
            client,
        }
    }

    pub fn set_endpoint(&mut self, endpoint: Option<Endpoint>) {
        self.endpoint = endpoint;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.log).clone()
    }

    pub fn clear(&self) {
        lock(&self.log).clear();
    }

    /// Announces `object` as an event of `event_type` and starts delivering it in the
    /// background. Without an endpoint (or outside a Tokio runtime) nothing is sent.
    pub fn emit(&self, event_type: &str, object: Value, plan: DeliveryPlan) {
        let (Some(endpoint), Some(client)) = (self.endpoint.clone(), self.client.clone()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let event_id = new_id("evt_");
        let payload = json!({
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": now_unix(),
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": event_type,
            "data": { "object": object },
        })
        .to_string();
        let index = {
            let mut log = lock(&self.log);
            log.push(Delivery {
                event_id,
                event_type: event_type.to_owned(),
                url: endpoint.url.clone(),
                payload: payload.clone(),
                attempts: Vec::new(),
                delivered: false,
            });
            log.len() - 1
        };
        let job = Job {
            log: self.log.clone(),
            index,
            client,
            endpoint,
            payload,
            plan,
        };
        runtime.spawn(job.run());
    }
}

/// One event on its way to the endpoint.
struct Job {
    log: Log,
    index: usize,
    client: reqwest::Client,
    endpoint: Endpoint,
    payload: String,
    plan: DeliveryPlan,
}

impl Job {
    async fn run(self) {
        tokio::time::sleep(self.plan.delay).await;
        if self.deliver().await && self.plan.repeat {
            // The same event again, later: the receiver must see it is one it has.
            tokio::time::sleep(FIRST_RETRY.max(self.plan.delay)).await;
            self.deliver().await;
        }
    }

    /// Tries until a 2xx or [`MAX_ATTEMPTS`]; whether it was delivered.
    async fn deliver(&self) -> bool {
        let mut pause = FIRST_RETRY;
        for attempt in 1..=MAX_ATTEMPTS {
            let t = now_unix();
            // Each attempt is signed afresh, as Stripe does, so its timestamp is current.
            let signature = signature_header(&self.endpoint.secret, t, self.payload.as_bytes());
            let sent = self
                .client
                .post(&self.endpoint.url)
                .header("content-type", "application/json")
                .header("stripe-signature", &signature)
                .body(self.payload.clone())
                .send()
                .await;
            let (status, error) = match sent {
                Ok(r) => (Some(r.status().as_u16()), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let delivered = status.is_some_and(|s| (200..300).contains(&s));
            if let Some(d) = lock(&self.log).get_mut(self.index) {
                d.attempts.push(DeliveryAttempt {
                    status,
                    error,
                    at: t,
                    signature,
                });
                d.delivered = delivered;
            }
            if delivered {
                return true;
            }
            tracing::debug!(attempt, ?status, url = %self.endpoint.url, "webhook not accepted");
            if attempt < MAX_ATTEMPTS {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        tracing::warn!(url = %self.endpoint.url, "webhook given up after {MAX_ATTEMPTS} attempts");
        false
    }
}

/// A charge object as Stripe sends it in `charge.*` events.
pub fn charge_object(pi: &PaymentIntent, charge_id: &str, refunded: bool) -> Value {
    json!({
        "id": charge_id,
        "object": "charge",
        "amount": pi.amount,
        "amount_captured": pi.amount,
        "amount_refunded": if refunded { pi.amount } else { 0 },
        "captured": true,
        "created": now_unix(),
        "currency": pi.currency,
        "livemode": false,
        "metadata": pi.metadata,
        "paid": true,
        "payment_intent": pi.id,
        "refunded": refunded,
        "status": "succeeded",
    })
}

/// A dispute object (`charge.dispute.created`). Its own metadata is empty, as on Stripe: the
/// receiver finds the payment through `payment_intent`.
pub fn dispute_object(pi: &PaymentIntent, charge_id: &str) -> Value {
    json!({
        "id": new_id("dp_"),
        "object": "dispute",
        "amount": pi.amount,
        "charge": charge_id,
        "created": now_unix(),
        "currency": pi.currency,
        "livemode": false,
        "metadata": {},
        "payment_intent": pi.id,
        "reason": "fraudulent",
        "status": "needs_response",
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_stripe() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed with Python hmac.
        let header = signature_header("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(
            header,
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
        assert_ne!(
            header,
            signature_header("whsec_other", 1_700_000_000, b"{}")
        );
        assert_ne!(header, signature_header("whsec_test", 1_700_000_001, b"{}"));
    }
}
