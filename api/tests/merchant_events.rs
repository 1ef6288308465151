//! The merchant's side: the event log written with every change, the merchant's own data on a
//! payment, the history, and signed webhooks delivered at least once to the merchant's app.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{MERCHANT_KEY, TestApp};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use shared::settings::Settings;
use shared::state_machine::change::{Transition, change};
use shared::testing::receiver::{Receiver, types_for};

const HOOK_SECRET: &str = "whsec_merchant_test_0123456789";
const WAIT: Duration = Duration::from_secs(20);

fn deliver_to(s: &mut Settings, receiver: &Receiver) {
    let w = &mut s.merchant_webhooks;
    w.urls = vec![receiver.url.clone()];
    w.secret = Some(shared::secret::Secret::new(HOOK_SECRET));
    w.retry_base = Duration::from_millis(50);
    w.retry_max = Duration::from_millis(200);
    w.poll_interval = Duration::from_millis(20);
    w.timeout = Duration::from_secs(2);
}

async fn app_delivering_to(receiver: &Receiver, worker: bool) -> TestApp {
    let r = receiver.clone();
    TestApp::spawn_configured(worker, move |s| deliver_to(s, &r)).await
}

fn merchant() -> String {
    format!("Bearer {MERCHANT_KEY}")
}

async fn merchant_pay(app: &TestApp, body: Value, key: &str) -> (u16, Value) {
    let auth = merchant();
    let (status, v, _) = app
        .post(&body, &[("authorization", &auth), ("idempotency-key", key)])
        .await;
    (status, v)
}

