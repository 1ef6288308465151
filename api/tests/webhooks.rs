//! Stripe webhooks: the second path to the truth. A payment whose job was lost ends as Stripe
//! decided through its webhook; a forged, stale or replayed delivery changes nothing; events
//! arriving twice or out of order never move a payment back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Options, TestApp};
use serde_json::{Value, json};
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(20);

async fn app_without_worker() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await
}

/// A Stripe-shaped event about a PaymentIntent of `txn`.
fn intent_event(event_id: &str, event_type: &str, txn: Uuid, pi: Value) -> String {
    let mut object = json!({
        "id": "pi_test_1", "object": "payment_intent", "amount": 700, "currency": "usd",
        "status": "succeeded", "client_secret": "pi_test_1_secret_x",
        "metadata": {"transaction_id": txn.to_string()},
    });
    for (k, v) in pi.as_object().unwrap() {
        object[k] = v.clone();
    }
    json!({
        "id": event_id, "object": "event", "type": event_type, "created": 1_700_000_000,
        "livemode": false, "api_version": "2025-03-31.basil", "data": {"object": object},
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_whose_job_was_lost_completes_through_its_webhook() {
    let app = app_without_worker().await;
    app.enable_webhooks();
    // No job, no worker: only Stripe's webhook can tell the api what happened.
    let id = app.insert_without_job(700, "pm_card_visa").await;
    let pi = app.charge_at_sim(id, 700, "pm_card_visa").await;
    assert_eq!(pi["status"], "succeeded", "{pi}");

    let t = app
        .wait_for_state(&id.to_string(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "complete", "{t}");
    assert_eq!(t["stripe_id"], pi["id"]);
    assert_eq!(app.charges_for(&id.to_string()), 1);
    let deliveries = app.wait_for_deliveries(1, WITHIN).await;
    assert_eq!(deliveries[0].event_type, "payment_intent.succeeded");
    assert_eq!(deliveries[0].attempts[0].status, Some(200));
    assert_eq!(app.stripe_events().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declined_payment_fails_through_its_webhook_with_the_customers_message() {
    let app = app_without_worker().await;
    app.enable_webhooks();
    let id = app.insert_without_job(700, "pm_card_visa").await;
    app.charge_at_sim(id, 700, "pm_card_visa_chargeDeclinedInsufficientFunds")
        .await;
    let t = app
        .wait_for_state(&id.to_string(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(
        t["error"],
        json!({"code": "card_declined", "decline_code": "insufficient_funds",
               "message": "Your card has insufficient funds."})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_d_secure_is_followed_through_webhooks() {
    let app = app_without_worker().await;
    app.enable_webhooks();
    let id = app.insert_without_job(700, "pm_card_visa").await;
    let pi = app
        .charge_at_sim(id, 700, "pm_card_threeDSecure2Required")
        .await;
    let t = app
        .wait_for_state(&id.to_string(), &["requires_action"], WITHIN)
        .await;
    assert_eq!(t["client_secret"], pi["client_secret"]);

    app.sim
        .sim
        .complete_challenge(pi["id"].as_str().unwrap(), true)
        .unwrap();
    let t = app
        .wait_for_state(&id.to_string(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "complete", "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_or_stale_delivery_changes_nothing() {
    let app = app_without_worker().await;
    let id = app.insert_without_job(700, "pm_card_visa").await;
    let body = intent_event("evt_forged", "payment_intent.succeeded", id, json!({}));
    let now = chrono::Utc::now().timestamp();
    let tampered = body.replace("700", "701");
    let wrong_secret = shared::signature::sign(b"whsec_guessed", now, body.as_bytes());
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("no signature", body.clone(), None),
        ("garbage", body.clone(), Some("nonsense".into())),
        ("wrong secret", body.clone(), Some(wrong_secret)),
        ("body changed", tampered, Some(TestApp::sign_webhook(&body))),
        (
            "replayed after 10 min",
            body.clone(),
            Some(TestApp::sign_webhook_at(&body, now - 600)),
        ),
        (
            "from the future",
            body.clone(),
            Some(TestApp::sign_webhook_at(&body, now + 600)),
        ),
    ];
    for (case, body, signature) in cases {
        let (status, answer) = app.post_webhook(&body, signature.as_deref()).await;
        assert_eq!(status, 400, "{case}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_signature", "{case}");
    }
    // Too big to be an event of Stripe's: refused before a byte of it is hashed.
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70 * 1024));
    let (status, answer) = app
        .post_webhook(&huge, Some(&TestApp::sign_webhook(&huge)))
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");

    let row = app.row(id).await;
    assert_eq!(row.state, "pending");
    assert_eq!(row.stripe_id, None);
    assert_eq!(app.stripe_events().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_event_is_acknowledged_as_a_duplicate_and_changes_nothing() {
    let app = app_without_worker().await;
    let id = app.insert_without_job(700, "pm_card_visa").await;
    let body = intent_event("evt_once", "payment_intent.succeeded", id, json!({}));
    let signature = TestApp::sign_webhook(&body);
    let (status, answer) = app.post_webhook(&body, Some(&signature)).await;
    assert_eq!((status, answer), (200, json!({"received": true})));
    let first = app.row(id).await;
    assert_eq!(first.state, "complete");

    // The same delivery again, byte for byte (within the tolerance), and re-signed.
    for sig in [signature.clone(), TestApp::sign_webhook(&body)] {
        let (status, answer) = app.post_webhook(&body, Some(&sig)).await;
        assert_eq!(
            (status, answer),
            (200, json!({"received": true, "duplicate": true}))
        );
    }
    assert_eq!(app.row(id).await.updated_at, first.updated_at);
    assert_eq!(app.stripe_events().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_events_never_move_a_final_payment_back() {
    let app = app_without_worker().await;
    let id = app.insert_without_job(700, "pm_card_visa").await;
    let send = |event_id: &'static str, event_type: &'static str, pi: Value| {
        let body = intent_event(event_id, event_type, id, pi);
        let app = &app;
        async move {
            let (status, answer) = app
                .post_webhook(&body, Some(&TestApp::sign_webhook(&body)))
                .await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    send("evt_1", "payment_intent.succeeded", json!({})).await;
    send(
        "evt_2",
        "payment_intent.requires_action",
        json!({"status": "requires_action"}),
    )
    .await;
    send(
        "evt_3",
        "payment_intent.payment_failed",
        json!({"status": "requires_payment_method",
               "last_payment_error": {"type": "card_error", "code": "card_declined",
                                      "message": "Your card was declined."}}),
    )
    .await;
    let row = app.row(id).await;
    assert_eq!(row.state, "complete");
    assert_eq!(row.error_code, None);
    assert_eq!(row.client_secret, None);
    assert_eq!(app.stripe_events().await, 3);

    // And a failed payment stays failed when a late success claim arrives for it.
    let other = app.insert_without_job(700, "pm_card_visa").await;
    let failed = intent_event(
        "evt_4",
        "payment_intent.payment_failed",
        other,
        json!({"id": "pi_test_2", "status": "requires_payment_method"}),
    );
    app.post_webhook(&failed, Some(&TestApp::sign_webhook(&failed)))
        .await;
    let late = intent_event(
        "evt_5",
        "payment_intent.requires_action",
        other,
        json!({"id": "pi_test_2", "status": "requires_action"}),
    );
    app.post_webhook(&late, Some(&TestApp::sign_webhook(&late)))
        .await;
    assert_eq!(app.row(other).await.state, "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_intent_that_is_not_the_payments_own_is_ignored() {
    let app = app_without_worker().await;
    let id = app.insert_without_job(700, "pm_card_visa").await;
    // Signed, but for another amount: acknowledged, not believed.
    let body = intent_event(
        "evt_amount",
        "payment_intent.succeeded",
        id,
        json!({"amount": 1}),
    );
    let (status, _) = app
        .post_webhook(&body, Some(&TestApp::sign_webhook(&body)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.row(id).await.state, "pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_for_unknown_payments_and_of_unknown_types_are_acknowledged() {
    let app = app_without_worker().await;
    let body = intent_event(
        "evt_stranger",
        "payment_intent.succeeded",
        Uuid::new_v4(),
        json!({}),
    );
    let (status, answer) = app
        .post_webhook(&body, Some(&TestApp::sign_webhook(&body)))
        .await;
    assert_eq!((status, answer), (200, json!({"received": true})));
    let other = json!({"id": "evt_cust", "object": "event", "type": "customer.created",
                       "created": 1, "data": {"object": {"id": "cus_1"}}})
    .to_string();
    let (status, _) = app
        .post_webhook(&other, Some(&TestApp::sign_webhook(&other)))
        .await;
    assert_eq!(status, 200);
    // Signed but not an event at all.
    let (status, answer) = app
        .post_webhook("[1,2,3]", Some(&TestApp::sign_webhook("[1,2,3]")))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(app.count_rows().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refunds_and_disputes_are_recorded_on_the_transaction() {
    let app = TestApp::spawn().await;
    app.enable_webhooks();
    let t = app.pay("basic", "pm_card_visa").await;
    let id = t["id"].as_str().unwrap().to_owned();
    app.wait_for_state(&id, &["complete"], WITHIN).await;
    let charge = app.sim.sim.ledger().charges_for(&id)[0].id.clone();

    // Over the control routes, as a person or a script would.
    for action in ["refund", "dispute"] {
        let res = app
            .client
            .post(format!(
                "{}/sim/charges/{charge}/{action}",
                app.sim.base_url()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let uuid = Uuid::parse_str(&id).unwrap();
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let mut conn = app.db().await;
        let marks = shared::transactions::after_charge_marks(&mut conn, uuid)
            .await
            .unwrap()
            .unwrap();
        if marks.0.is_some() && marks.1.is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{marks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still charged: a refund is recorded, the payment's state is history.
    assert_eq!(app.row(uuid).await.state, "complete");
    let mut conn = app.db().await;
    let types: Vec<String> = shared::stripe_events::for_transaction(&mut conn, uuid)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.type_)
        .collect();
    assert!(types.contains(&"charge.refunded".to_owned()), "{types:?}");
    assert!(
        types.contains(&"charge.dispute.created".to_owned()),
        "{types:?}"
    );
    let unknown = app
        .client
        .post(format!("{}/sim/charges/ch_nope/refund", app.sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_and_webhooks_together_charge_once_and_agree() {
    let app = TestApp::spawn().await;
    app.enable_webhooks();
    let pms = [
        "pm_card_visa",
        "pm_card_visa_chargeDeclined",
        "pm_card_visa",
        "pm_card_chargeDeclinedProcessingError",
    ];
    let mut ids = vec![];
    for pm in pms {
        ids.push(
            app.pay("basic", pm).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for (id, pm) in ids.iter().zip(pms) {
        let t = app
            .wait_for_state(id, &["complete", "failed"], WITHIN)
            .await;
        let expected = if pm == "pm_card_visa" {
            "complete"
        } else {
            "failed"
        };
        assert_eq!(t["state"], expected, "{t}");
        assert_eq!(app.intents_for(id), 1);
    }
    app.wait_for_deliveries(pms.len(), WITHIN).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_secret_every_event_is_refused() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| s.stripe.webhook_secret = None,
    })
    .await;
    let body = intent_event(
        "evt_x",
        "payment_intent.succeeded",
        Uuid::new_v4(),
        json!({}),
    );
    let (status, answer) = app
        .post_webhook(&body, Some(&TestApp::sign_webhook(&body)))
        .await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "webhooks_not_configured");
}
