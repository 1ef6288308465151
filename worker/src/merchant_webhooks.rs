//! Sends the merchant's webhooks: every event of the log (`shared::events`) to every endpoint of
//! `MERCHANT_WEBHOOK_URL`, signed like Stripe's (`Payments-Signature: t=…,v1=…`), at least once.
//!
//! Each endpoint has its own loop and its own in-flight limit, so one slow or dead endpoint
//! delays neither the others nor the charges (which never wait on any of this). A loop claims
//! due delivery rows in Postgres (`shared::merchant_webhooks::claim_due`), sends each event on
//! its own (a failing one never blocks later ones), and records the attempt: a 2xx is
//! delivered; anything else, or no answer within `MERCHANT_WEBHOOK_TIMEOUT_MS`, is retried with
//! exponential backoff and jitter until the delivery is `MERCHANT_WEBHOOK_MAX_AGE` old, then
//! given up (payctl and `/ops` can send it again). Nothing here is in Redis, and a worker
//! killed mid-attempt leaves its claimed rows to be sent again once the claim runs out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rand::RngExt;
use shared::db::PgPool;
use shared::merchant_webhooks::{self as hooks, Attempt, Due, Endpoint, Next};
use shared::secret::Secret;
use shared::settings::MerchantWebhookSettings;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a claim outlives an attempt's timeout before another sender may take the row.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

pub struct Sender {
    db: PgPool,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    settings: MerchantWebhookSettings,
    secret: Secret,
}

impl Sender {
    /// `None` when no endpoint is configured.
    pub fn new(db: PgPool, settings: &MerchantWebhookSettings) -> Option<Arc<Self>> {
        let secret = settings.secret.clone()?;
        if settings.urls.is_empty() {
            return None;
        }
        Some(Arc::new(Self {
            db,
            client: crate::stripe::http::https_client(settings.timeout),
            settings: settings.clone(),
            secret,
        }))
    }

    /// Registers the endpoints, then sends to each until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let endpoints = loop {
            match self.endpoints().await {
                Ok(e) => break e,
                Err(e) => {
                    tracing::warn!(error = %e, "merchant webhooks: cannot read the endpoints yet")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let loops: Vec<_> = endpoints
            .into_iter()
            .filter(|e| self.settings.urls.contains(&e.url))
            .map(|e| tokio::spawn(self.clone().endpoint_loop(e, stop.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
    }

    async fn endpoints(&self) -> anyhow::Result<Vec<Endpoint>> {
        let mut conn = self.db.get().await?;
        hooks::sync_endpoints(&mut conn, &self.settings.urls).await?;
        Ok(hooks::enabled_endpoints(&mut conn).await?)
    }

    async fn endpoint_loop(self: Arc<Self>, endpoint: Endpoint, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let endpoint = Arc::new(endpoint);
        tracing::info!(url = %hooks::redacted(&endpoint.url), "sending merchant webhooks");
        while !stop.is_cancelled() {
            let free = slots.available_permits();
            let claimed = if free == 0 {
                Vec::new()
            } else {
                self.claim(&endpoint, free).await
            };
            if claimed.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                }
                continue;
            }
            for due in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (this, endpoint) = (self.clone(), endpoint.clone());
                tokio::spawn(async move {
                    this.deliver(&endpoint, due).await;
                    drop(permit);
                });
            }
        }
        // In-flight attempts finish (or time out) before the loop ends.
        let all = u32::try_from(self.settings.concurrency).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(
            self.settings.timeout + CLAIM_MARGIN,
            slots.acquire_many(all),
        )
        .await;
    }

    async fn claim(&self, endpoint: &Endpoint, n: usize) -> Vec<Due> {
        let hold = self.settings.timeout + CLAIM_MARGIN;
        let claimed = async {
            let mut conn = self.db.get().await?;
            anyhow::Ok(hooks::claim_due(&mut conn, endpoint.id, n as i64, hold).await?)
        }
        .await;
        claimed.unwrap_or_else(|e| {
            tracing::warn!(url = %hooks::redacted(&endpoint.url), error = %e, "cannot claim merchant webhooks");
            Vec::new()
        })
    }

    /// One attempt at one delivery, recorded.
    async fn deliver(&self, endpoint: &Endpoint, due: Due) {
        let body = serde_json::to_vec(&due.event.to_json()).unwrap_or_default();
        let signature = shared::signature::sign(
            self.secret.expose().as_bytes(),
            Utc::now().timestamp(),
            &body,
        );
        let started = Instant::now();
        let (status, error) = match self.post(&endpoint.url, &signature, body).await {
            Ok(s) if (200..300).contains(&s) => (Some(s), None),
            Ok(s) => (Some(s), Some(format!("HTTP {s}"))),
            Err(e) => (None, Some(e)),
        };
        let attempt = Attempt {
            status,
            error,
            latency: started.elapsed(),
        };
        let next = self.next(&due, &attempt);
        let outcome = match (attempt.delivered(), next) {
            (true, _) => "delivered",
            (false, Next::RetryIn(_)) => "retry",
            (false, Next::GiveUp) => "gave_up",
        };
        metrics::counter!("payments_merchant_webhook_attempts_total", "outcome" => outcome)
            .increment(1);
        metrics::histogram!("payments_merchant_webhook_seconds")
            .record(attempt.latency.as_secs_f64());
        match outcome {
            "delivered" => {
                tracing::debug!(event = %due.event.public_id(), url = %hooks::redacted(&endpoint.url), "webhook delivered")
            }
            "retry" => {
                tracing::info!(event = %due.event.public_id(), url = %hooks::redacted(&endpoint.url),
                attempt = due.attempts, error = attempt.error.as_deref(), ?next, "webhook not delivered; will retry")
            }
            _ => {
                tracing::warn!(event = %due.event.public_id(), url = %hooks::redacted(&endpoint.url),
                attempts = due.attempts, error = attempt.error.as_deref(), "webhook given up")
            }
        }
        // A record that fails leaves the claim to run out: the event is sent again (at least
        // once), never lost.
        let recorded = async {
            let mut conn = self.db.get().await?;
            anyhow::Ok(hooks::record_attempt(&mut conn, due.delivery_id, &attempt, next).await?)
        }
        .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, event = %due.event.public_id(), "cannot record a webhook attempt; it will be sent again");
        }
    }

    async fn post(&self, url: &str, signature: &str, body: Vec<u8>) -> Result<u16, String> {
        let request = Request::post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static("payments-webhooks/1"))
            .header("payments-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request: {e}"))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                let mut text = e.to_string();
                if let Some(source) = std::error::Error::source(&e) {
                    text = format!("{text}: {source}");
                }
                text
            })?;
            let status = response.status().as_u16();
            // Read the answer off so the connection can be kept; its content does not matter.
            let _ = response.into_body().collect().await;
            Ok(status)
        };
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.settings.timeout)),
        }
    }

    /// Exponential backoff with jitter, until the delivery is too old to try again.
    fn next(&self, due: &Due, _attempt: &Attempt) -> Next {
        let s = &self.settings;
        let doublings = u32::try_from(due.attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let full = s.retry_base.saturating_mul(1 << doublings).min(s.retry_max);
        let jittered = full.mul_f64(rand::rng().random_range(0.5..=1.0));
        let age = (Utc::now() - due.delivery_created_at)
            .to_std()
            .unwrap_or_default();
        if age + jittered > s.max_age {
            Next::GiveUp
        } else {
            Next::RetryIn(jittered)
        }
    }
}
