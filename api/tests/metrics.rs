//! `/metrics` on the api (admin token required) and on the worker, after real payments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp};

async fn scrape(app: &TestApp, auth: Option<&str>) -> (u16, String) {
    let mut req = app.client.get(format!("{}/metrics", app.base));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn api_metrics_need_the_admin_token() {
    let app = TestApp::spawn_with(common::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token"),
        Some("Basic Zm9vOmJhcg=="),
    ] {
        let (status, body) = scrape(&app, auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert!(!body.contains("payments_"), "metrics leaked without auth");
    }
    let (status, _) = scrape(&app, Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_describe_requests_jobs_stripe_calls_and_queues() {
    let app = TestApp::spawn().await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_state(&id, &["complete"], Duration::from_secs(20))
        .await;
    let declined = app.pay("basic", "pm_card_visa_chargeDeclined").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_for_state(&declined, &["failed"], Duration::from_secs(20))
        .await;

    let (status, body) = scrape(&app, Some(&format!("Bearer {ADMIN_TOKEN}"))).await;
    assert_eq!(status, 200);
    for needle in [
        r#"payments_http_requests_total{route="/transactions",method="POST",status="202"}"#,
        r#"payments_http_request_duration_seconds_bucket{route="/transactions/{id}",method="GET""#,
        r#"payments_transactions{state="complete"} 1"#,
        r#"payments_transactions{state="failed"} 1"#,
        r#"payments_jobs_total{outcome="complete"}"#,
        r#"payments_jobs_total{outcome="failed"}"#,
        r#"payments_stripe_requests_total{call="create",outcome="ok"}"#,
        r#"payments_stripe_requests_total{call="confirm",outcome="card_error"}"#,
        r#"payments_stripe_request_duration_seconds_bucket{call="create""#,
        r#"payments_queue_jobs{state="done"}"#,
        "payments_queue_up 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in:\n{body}");
    }

    // The worker serves its own endpoint, with the circuit breaker's state.
    let addr = app.settings.worker.metrics_addr.unwrap();
    let worker = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        worker.contains("payments_stripe_circuit_state 0"),
        "{worker}"
    );
    assert!(worker.contains("payments_queue_workers"), "{worker}");
}
