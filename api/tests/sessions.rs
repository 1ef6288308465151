//! Checkout sessions against real Postgres, Redis and stripe-sim: made by the merchant, paid
//! at their page, at most one successful attempt however many tabs try, expiry, and every bad
//! input refused without a change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{MERCHANT_KEY, Options, TestApp};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn merchant() -> String {
    format!("Bearer {MERCHANT_KEY}")
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    if let Some(body) = body {
        req = req.json(body);
    }
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

async fn create_session(app: &TestApp, body: &Value, key: &str) -> (u16, Value) {
    let auth = merchant();
    let (status, v, _) = send(
        app,
        reqwest::Method::POST,
        "/checkout/sessions",
        Some(body),
        &[("authorization", &auth), ("idempotency-key", key)],
    )
    .await;
    (status, v)
}

async fn pay(app: &TestApp, session: &str, body: &Value, key: &str) -> (u16, Value) {
    let (status, v, _) = send(
        app,
        reqwest::Method::POST,
        &format!("/checkout/sessions/{session}/pay"),
        Some(body),
        &[("idempotency-key", key)],
    )
    .await;
    (status, v)
}

fn order() -> Value {
    json!({"amount": 4200, "currency": "usd", "reference": "order-77",
           "metadata": {"cart": "c-9"},
           "success_url": "https://shop.example/thanks?from=pay",
           "cancel_url": "https://shop.example/cart"})
}