fn order(reference: &str) -> Value {
    json!({"amount": 4200, "currency": "usd", "email": "buyer@example.com",
           "payment_method": "pm_card_visa", "reference": reference,
           "metadata": {"order_id": reference, "plan": "pro"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_tells_the_merchant_every_change_in_signed_webhooks() {
    let receiver = Receiver::start().await;
    let app = app_delivering_to(&receiver, true).await;
    let (status, created) = merchant_pay(&app, order("order-1001"), "k1").await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["reference"], "order-1001");
    assert_eq!(created["metadata"]["plan"], "pro");
    let id = created["id"].as_str().unwrap().to_owned();

    let mut delivered = receiver
        .wait_until(WAIT, |d| {
            types_for(d, &id).contains(&"payment.complete".to_owned())
        })
        .await;
    // Events are delivered each on its own, so they may arrive in any order (docs/webhooks.md);
    // `sequence` is their order.
    delivered.sort_by_key(|e| e["sequence"].as_i64());
    assert_eq!(
        types_for(&delivered, &id),
        ["payment.pending", "payment.processing", "payment.complete"]
    );

    // Every delivery verifies with the secret, as a Stripe webhook does with Stripe's code.
    for r in receiver.received() {
        let header = r.signature.as_deref();
        let now = chrono::Utc::now().timestamp();
        shared::signature::verify(
            header,
            &r.body,
            HOOK_SECRET.as_bytes(),
            Duration::from_secs(300),
            now,
        )
        .unwrap_or_else(|e| panic!("{e}: {header:?}"));
        assert!(
            shared::signature::verify(
                header,
                &r.body,
                b"whsec_other_secret",
                Duration::from_secs(300),
                now
            )
            .is_err()
        );
    }

    // The last event carries the payment as the merchant-keyed GET shows it.
    let (status, shown) = app.get_as_merchant(&format!("/transactions/{id}")).await;
    assert_eq!(status, 200);
    let last = delivered
        .iter()
        .rfind(|e| e["data"]["transaction"]["id"] == id.as_str())
        .unwrap();
    assert_eq!(last["data"]["transaction"], shown);
    assert_eq!(last["data"]["previous_state"], "processing");
    assert!(last["id"].as_str().unwrap().starts_with("evt_"));
    // One sequence number per event, never shared.
    let sequences: Vec<i64> = delivered
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    // The merchant view's documentation and its SQL definition agree, field for field.
    serde_json::from_value::<api::views::MerchantTransactionView>(shown.clone()).unwrap();

    // The history: the same events, with what caused each.
    let (status, history) = app
        .get_as_merchant(&format!("/transactions/{id}/history"))
        .await;
    assert_eq!(status, 200);
    let causes: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes[0], "api");
    assert!(
        causes[1..].iter().all(|c| c.starts_with("worker ")),
        "{causes:?}"
    );

    // The public view keeps to what the checkout page needs.
    let (status, public) = app.get(&format!("/transactions/{id}")).await;
    assert_eq!(status, 200);
    for hidden in ["email", "reference", "metadata"] {
        assert!(
            public.get(hidden).is_none(),
            "{hidden} in the public view: {public}"
        );
    }

    // Stripe got the merchant's data as the intent's metadata, beside our id.
    let stripe_id = shown["stripe_id"].as_str().unwrap();
    let intent = app.stripe_intent(stripe_id).await;
    assert_eq!(intent["metadata"]["reference"], "order-1001");
    assert_eq!(intent["metadata"]["plan"], "pro");
    assert_eq!(intent["metadata"]["transaction_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_is_down_gets_every_event_once_it_is_back() {
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    let app = app_delivering_to(&receiver, true).await;
    let (_, a) = merchant_pay(&app, order("order-a"), "ka").await;
    let (_, b) = merchant_pay(&app, order("order-b"), "kb").await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    app.wait_for_state(&a, &["complete"], WAIT).await;
    app.wait_for_state(&b, &["complete"], WAIT).await;
    // Refused (503) several times each, retried with backoff...
    let deadline = std::time::Instant::now() + WAIT;
    while receiver.received().len() < 12 {
        assert!(
            std::time::Instant::now() < deadline,
            "too few attempts: {:?}",
            receiver.received().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(receiver.delivered().is_empty());
    // ...and all delivered once it is back.
    receiver.set_down(false);
    let delivered = receiver
        .wait_until(WAIT, |d| {
            types_for(d, &a).len() == 3 && types_for(d, &b).len() == 3
        })
        .await;
    assert_eq!(delivered.len(), 6, "each event delivered once it succeeded");
    // Every attempt is recorded, with what came back.
    let mut conn = app.db().await;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        refused: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        accepted: i64,
    }
    let row: Row = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE status = 503) AS refused,
                count(*) FILTER (WHERE status = 200) AS accepted FROM webhook_attempts",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert!(row.refused >= 6, "{}", row.refused);
    assert_eq!(row.accepted, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_committed_late_is_still_delivered() {
    let receiver = Receiver::start().await;
    let app = app_delivering_to(&receiver, true).await;
    let (_, first) = merchant_pay(&app, order("order-late"), "k-late").await;
    let first = first["id"].as_str().unwrap().to_owned();
    app.wait_for_state(&first, &["complete"], WAIT).await;
    // An event whose id is taken now but whose transaction commits later...
    let mut held = app.db().await;
    use diesel_async::AnsiTransactionManager;
    use diesel_async::TransactionManager;
    AnsiTransactionManager::begin_transaction(&mut held)
        .await
        .unwrap();
    let id = first.parse().unwrap();
    shared::events::record_without_change(&mut held, id, "payment.discrepancy", "test")
        .await
        .unwrap();
    // ...while later events commit and are delivered.
    let (_, second) = merchant_pay(&app, order("order-later"), "k-later").await;
    let second = second["id"].as_str().unwrap().to_owned();
    receiver
        .wait_until(WAIT, |d| {
            types_for(d, &second).contains(&"payment.complete".to_owned())
        })
        .await;
    assert!(!types_for(&receiver.delivered(), &first).contains(&"payment.discrepancy".to_owned()));
    AnsiTransactionManager::commit_transaction(&mut held)
        .await
        .unwrap();
    let delivered = receiver
        .wait_until(WAIT, |d| {
            types_for(d, &first).contains(&"payment.discrepancy".to_owned())
        })
        .await;
    let late = delivered
        .iter()
        .find(|e| e["type"] == "payment.discrepancy")
        .unwrap();
    let later = delivered
        .iter()
        .rfind(|e| e["data"]["transaction"]["id"] == second.as_str())
        .unwrap();
    assert!(
        late["sequence"].as_i64() < later["sequence"].as_i64(),
        "the late event has the older id"
    );
}

async fn events_of(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> Vec<String> {
    shared::events::history(conn, id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_and_its_event_commit_together_or_not_at_all() {
    let app = TestApp::spawn_with(common::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = app.db().await;
    assert_eq!(events_of(&mut conn, id).await, ["payment.pending"]);
    let claim = Transition::Claim {
        owner: "w1",
        lease: Duration::from_secs(30),
    };

    // Rolled back: neither the claim nor its event is left.
    let rolled_back: Result<(), diesel::result::Error> = conn
        .transaction(async |c| {
            let changed = change(c, id, claim).await?.unwrap();
            assert!(changed.applied);
            assert_eq!(
                events_of(c, id).await,
                ["payment.pending", "payment.processing"]
            );
            Err(diesel::result::Error::RollbackTransaction)
        })
        .await;
    assert!(rolled_back.is_err());
    assert_eq!(events_of(&mut conn, id).await, ["payment.pending"]);
    assert_eq!(
        shared::transactions::find(&mut conn, id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "pending"
    );

    // An event that cannot be written fails its change too: one statement.
    diesel::sql_query(
        "ALTER TABLE payment_events ADD CONSTRAINT no_processing CHECK (new_state <> 'processing') NOT VALID",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert!(change(&mut conn, id, claim).await.is_err());
    assert_eq!(
        shared::transactions::find(&mut conn, id)
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str(),
        "pending"
    );
    assert_eq!(events_of(&mut conn, id).await, ["payment.pending"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refund_reported_by_stripe_reaches_the_merchant() {
    let receiver = Receiver::start().await;
    let app = app_delivering_to(&receiver, true).await;
    app.enable_webhooks();
    let (_, created) = merchant_pay(&app, order("order-refund"), "k-refund").await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.wait_for_state(&id, &["complete"], WAIT).await;
    let charge = app
        .sim
        .sim
        .ledger()
        .charges
        .into_iter()
        .find(|c| c.transaction_id.as_deref() == Some(id.as_str()))
        .unwrap();
    app.sim.sim.refund_charge(&charge.id).unwrap();
    let delivered = receiver
        .wait_until(WAIT, |d| {
            types_for(d, &id).contains(&"payment.refunded".to_owned())
        })
        .await;
    let refund = delivered
        .iter()
        .find(|e| e["type"] == "payment.refunded")
        .unwrap();
    assert_eq!(refund["data"]["transaction"]["state"], "complete");
    assert!(refund["data"]["transaction"]["refunded_at"].is_string());
    let (_, history) = app
        .get_as_merchant(&format!("/transactions/{id}/history"))
        .await;
    let last = history["data"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["cause"].as_str().unwrap().starts_with("webhook evt_"),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_merchant_data_is_refused_naming_the_field_and_changes_nothing() {
    let app = TestApp::spawn_with(common::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let base = order("order-1");
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (body, field) in [
        (with(json!({"reference": ""})), "reference"),
        (with(json!({"reference": "r".repeat(256)})), "reference"),
        (
            with(json!({"metadata": {"transaction_id": "x"}})),
            "metadata",
        ),
        (with(json!({"metadata": {"a[b]": "x"}})), "metadata"),
        (with(json!({"metadata": {"n": 1}})), "metadata"),
        (with(json!({"metadata": {"k".repeat(41): "x"}})), "metadata"),
        (
            with(json!({"metadata": {"v": "x".repeat(501)}})),
            "metadata",
        ),
        (
            with(
                json!({"metadata": (0..49).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            ),
            "metadata",
        ),
    ] {
        let (status, err) =
            merchant_pay(&app, body.clone(), &uuid::Uuid::new_v4().to_string()).await;
        assert_eq!(status, 422, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    let (status, err) = merchant_pay(&app, with(json!({"metadata": "not an object"})), "k-x").await;
    assert_eq!(status, 400, "{err}");
    // A browser may not name an order: a forged reference could have the merchant ship it.
    let public = json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa",
                        "reference": "order-1"});
    assert_eq!(app.post(&public, &[]).await.0, 401);
    assert_eq!(app.count_rows().await, 0);

    // The Idempotency-Key covers them: the same key with other metadata is a conflict.
    assert_eq!(merchant_pay(&app, base.clone(), "same-key").await.0, 202);
    assert_eq!(merchant_pay(&app, base.clone(), "same-key").await.0, 202);
    let other = with(json!({"metadata": {"order_id": "order-1", "plan": "basic"}}));
    assert_eq!(merchant_pay(&app, other, "same-key").await.0, 409);
    assert_eq!(app.count_rows().await, 1);

    // The history wants the merchant key, and an id that exists.
    let id = uuid::Uuid::new_v4();
    assert_eq!(app.get(&format!("/transactions/{id}/history")).await.0, 401);
    assert_eq!(
        app.get_as_merchant(&format!("/transactions/{id}/history"))
            .await
            .0,
        404
    );
    assert_eq!(
        app.get_as_merchant("/transactions/not-a-uuid/history")
            .await
            .0,
        404
    );
}
