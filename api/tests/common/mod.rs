//! Test harness: each test gets its own Postgres database, its own Redis key prefix, its own
//! stripe-sim, and the real api (and, when asked, the real worker) serving on free ports.
//! Everything is removed when the `TestApp` is dropped, even after a failed assertion.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use reqwest::header::HeaderMap;
use serde_json::Value;
use shared::settings::Settings;
use shared::testing::Scratch;
use stripe_sim::{Config as SimConfig, RunningSim};
use tokio::sync::oneshot;

mod webhooks;

pub const MERCHANT_KEY: &str = "mk_test_0123456789abcdef";
pub const ADMIN_TOKEN: &str = "admin_test_0123456789abcdef";
/// The webhook signing secret the api checks; the sim signs with it once
/// [`TestApp::enable_webhooks`] points it at the api.
pub const WEBHOOK_SECRET: &str = "whsec_test_harness_0123456789";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub sim: RunningSim,
    pub settings: Settings,
    scratch: Scratch,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub struct Options {
    pub worker: bool,
    pub tweak: fn(&mut Settings),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            worker: true,
            tweak: |_| {},
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(opts: Options) -> Self {
        Self::spawn_configured(opts.worker, opts.tweak).await
    }

    /// [`TestApp::spawn_with`] with a closure, which may capture (a receiver's address).
    pub async fn spawn_configured(worker: bool, configure: impl FnOnce(&mut Settings)) -> Self {
        shared::telemetry::init("warn,worker=info,api=info");
        let scratch = Scratch::create().await;

        let sim = stripe_sim::Sim::spawn(SimConfig::default())
            .await
            .expect("start stripe-sim");
        let mut settings = Settings::from_env().expect("settings");
        settings.database_url = scratch.database_url.clone();
        // The live-status listener's own connection goes here (no pooler in tests).
        settings.database_direct_url = scratch.database_url.clone();
        // Pools open every connection at start; tests run side by side on one Postgres.
        settings.database_pool_size = Some(4);
        settings.redis_url = scratch.redis_url.clone();
        settings.queue_namespace = scratch.namespace.clone();
        settings.api_addr = "127.0.0.1:0".parse().unwrap();
        settings.merchant_api_key = Some(shared::secret::Secret::new(MERCHANT_KEY));
        settings.prices = shared::money::Prices::parse("basic=1000:usd,pro=2500:eur").unwrap();
        settings.stripe.secret_key = Some(shared::secret::Secret::new("sk_test_harness"));
        settings.stripe.api_base = sim.base_url();
        settings.stripe.timeout = Duration::from_secs(2);
        settings.worker.lease = Duration::from_secs(4);
        settings.worker.poll_interval = Duration::from_millis(50);
        settings.worker.heartbeat = Duration::from_millis(500);
        settings.worker.retry.base_delay = Duration::from_millis(100);
        settings.worker.retry.max_delay = Duration::from_millis(500);
        settings.worker.sweep_interval = Duration::from_millis(500);
        settings.worker.sweep_after = Duration::from_secs(3);
        settings.admin_token = Some(shared::secret::Secret::new(ADMIN_TOKEN));
        settings.stripe.webhook_secret = Some(shared::secret::Secret::new(WEBHOOK_SECRET));
        // A port of its own for the (first) worker's /metrics; later workers fail to bind it,
        // which they log and survive.
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        settings.worker.metrics_addr = Some(([127, 0, 0, 1], metrics_port).into());
        configure(&mut settings);

        let mut app = TestApp {
            base: String::new(),
            client: reqwest::Client::new(),
            sim,
            settings: settings.clone(),
            scratch,
            stops: vec![],
            tasks: vec![],
        };
        let server = api::startup::Application::build(settings.clone())
            .await
            .expect("build api");
        app.base = format!("http://{}", server.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        app.stops.push(tx);
        app.tasks.push(tokio::spawn(async move {
            server
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
        if worker {
            app.start_worker();
        }
        app
    }

    /// Starts one more worker process-equivalent (its own name, pool and sweeper).
    pub fn start_worker(&mut self) {
        let (tx, rx) = oneshot::channel();
        self.stops.push(tx);
        let settings = self.settings.clone();
        self.tasks.push(tokio::spawn(async move {
            worker::startup::Application::build(settings)
                .await
                .unwrap()
                .run_until_stopped(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        }));
    }

    pub async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> (u16, Value, HeaderMap) {
        let mut req = self
            .client
            .post(format!("{}/transactions", self.base))
            .json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}/transactions", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A GET with the merchant key.
    pub async fn get_as_merchant(&self, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {MERCHANT_KEY}"))
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap_or_default())
    }

    /// The PaymentIntent as stripe-sim shows it to a Stripe client.
    pub async fn stripe_intent(&self, stripe_id: &str) -> Value {
        self.client
            .get(format!(
                "{}/v1/payment_intents/{stripe_id}",
                self.sim.base_url()
            ))
            .bearer_auth("sk_test_harness")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A GET that does not follow redirects, for pages and headers.
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    /// A browser purchase of `price` with `payment_method`.
    pub async fn pay(&self, price: &str, pm: &str) -> Value {
        let (status, body, _) = self
            .post(&serde_json::json!({"price": price, "email": "buyer@example.com", "payment_method": pm}), &[])
            .await;
        assert_eq!(status, 202, "{body}");
        body
    }

    /// `n` successful-card payments of the `basic` price, accepted; their ids.
    pub async fn pay_many(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let body = self.pay("basic", "pm_card_visa").await;
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        ids
    }

    /// Polls the transaction until `state` is one of `states`, or panics after `within`.
    pub async fn wait_for_state(&self, id: &str, states: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("/transactions/{id}")).await;
            if states.iter().any(|s| body["state"] == *s) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "transaction {id} never reached {states:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.settings.database_url)
            .await
            .unwrap()
    }

    pub async fn count_rows(&self) -> i64 {
        let mut conn = self.db().await;
        shared::transactions::count_by_state(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// The states of every transaction paid with `email`.
    pub async fn states_for_email(&self, email: &str) -> Vec<String> {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use shared::schema::transactions::dsl;
        let mut conn = self.db().await;
        dsl::transactions
            .filter(dsl::email.eq(email))
            .select(dsl::state)
            .load(&mut conn)
            .await
            .unwrap()
    }

    /// Number of jobs ever pushed to this test's queue (its data hash holds one per task).
    pub async fn jobs_pushed(&self) -> usize {
        let client = redis::Client::open(self.settings.redis_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("{}:data", self.settings.charge_queue());
        redis::cmd("HLEN")
            .arg(key)
            .query_async::<usize>(&mut conn)
            .await
            .unwrap()
    }

    /// Successful charges stripe-sim made for one transaction.
    pub fn charges_for(&self, id: &str) -> usize {
        self.sim
            .sim
            .ledger()
            .charges
            .iter()
            .filter(|c| c.transaction_id.as_deref() == Some(id))
            .count()
    }

    pub fn intents_for(&self, id: &str) -> usize {
        self.sim
            .sim
            .ledger()
            .payment_intents
            .iter()
            .filter(|p| p.transaction_id.as_deref() == Some(id))
            .count()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.scratch.remove_blocking(async {});
    }
}