fn card(pm: &str) -> Value {
    json!({"email": "buyer@example.com", "payment_method": pm})
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = app.db().await;
    let n: N = diesel::sql_query(sql).get_result(&mut conn).await.unwrap();
    n.n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_takes_a_decline_then_one_payment_and_no_more() {
    let app = TestApp::spawn().await;
    let (status, session) = create_session(&app, &order(), "s-1").await;
    assert_eq!(status, 201, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();
    assert_eq!(
        session["url"],
        format!("{}/checkout/sessions/{sid}", app.base).as_str()
    );
    assert_eq!(session["status"], "open");
    assert_eq!(session["transaction_id"], Value::Null);
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(session["expires_at"].clone()).unwrap();
    let left = expires - chrono::Utc::now();
    assert!((86_000..=86_400).contains(&left.num_seconds()), "{left}");

    // The same key and body: the same session; another body: refused.
    let (status, again) = create_session(&app, &order(), "s-1").await;
    assert_eq!((status, &again["id"]), (200, &session["id"]));
    let mut other = order();
    other["amount"] = json!(1);
    assert_eq!(create_session(&app, &other, "s-1").await.0, 409);

    // The page is the session's: its amount, its way back, and no form field for the price.
    let res = app.get_raw(&format!("/checkout/sessions/{sid}")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("Pay $42.00"), "{html}");
    assert!(html.contains("Order order-77"));
    assert!(html.contains("href=\"https://shop.example/cart\""));
    assert!(html.contains(&format!("\"session\":{{\"id\":\"{sid}\"")));

    // A decline, then another card: two attempts, one success.
    let (status, declined) = pay(&app, &sid, &card("pm_card_visa_chargeDeclined"), "a-1").await;
    assert_eq!(status, 202, "{declined}");
    let declined_id = declined["id"].as_str().unwrap().to_owned();
    app.wait_for_state(&declined_id, &["failed"], WAIT).await;
    let (status, paid) = pay(&app, &sid, &card("pm_card_visa"), "a-2").await;
    assert_eq!(status, 202, "{paid}");
    let paid_id = paid["id"].as_str().unwrap().to_owned();
    app.wait_for_state(&paid_id, &["complete"], WAIT).await;

    // No third attempt: the answer names the payment that succeeded.
    let (status, refused) = pay(&app, &sid, &card("pm_card_visa"), "a-3").await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "session_has_payment");
    assert_eq!(refused["error"]["transaction_id"], paid_id.as_str());
    // A retry of the successful attempt's own request is a replay, not a refusal.
    let (status, replay) = pay(&app, &sid, &card("pm_card_visa"), "a-2").await;
    assert_eq!((status, &replay["id"]), (202, &paid["id"]));
    assert_eq!(app.charges_for(&paid_id), 1);

    // The payments carry the session's reference and metadata; the session says it is paid.
    let (_, shown) = app
        .get_as_merchant(&format!("/transactions/{paid_id}"))
        .await;
    assert_eq!(shown["reference"], "order-77");
    assert_eq!(shown["metadata"]["cart"], "c-9");
    assert_eq!(shown["session_id"], sid.as_str());
    assert_eq!(shown["amount"], 4200);
    let (status, now) = app
        .get_as_merchant(&format!("/checkout/sessions/{sid}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(now["status"], "complete");
    assert_eq!(now["transaction_id"], paid_id.as_str());
    // Stripe's intent carries the merchant's data too.
    let stripe_id = shown["stripe_id"].as_str().unwrap();
    let intent = app.stripe_intent(stripe_id).await;
    assert_eq!(intent["metadata"]["reference"], "order-77");
    assert_eq!(intent["metadata"]["cart"], "c-9");

    // A page opened now follows the paid attempt instead of offering the form.
    let html = app
        .get_raw(&format!("/checkout/sessions/{sid}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(&format!("\"resume\":\"{paid_id}\"")),
        "{html}"
    );
    let (_, list) = app
        .get_as_merchant(&format!("/transactions?session_id={sid}"))
        .await;
    let states: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["complete", "failed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn of_many_tabs_paying_at_once_exactly_one_starts_a_payment() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (_, session) = create_session(&app, &order(), "s-race").await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let tabs = (0..12).map(|i| {
        let (app, sid) = (&app, sid.clone());
        async move { pay(app, &sid, &card("pm_card_visa"), &format!("tab-{i}")).await }
    });
    let answers = futures::future::join_all(tabs).await;
    let started: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    let winner = &started[0]["id"];
    for (status, v) in &answers {
        if *status != 202 {
            assert_eq!(*status, 409, "{v}");
            assert_eq!(&v["error"]["transaction_id"], winner, "{v}");
        }
    }
    let rows = scalar(
        &app,
        &format!("SELECT count(*) AS n FROM transactions WHERE session_id = '{sid}'"),
    )
    .await;
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_session_shows_a_clear_page_and_takes_no_payment() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut body = order();
    body["expires_in"] = json!(1800);
    let (status, session) = create_session(&app, &body, "s-exp").await;
    assert_eq!(status, 201, "{session}");
    let sid = session["id"].as_str().unwrap().to_owned();
    let mut conn = app.db().await;
    diesel::sql_query(format!(
        "UPDATE checkout_sessions SET expires_at = now() - interval '1 second' WHERE id = '{sid}'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();

    let res = app.get_raw(&format!("/checkout/sessions/{sid}")).await;
    assert_eq!(res.status(), 410);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = res.text().await.unwrap();
    assert!(html.contains("This checkout has expired"), "{html}");
    assert!(html.contains("href=\"https://shop.example/cart\""));
    let (status, refused) = pay(&app, &sid, &card("pm_card_visa"), "late").await;
    assert_eq!(status, 410, "{refused}");
    assert_eq!(refused["error"]["code"], "session_expired");
    assert_eq!(app.count_rows().await, 0);
    let (_, shown) = app
        .get_as_merchant(&format!("/checkout/sessions/{sid}"))
        .await;
    assert_eq!(shown["status"], "expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_to_sessions_is_a_4xx_that_changes_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    // Without (or with a wrong) merchant key.
    let (status, _, _) = send(
        &app,
        reqwest::Method::POST,
        "/checkout/sessions",
        Some(&order()),
        &[],
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = send(
        &app,
        reqwest::Method::POST,
        "/checkout/sessions",
        Some(&order()),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(status, 401);

    let with = |field: &str, value: Value| {
        let mut b = order();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = order();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            with("success_url", json!("http://shop.example/t")),
            422,
            "success_url",
        ),
        (
            with("success_url", json!("javascript:alert(1)")),
            422,
            "success_url",
        ),
        (with("success_url", json!("/thanks")), 422, "success_url"),
        (
            with("cancel_url", json!("https://u:p@shop.example/")),
            422,
            "cancel_url",
        ),
        (with("expires_in", json!(60)), 422, "expires_in"),
        (with("expires_in", json!(90_000)), 422, "expires_in"),
        (with("amount", json!(0)), 422, "amount"),
        (with("currency", json!("xyz")), 422, "currency"),
        (with("price", json!("basic")), 422, "price"),
        (with("email", json!("not-an-email")), 422, "email"),
        (with("reference", json!("")), 422, "reference"),
        (
            with("metadata", json!({"transaction_id": "x"})),
            422,
            "metadata",
        ),
        (with("colour", json!("red")), 400, ""),
        (with("amount", json!("12")), 400, ""),
        (without("success_url"), 400, ""),
        (json!({"success_url": "https://a.example/"}), 422, "price"),
    ];
    for (i, (body, want, field)) in cases.iter().enumerate() {
        let (status, v) = create_session(&app, body, &format!("bad-{i}")).await;
        assert_eq!(status, *want, "{body}: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], *field, "{body}: {v}");
        }
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert_eq!(
        scalar(&app, "SELECT count(*) AS n FROM checkout_sessions").await,
        0
    );

    // Paying: unknown and malformed sessions, bad cards, a fixed email.
    let mut fixed = order();
    fixed["email"] = json!("only@example.com");
    let (_, session) = create_session(&app, &fixed, "fixed").await;
    let sid = session["id"].as_str().unwrap().to_owned();
    let unknown = uuid::Uuid::new_v4().to_string();
    let pay_cases: Vec<(&str, Value, u16, &str)> = vec![
        (&unknown, card("pm_card_visa"), 404, ""),
        ("not-a-uuid", card("pm_card_visa"), 404, ""),
        (&sid, json!({"email": "only@example.com"}), 400, ""),
        (
            &sid,
            json!({"payment_method": "card_123"}),
            422,
            "payment_method",
        ),
        (&sid, card("pm_card_visa"), 422, "email"),
        (
            &sid,
            json!({"payment_method": "pm_card_visa", "amount": 1}),
            400,
            "",
        ),
        (
            &sid,
            json!({"email": "x", "payment_method": "pm_card_visa"}),
            422,
            "email",
        ),
    ];
    for (i, (id, body, want, field)) in pay_cases.iter().enumerate() {
        let (status, v) = pay(&app, id, body, &format!("p-{i}")).await;
        assert_eq!(status, *want, "{id} {body}: {v}");
        if !field.is_empty() {
            assert_eq!(v["error"]["field"], *field, "{body}: {v}");
        }
    }
    // The session's own email pays.
    let (status, ok) = pay(
        &app,
        &sid,
        &json!({"payment_method": "pm_card_visa"}),
        "fixed-ok",
    )
    .await;
    assert_eq!(status, 202, "{ok}");
    assert_eq!(app.count_rows().await, 1);

    // Pages: an unknown session is a 404 page; a wrong key on the JSON view is a 401.
    let res = app.get_raw(&format!("/checkout/sessions/{unknown}")).await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("not valid"));
    let (status, _, _) = send(
        &app,
        reqwest::Method::GET,
        &format!("/checkout/sessions/{sid}"),
        None,
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, v) = app
        .get_as_merchant(&format!("/checkout/sessions/{unknown}"))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}
