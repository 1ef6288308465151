//! Bad input gets a clear 4xx in our error shape, writes nothing and enqueues nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{MERCHANT_KEY, Options, TestApp};
use serde_json::{Value, json};

async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await
}

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn assert_nothing_written(app: &TestApp) {
    assert_eq!(app.count_rows().await, 0, "a rejected request wrote a row");
    assert_eq!(
        app.jobs_pushed().await,
        0,
        "a rejected request enqueued a job"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_bodies_are_rejected_with_a_field_and_nothing_is_written() {
    let app = app().await;
    let ok = json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    // (body, status, code, field)
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (
            with("price", json!("gold")),
            422,
            "validation_failed",
            Some("price"),
        ),
        (
            with("email", json!("not-an-email")),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            with("email", json!("a".repeat(300) + "@x.com")),
            422,
            "validation_failed",
            Some("email"),
        ),
        (
            with("payment_method", json!("card_123")),
            422,
            "validation_failed",
            Some("payment_method"),
        ),
        (
            with("payment_method", json!("pm_<script>")),
            422,
            "validation_failed",
            Some("payment_method"),
        ),
        (without("price"), 422, "validation_failed", Some("price")),
        (without("email"), 400, "invalid_json", None),
        (with("email", json!(42)), 400, "invalid_json", None),
        (with("price", json!(["basic"])), 400, "invalid_json", None),
        (with("surprise", json!(true)), 400, "invalid_json", None),
        (json!([1, 2]), 400, "invalid_json", None),
        (json!("just a string"), 400, "invalid_json", None),
        // A browser may not name its own amount.
        (
            json!({"amount": 1, "currency": "usd", "email": "a@example.com", "payment_method": "pm_card_visa"}),
            401,
            "unauthorized",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let (s, err, _) = app.post(&body, &[]).await;
        assert_eq!(s, status, "{body} -> {err}");
        assert_error_shape(&err, code);
        assert_eq!(err["error"]["field"].as_str(), field, "{body} -> {err}");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn merchant_amounts_are_bounded_and_currencies_checked() {
    let app = app().await;
    let auth = format!("Bearer {MERCHANT_KEY}");
    let base = |amount: Value, currency: Value| json!({"amount": amount, "currency": currency, "email": "a@example.com", "payment_method": "pm_card_visa"});
    for (body, status, field) in [
        (base(json!(0), json!("usd")), 422, Some("amount")),
        (base(json!(-5), json!("usd")), 422, Some("amount")),
        (
            base(json!(100_000_000_000i64), json!("usd")),
            422,
            Some("amount"),
        ),
        (base(json!(10), json!("xyz")), 422, Some("currency")),
        (base(json!(10), json!("us")), 422, Some("currency")),
        (base(json!(10.5), json!("usd")), 400, None),
        (base(json!("10"), json!("usd")), 400, None),
        (base(json!(1e30), json!("usd")), 400, None),
        (
            json!({"amount": 10, "email": "a@example.com", "payment_method": "pm_card_visa"}),
            422,
            Some("currency"),
        ),
        (
            json!({"amount": 10, "currency": "usd", "price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"}),
            422,
            Some("price"),
        ),
    ] {
        let (s, err, _) = app.post(&body, &[("authorization", &auth)]).await;
        assert_eq!(s, status, "{body} -> {err}");
        assert_eq!(err["error"]["field"].as_str(), field, "{body} -> {err}");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_malformed_bearer_keys_are_refused() {
    let app = app().await;
    let body = json!({"amount": 10, "currency": "usd", "email": "a@example.com", "payment_method": "pm_card_visa"});
    for auth in [
        "Bearer wrong-key-wrong-key",
        "Bearer ",
        "Basic abc",
        MERCHANT_KEY,
        &format!("Bearer {MERCHANT_KEY}x"),
    ] {
        let (s, err, _) = app.post(&body, &[("authorization", auth)]).await;
        assert_eq!(s, 401, "{auth}");
        assert_error_shape(&err, "unauthorized");
    }
    // A wrong key is refused even where no key is needed.
    let browser =
        json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"});
    assert_eq!(
        app.post(&browser, &[("authorization", "Bearer nope")])
            .await
            .0,
        401
    );
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_oversized_and_mistyped_bodies_are_refused() {
    let app = app().await;
    let (s, err) = app.post_raw("{\"price\": ", "application/json").await;
    assert_eq!(s, 400);
    assert_error_shape(&err, "invalid_json");

    let (s, err) = app
        .post_raw("price=basic", "application/x-www-form-urlencoded")
        .await;
    assert_eq!(s, 415);
    assert_error_shape(&err, "unsupported_media_type");

    let huge = format!(
        "{{\"price\":\"basic\",\"email\":\"a@example.com\",\"payment_method\":\"pm_card_visa\",\"x\":\"{}\"}}",
        "a".repeat(100_000)
    );
    let (s, err) = app.post_raw(huge, "application/json").await;
    assert_eq!(s, 413);
    assert_error_shape(&err, "payload_too_large");

    let (s, err) = app
        .post_raw(vec![0xff, 0xfe, 0x00], "application/json")
        .await;
    assert_eq!(s, 400);
    assert_error_shape(&err, "invalid_json");
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_idempotency_keys_are_refused() {
    let app = app().await;
    let body =
        json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"});
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space"] {
        let (s, err, _) = app.post(&body, &[("idempotency-key", key)]).await;
        assert_eq!(s, 422, "{key}");
        assert_eq!(err["error"]["field"], "Idempotency-Key");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_transactions_routes_and_methods_get_json_errors() {
    let app = app().await;
    let (s, err) = app
        .get(&format!("/transactions/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(s, 404);
    assert_error_shape(&err, "not_found");
    let (s, err) = app.get("/transactions/not-a-uuid").await;
    assert_eq!(s, 404);
    assert_error_shape(&err, "not_found");
    let (s, err) = app.get("/nope").await;
    assert_eq!(s, 404);
    assert_error_shape(&err, "not_found");
    let res = app
        .client
        .delete(format!("{}/transactions", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_error_shape(&res.json().await.unwrap(), "method_not_allowed");
}
