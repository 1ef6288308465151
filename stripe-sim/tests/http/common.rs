//! Helpers shared by the HTTP tests: a running simulator and a form-posting client.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::Value;
use stripe_sim::{Config, Faults, RunningSim, Sim};

pub const KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

pub struct Harness {
    pub running: RunningSim,
    pub http: reqwest::Client,
}

/// A response reduced to what the tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn error(&self) -> &Value {
        &self.json["error"]
    }
}

pub async fn start(config: Config) -> Harness {
    let running = Sim::spawn(config).await.expect("spawn simulator");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    Harness { running, http }
}

pub async fn start_with_faults(faults: Faults) -> Harness {
    start(Config {
        faults,
        ..Config::default()
    })
    .await
}

impl Harness {
    pub fn sim(&self) -> &Sim {
        &self.running.sim
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.base_url())
    }

    pub async fn answer(resp: reqwest::Response) -> Answer {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            json,
        }
    }

    /// `POST /v1/payment_intents` with form params and an optional idempotency key.
    pub async fn try_create(
        &self,
        params: &[(&str, &str)],
        key: Option<&str>,
    ) -> reqwest::Result<Answer> {
        let mut req = self
            .http
            .post(self.url("/v1/payment_intents"))
            .bearer_auth(KEY)
            .form(params);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        Ok(Self::answer(req.send().await?).await)
    }

    pub async fn create(&self, params: &[(&str, &str)], key: Option<&str>) -> Answer {
        self.try_create(params, key).await.expect("request")
    }

    /// `POST` to any `/v1` path with form params and an optional idempotency key.
    pub async fn post(&self, path: &str, params: &[(&str, &str)], key: Option<&str>) -> Answer {
        let mut req = self.http.post(self.url(path)).bearer_auth(KEY).form(params);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        Self::answer(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("request");
        Self::answer(resp).await
    }
}

/// Standard confirm-with-card parameters for a transaction id.
pub fn charge<'a>(pm: &'a str, tx: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("amount", "2000"),
        ("currency", "usd"),
        ("payment_method", pm),
        ("confirm", "true"),
        ("metadata[transaction_id]", tx),
    ]
}

/// Polls `check` until it yields a value or the deadline passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
