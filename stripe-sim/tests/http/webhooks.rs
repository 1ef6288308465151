//! Webhook deliveries: one signed event per PaymentIntent change, refund and dispute, sent
//! in the background and retried while the endpoint refuses them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use stripe_sim::{Config, Delivery};

use crate::common::{Harness, charge, start, wait_for};

const SECRET: &str = "whsec_sim_test";

/// A webhook endpoint that records what it receives and answers 500 to the first `refuse`
/// deliveries, after waiting `delay`.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(String, String)>>>,
    calls: Arc<AtomicUsize>,
    refuse: usize,
    delay: Duration,
}

impl Receiver {
    async fn spawn(self) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move {
                    tokio::time::sleep(me.delay).await;
                    let n = me.calls.fetch_add(1, Ordering::SeqCst);
                    let sig = headers["stripe-signature"].to_str().unwrap().to_owned();
                    let body = String::from_utf8(body.to_vec()).unwrap();
                    me.received.lock().unwrap().push((sig, body));
                    if n < me.refuse {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (self, url)
    }
}

async fn with_endpoint(url: &str) -> Harness {
    start(Config {
        webhook_url: Some(url.to_owned()),
        webhook_secret: Some(SECRET.to_owned()),
        ..Config::default()
    })
    .await
}

async fn delivered(h: &Harness, n: usize) -> Vec<Delivery> {
    wait_for("webhook deliveries", Duration::from_secs(10), || async {
        let d = h.sim().webhook_deliveries();
        (d.iter().filter(|d| d.delivered).count() >= n).then_some(d)
    })
    .await
}

#[tokio::test]
async fn every_payment_intent_change_is_announced_signed() {
    let (rx, url) = Receiver::default().spawn().await;
    let h = with_endpoint(&url).await;
    h.create(&charge("pm_card_visa", "tx_ok"), None).await;
    h.create(&charge("pm_card_visa_chargeDeclined", "tx_no"), None)
        .await;
    let pi = h
        .create(&charge("pm_card_threeDSecure2Required", "tx_3ds"), None)
        .await;
    h.sim()
        .complete_challenge(pi.json["id"].as_str().unwrap(), true)
        .unwrap();

    let deliveries = delivered(&h, 4).await;
    let mut types: Vec<&str> = deliveries.iter().map(|d| d.event_type.as_str()).collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "payment_intent.payment_failed",
            "payment_intent.requires_action",
            "payment_intent.succeeded",
            "payment_intent.succeeded"
        ]
    );
    for (sig, body) in rx.received.lock().unwrap().iter() {
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            sig,
            &stripe_sim::signature_header(SECRET, t, body.as_bytes())
        );
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["object"], "event");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(event["data"]["object"]["object"], "payment_intent");
        assert!(event["data"]["object"]["metadata"]["transaction_id"].is_string());
    }
    let failed = deliveries
        .iter()
        .find(|d| d.event_type == "payment_intent.payment_failed")
        .unwrap();
    let event: Value = serde_json::from_str(&failed.payload).unwrap();
    assert_eq!(
        event["data"]["object"]["last_payment_error"]["decline_code"],
        "generic_decline"
    );
}

#[tokio::test]
async fn a_refused_delivery_is_retried_with_backoff() {
    let (rx, url) = Receiver {
        refuse: 2,
        ..Default::default()
    }
    .spawn()
    .await;
    let h = with_endpoint(&url).await;
    h.create(&charge("pm_card_visa", "tx_retry"), None).await;
    let deliveries = delivered(&h, 1).await;
    let statuses: Vec<Option<u16>> = deliveries[0].attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    assert_eq!(rx.calls.load(Ordering::SeqCst), 3);
    // Also visible over HTTP, for tests in other languages.
    let listed = h.get("/sim/webhooks").await;
    assert_eq!(listed.json["deliveries"][0]["delivered"], true);
    assert_eq!(listed.json["deliveries"][0]["attempts"][2]["status"], 200);
}

#[tokio::test]
async fn a_slow_endpoint_never_delays_the_api_answer() {
    let (_rx, url) = Receiver {
        delay: Duration::from_secs(2),
        ..Default::default()
    }
    .spawn()
    .await;
    let h = with_endpoint(&url).await;
    let started = Instant::now();
    let pi = h.create(&charge("pm_card_visa", "tx_fast"), None).await;
    assert_eq!(pi.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    delivered(&h, 1).await;
}

#[tokio::test]
async fn refunds_and_disputes_emit_charge_events() {
    let (_rx, url) = Receiver::default().spawn().await;
    let h = with_endpoint(&url).await;
    h.create(&charge("pm_card_visa", "tx_ref"), None).await;
    let charge_id = h.sim().ledger().charges[0].id.clone();
    for action in ["refund", "dispute"] {
        let res = h
            .http
            .post(h.url(&format!("/sim/charges/{charge_id}/{action}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let deliveries = delivered(&h, 3).await;
    let by_type = |t: &str| -> Value {
        let d = deliveries.iter().find(|d| d.event_type == t).unwrap();
        serde_json::from_str::<Value>(&d.payload).unwrap()["data"]["object"].clone()
    };
    let refunded = by_type("charge.refunded");
    assert_eq!(refunded["id"], charge_id.as_str());
    assert_eq!(refunded["refunded"], true);
    assert_eq!(refunded["metadata"]["transaction_id"], "tx_ref");
    let dispute = by_type("charge.dispute.created");
    assert_eq!(dispute["charge"], charge_id.as_str());
    assert!(
        dispute["payment_intent"]
            .as_str()
            .unwrap()
            .starts_with("pi_")
    );

    let missing = h
        .http
        .post(h.url("/sim/charges/ch_missing/refund"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_sent() {
    let h = start(Config::default()).await;
    h.create(&charge("pm_card_visa", "tx_quiet"), None).await;
    assert!(h.sim().webhook_deliveries().is_empty());
}
