//! Harness helpers for Stripe webhooks: the sim's deliveries to the api, events a test signs
//! itself, and payments the worker never heard of.

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use super::{TestApp, WEBHOOK_SECRET};

/// Webhooks: the sim's deliveries to the api, and events the test signs itself.
impl TestApp {
    /// Has the sim send its webhook events to this api, signed with [`WEBHOOK_SECRET`]. Off by
    /// default, so that the worker is the only path to the truth unless a test asks for both.
    pub fn enable_webhooks(&self) {
        self.sim.sim.set_webhook_endpoint(Some((
            format!("{}/webhooks/stripe", self.base),
            WEBHOOK_SECRET.to_owned(),
        )));
    }

    /// A `Stripe-Signature` header for `body` signed now with [`WEBHOOK_SECRET`].
    pub fn sign_webhook(body: &str) -> String {
        Self::sign_webhook_at(body, chrono::Utc::now().timestamp())
    }

    pub fn sign_webhook_at(body: &str, t: i64) -> String {
        shared::signature::sign(WEBHOOK_SECRET.as_bytes(), t, body.as_bytes())
    }

    /// POSTs `body` to `/webhooks/stripe` with `signature` as `Stripe-Signature`.
    pub async fn post_webhook(&self, body: &str, signature: Option<&str>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/webhooks/stripe", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Inserts a pending payment the way the api does, but pushes no job: as if the push
    /// had failed and the worker never heard of it.
    pub async fn insert_without_job(&self, amount: i64, payment_method: &str) -> Uuid {
        let id = Uuid::new_v4();
        let new = shared::models::NewTransaction {
            id,
            amount,
            currency: "usd".into(),
            email: "lost@example.com".into(),
            price: None,
            payment_method: payment_method.into(),
            stripe_idempotency_key: shared::models::NewTransaction::stripe_key_for(id),
            request_key: None,
            request_fingerprint: None,
            reference: None,
            metadata: serde_json::json!({}),
            session_id: None,
        };
        let mut conn = self.db().await;
        shared::transactions::insert(&mut conn, &new).await.unwrap();
        id
    }

    /// Charges `id` at the sim directly, as the worker would (same idempotency key and
    /// metadata), without anything recording the answer: only a webhook can tell the api.
    pub async fn charge_at_sim(&self, id: Uuid, amount: i64, payment_method: &str) -> Value {
        let key = shared::models::NewTransaction::stripe_key_for(id);
        self.charge_at_sim_with(id, amount, payment_method, Some(&key))
            .await
    }

    /// [`Self::charge_at_sim`] under another idempotency key, or none: someone else charging.
    pub async fn charge_at_sim_with(
        &self,
        id: Uuid,
        amount: i64,
        payment_method: &str,
        key: Option<&str>,
    ) -> Value {
        let form = [
            ("amount", amount.to_string()),
            ("currency", "usd".to_owned()),
            ("payment_method", payment_method.to_owned()),
            ("confirm", "true".to_owned()),
            ("metadata[transaction_id]", id.to_string()),
        ];
        let mut req = self
            .client
            .post(format!("{}/v1/payment_intents", self.sim.base_url()))
            .bearer_auth("sk_test_harness");
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.form(&form).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until the sim has delivered `n` webhook events successfully.
    pub async fn wait_for_deliveries(
        &self,
        n: usize,
        within: Duration,
    ) -> Vec<stripe_sim::Delivery> {
        let deadline = Instant::now() + within;
        loop {
            let deliveries = self.sim.sim.webhook_deliveries();
            if deliveries.iter().filter(|d| d.delivered).count() >= n {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} webhooks delivered: {deliveries:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stripe events recorded in this test's database.
    pub async fn stripe_events(&self) -> i64 {
        let mut conn = self.db().await;
        shared::stripe_events::count(&mut conn).await.unwrap()
    }

    /// The transaction's row, straight from Postgres.
    pub async fn row(&self, id: Uuid) -> shared::models::Transaction {
        let mut conn = self.db().await;
        shared::transactions::find(&mut conn, id)
            .await
            .unwrap()
            .unwrap()
    }
}
