//! Logs, read from the real processes' output: JSON lines when `LOG_FORMAT=json`, a span with
//! the transaction id around each job, and no secret (Stripe key, merchant key, admin token,
//! client secret) anywhere, even at debug level and after failed authentication attempts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tools::chaos::service_env;
use tools::stack::{Stack, StackConfig, default_bin_dir};

const MERCHANT: &str = "mk_logtest_9f8e7d6c5b4a3921";
const ADMIN: &str = "admin_logtest_1a2b3c4d5e6f7788";
const STRIPE_KEY: &str = "sk_test_chaos";

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_carry_the_transaction_id_and_never_a_secret() {
    let log_dir = default_bin_dir().join(format!("log-test-{}", uuid::Uuid::new_v4().simple()));
    let mut env = service_env();
    env.extend(
        [
            ("MERCHANT_API_KEY", MERCHANT),
            ("ADMIN_TOKEN", ADMIN),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let stack = Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: None,
        bin_dir: default_bin_dir(),
        log_dir: log_dir.clone(),
        workers: 1,
        sim_faults: json!({}),
        env,
        redis_url: None,
        webhooks: false,
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let post = |auth: Option<String>, body: Value| {
        let mut req = http
            .post(format!("{}/transactions", stack.api_url))
            .json(&body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let merchant = json!({"amount": 1234, "currency": "usd", "email": "m@example.com", "payment_method": "pm_card_visa"});
    let ok: Value = post(Some(format!("Bearer {MERCHANT}")), merchant.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        post(Some(format!("Bearer {MERCHANT}x")), merchant)
            .await
            .unwrap()
            .status(),
        401
    );
    let three_ds = json!({"price": "basic", "email": "b@example.com", "payment_method": "pm_card_threeDSecure2Required"});
    let tds: Value = post(None, three_ds).await.unwrap().json().await.unwrap();
    let scrape = http
        .get(format!("{}/metrics", stack.api_url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    assert_eq!(
        http.get(format!("{}/metrics", stack.api_url))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Wait for both payments to be worked on, and read the 3-D Secure client secret.
    let deadline = Instant::now() + Duration::from_secs(20);
    let client_secret = loop {
        let t = transaction(&http, &stack.api_url, &tds).await;
        let done = transaction(&http, &stack.api_url, &ok).await;
        if let (Some(secret), "complete") = (
            t["client_secret"].as_str(),
            done["state"].as_str().unwrap_or(""),
        ) {
            break secret.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "payments not processed: {t} {done}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stack.teardown().await.unwrap();

    let mut lines = 0;
    let mut job_spans = 0;
    for entry in std::fs::read_dir(&log_dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for secret in [MERCHANT, ADMIN, STRIPE_KEY, client_secret.as_str()] {
            assert!(
                !text.contains(secret),
                "{} contains a secret",
                path.display()
            );
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "api.log" || name.starts_with("worker-") {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("{name}: not JSON: {line}"));
                lines += 1;
                if name.starts_with("worker-") && line.contains("charge attempt done") {
                    assert!(
                        v["span"]["transaction_id"].is_string()
                            || v["spans"].to_string().contains("transaction_id"),
                        "{line}"
                    );
                    job_spans += 1;
                }
            }
        }
    }
    assert!(lines > 10, "too few log lines to mean anything: {lines}");
    assert!(job_spans >= 2, "job log lines carry the transaction id");
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// The current state of a transaction created earlier (`created` is its POST response).
async fn transaction(http: &reqwest::Client, api_url: &str, created: &Value) -> Value {
    let id = created["id"].as_str().unwrap();
    let res = http
        .get(format!("{api_url}/transactions/{id}"))
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}
