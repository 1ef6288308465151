//! PaymentIntent outcomes per test card, validation, auth, retrieval, search, ledger.

use stripe_sim::Config;

use crate::common::{KEY, charge, start};

#[tokio::test]
async fn success_records_a_charge() {
    let h = start(Config::default()).await;
    let a = h.create(&charge("pm_card_visa", "tx_ok"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    let pi = &a.json;
    assert_eq!(pi["object"], "payment_intent");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount"], 2000);
    assert_eq!(pi["amount_received"], 2000);
    assert_eq!(pi["currency"], "usd");
    assert_eq!(pi["metadata"]["transaction_id"], "tx_ok");
    assert!(pi["latest_charge"].as_str().unwrap().starts_with("ch_"));
    let id = pi["id"].as_str().unwrap();
    assert!(
        pi["client_secret"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}_secret_"))
    );
    assert!(a.header("request-id").unwrap().starts_with("req_"));

    let ledger = h.sim().ledger();
    assert_eq!(ledger.payment_intents.len(), 1);
    assert_eq!(ledger.payment_intents[0].status, "succeeded");
    assert_eq!(
        ledger.payment_intents[0].transaction_id.as_deref(),
        Some("tx_ok")
    );
    assert_eq!(ledger.charges.len(), 1);
    assert_eq!(ledger.charges[0].payment_intent, id);
    assert_eq!(ledger.charges[0].amount, 2000);
    assert_eq!(ledger.charges_for("tx_ok").len(), 1);

    // The same ledger over HTTP.
    let over_http: stripe_sim::Ledger = h
        .http
        .get(h.url("/sim/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http, ledger);

    let got = h.get(&format!("/v1/payment_intents/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json, a.json);
}

#[tokio::test]
async fn declines_have_stripe_codes_and_embed_the_intent() {
    let h = start(Config::default()).await;
    let cases = [
        (
            "pm_card_visa_chargeDeclined",
            "card_declined",
            Some("generic_decline"),
            "Your card was declined.",
        ),
        (
            "tok_chargeDeclined",
            "card_declined",
            Some("generic_decline"),
            "Your card was declined.",
        ),
        (
            "pm_card_visa_chargeDeclinedInsufficientFunds",
            "card_declined",
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
        ),
        (
            "tok_chargeDeclinedInsufficientFunds",
            "card_declined",
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
        ),
        (
            "pm_card_chargeDeclinedProcessingError",
            "processing_error",
            None,
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ];
    for (i, (pm, code, decline_code, message)) in cases.iter().enumerate() {
        let tx = format!("tx_decline_{i}");
        let a = h.create(&charge(pm, &tx), None).await;
        assert_eq!(a.status, 402, "{pm}: {:?}", a.json);
        let e = a.error();
        assert_eq!(e["type"], "card_error", "{pm}");
        assert_eq!(e["code"], *code, "{pm}");
        assert_eq!(e["decline_code"].as_str(), *decline_code, "{pm}");
        assert_eq!(e["message"], *message, "{pm}");
        assert!(
            e["doc_url"]
                .as_str()
                .unwrap()
                .starts_with("https://stripe.com/docs/error-codes/")
        );
        let pi = &e["payment_intent"];
        assert_eq!(pi["status"], "requires_payment_method", "{pm}");
        assert_eq!(pi["last_payment_error"]["code"], *code, "{pm}");
        assert_eq!(pi["metadata"]["transaction_id"], tx.as_str());
        // The intent exists and can be read back.
        let got = h
            .get(&format!(
                "/v1/payment_intents/{}",
                pi["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(got.json["status"], "requires_payment_method");
    }
    let ledger = h.sim().ledger();
    assert_eq!(ledger.payment_intents.len(), cases.len());
    assert!(ledger.charges.is_empty(), "declines are not charges");
}

#[tokio::test]
async fn without_confirm_nothing_is_charged() {
    let h = start(Config::default()).await;
    let a = h
        .create(
            &[
                ("amount", "500"),
                ("currency", "eur"),
                ("payment_method", "pm_card_visa"),
            ],
            None,
        )
        .await;
    assert_eq!(a.json["status"], "requires_confirmation");
    let b = h
        .create(
            &[("amount", "500"), ("currency", "eur"), ("confirm", "false")],
            None,
        )
        .await;
    assert_eq!(b.json["status"], "requires_payment_method");
    assert!(h.sim().ledger().charges.is_empty());
}

#[tokio::test]
async fn validation_errors_name_the_param() {
    let h = start(Config::default()).await;
    for (params, param, status) in [
        (vec![("currency", "usd")], "amount", 400),
        (vec![("amount", "abc"), ("currency", "usd")], "amount", 400),
        (vec![("amount", "0"), ("currency", "usd")], "amount", 400),
        (vec![("amount", "100")], "currency", 400),
        (vec![("amount", "100"), ("currency", "us")], "currency", 400),
        (
            vec![
                ("amount", "100"),
                ("currency", "usd"),
                ("confirm", "true"),
                ("payment_method", "card_x"),
            ],
            "payment_method",
            400,
        ),
    ] {
        let a = h.create(&params, None).await;
        assert_eq!(a.status, status, "{params:?}: {:?}", a.json);
        assert_eq!(a.error()["type"], "invalid_request_error");
        assert_eq!(a.error()["param"], param, "{params:?}");
    }
    let unknown_pm = h
        .create(
            &[
                ("amount", "100"),
                ("currency", "usd"),
                ("payment_method", "bogus"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(unknown_pm.error()["code"], "resource_missing");
    assert!(
        h.sim().ledger().payment_intents.is_empty(),
        "nothing created on validation errors"
    );
}

#[tokio::test]
async fn ignores_extra_params_async_stripe_may_send() {
    let h = start(Config::default()).await;
    let mut params = charge("pm_card_mastercard", "tx_extra");
    params.extend([
        ("expand[0]", "latest_charge"),
        ("automatic_payment_methods[enabled]", "true"),
        ("automatic_payment_methods[allow_redirects]", "never"),
        ("payment_method_types[0]", "card"),
        ("description", "order 42"),
        ("receipt_email", "a@example.com"),
    ]);
    let a = h.create(&params, None).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(a.json["description"], "order 42");
    assert_eq!(a.json["receipt_email"], "a@example.com");
}

#[tokio::test]
async fn v1_requires_a_test_secret_key() {
    let h = start(Config::default()).await;
    let url = h.url("/v1/payment_intents");
    let form = charge("pm_card_visa", "tx_auth");
    for req in [
        h.http.post(&url).form(&form),
        h.http
            .post(&url)
            .bearer_auth("sk_live_abcdefghijklmnop")
            .form(&form),
        h.http
            .post(&url)
            .header("Authorization", "Basic Zm9vOmJhcg==")
            .form(&form),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("abcdefghijklmnop"),
            "never echo a whole key: {message}"
        );
    }
    assert!(h.sim().ledger().payment_intents.is_empty());
    let unauthenticated_get = h
        .http
        .get(h.url("/v1/payment_intents/pi_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated_get.status(), 401);
    // `curl -u sk_test_...:` style Basic auth works, as with Stripe.
    let basic = h
        .http
        .get(h.url("/v1/payment_intents/pi_1"))
        .basic_auth(KEY, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 404);
    // /sim routes need no key.
    assert_eq!(
        h.http
            .get(h.url("/sim/stats"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn retrieve_unknown_is_404_resource_missing() {
    let h = start(Config::default()).await;
    let a = h.get("/v1/payment_intents/pi_nope").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.error()["code"], "resource_missing");
    let b = h.get("/v1/customers").await;
    assert_eq!(b.status, 404);
    assert_eq!(b.error()["type"], "invalid_request_error");
}

#[tokio::test]
async fn search_by_metadata() {
    let h = start(Config::default()).await;
    let first = h.create(&charge("pm_card_visa", "tx_find"), None).await;
    h.create(&charge("pm_card_visa", "tx_other"), None).await;
    for query in [
        "metadata['transaction_id']:'tx_find'",
        "metadata[\"transaction_id\"]:\"tx_find\"",
    ] {
        let resp = h
            .http
            .get(h.url("/v1/payment_intents/search"))
            .bearer_auth(KEY)
            .query(&[("query", query)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "search_result");
        assert_eq!(body["has_more"], false);
        assert_eq!(body["url"], "/v1/payment_intents/search");
        assert!(body["next_page"].is_null());
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{query}");
        assert_eq!(data[0]["id"], first.json["id"]);
    }
    let none = h
        .get("/v1/payment_intents/search?query=metadata%5B%27transaction_id%27%5D%3A%27nope%27")
        .await;
    assert_eq!(none.json["data"].as_array().unwrap().len(), 0);
    let bad = h.get("/v1/payment_intents/search?query=foo").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error()["param"], "query");
}

#[tokio::test]
async fn reset_clears_everything() {
    let h = start(Config::default()).await;
    h.create(&charge("pm_card_visa", "tx_reset"), Some("key-reset"))
        .await;
    let resp = h.http.post(h.url("/sim/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.sim().ledger(), stripe_sim::Ledger::default());
    assert_eq!(h.sim().stats().requests, 0);
    // The key is forgotten too: the same key executes again.
    let again = h
        .create(&charge("pm_card_visa", "tx_reset"), Some("key-reset"))
        .await;
    assert!(again.header("idempotent-replayed").is_none());
    assert_eq!(h.sim().ledger().charges.len(), 1);
}

#[tokio::test]
async fn shutdown_stops_serving_even_with_idle_keep_alive_connections() {
    let h = start(Config::default()).await;
    // Two requests on one pooled client: keep-alive works and leaves an idle connection.
    h.create(&charge("pm_card_visa", "tx_ka1"), None).await;
    h.create(&charge("pm_card_visa", "tx_ka2"), None).await;
    let url = h.url("/sim/stats");
    let done = tokio::time::timeout(std::time::Duration::from_secs(2), h.running.shutdown()).await;
    assert!(
        done.is_ok(),
        "shutdown should not wait for idle connections"
    );
    let fresh = reqwest::Client::new();
    assert!(
        fresh.get(&url).send().await.is_err(),
        "nothing listens after shutdown"
    );
}
