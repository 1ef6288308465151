//! The charge pipeline end to end: real api over HTTP → real Redis queue → real worker →
//! stripe-sim → real Postgres, one isolated stack per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{MERCHANT_KEY, Options, TestApp};
use serde_json::json;
use shared::queue::ChargeQueue;

const WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn a_successful_card_goes_pending_to_complete_with_one_charge() {
    let app = TestApp::spawn().await;
    let created = app.pay("basic", "pm_card_visa").await;
    assert_eq!(created["state"], "pending");
    assert_eq!(created["amount"], 1000);
    assert_eq!(created["currency"], "usd");
    assert!(created["error"].is_null());
    assert!(created.get("client_secret").is_none());

    let id = created["id"].as_str().unwrap();
    let done = app
        .wait_for_state(id, &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert!(done["stripe_id"].as_str().unwrap().starts_with("pi_"));
    assert!(done["error"].is_null());
    assert_eq!(app.charges_for(id), 1);
    let ledger = app.sim.sim.ledger();
    let pi = ledger
        .payment_intents
        .iter()
        .find(|p| p.transaction_id.as_deref() == Some(id))
        .unwrap();
    assert_eq!(pi.amount, 1000);
    assert_eq!(
        pi.idempotency_key.as_deref(),
        Some(format!("txn_{id}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_declined_card_fails_with_stripes_codes_and_no_charge() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "pm_card_visa_chargeDeclined",
            "card_declined",
            Some("generic_decline"),
        ),
        (
            "pm_card_visa_chargeDeclinedInsufficientFunds",
            "card_declined",
            Some("insufficient_funds"),
        ),
        (
            "pm_card_chargeDeclinedProcessingError",
            "processing_error",
            None,
        ),
        (
            "tok_chargeDeclined",
            "card_declined",
            Some("generic_decline"),
        ),
    ];
    let mut ids = vec![];
    for (pm, _, _) in &cases {
        ids.push(app.pay("pro", pm).await["id"].as_str().unwrap().to_owned());
    }
    for ((pm, code, decline), id) in cases.iter().zip(&ids) {
        let t = app
            .wait_for_state(id, &["complete", "failed"], WITHIN)
            .await;
        assert_eq!(t["state"], "failed", "{pm}: {t}");
        assert_eq!(t["error"]["code"], *code, "{pm}");
        assert_eq!(t["error"]["decline_code"].as_str(), *decline, "{pm}");
        assert!(!t["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(app.charges_for(id), 0, "{pm} was charged");
        // A decline is final: exactly one attempt reached Stripe.
        assert_eq!(app.intents_for(id), 1, "{pm}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_d_secure_stops_at_requires_action_with_a_client_secret() {
    let app = TestApp::spawn().await;
    let id = app.pay("basic", "pm_card_threeDSecure2Required").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = app
        .wait_for_state(&id, &["requires_action", "complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "requires_action", "{t}");
    assert!(t["client_secret"].as_str().unwrap().contains("_secret_"));
    assert_eq!(app.charges_for(&id), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_stripe_error_is_retried_with_the_same_key_until_it_succeeds() {
    let app = TestApp::spawn().await;
    app.sim.sim.set_faults(stripe_sim::Faults {
        error_500_before: 1.0,
        ..Default::default()
    });
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Wait until the worker has hit the fault at least twice, then let Stripe recover.
    let deadline = std::time::Instant::now() + WITHIN;
    while app.sim.sim.stats().faults.error_500_before < 2 {
        assert!(std::time::Instant::now() < deadline, "worker never retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = app
        .wait_for_state(&id, &["pending", "processing"], WITHIN)
        .await;
    assert!(
        t["error"].is_null(),
        "a transient error must not fail the payment: {t}"
    );
    app.sim.sim.set_faults(stripe_sim::Faults::default());

    let t = app
        .wait_for_state(&id, &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "complete", "{t}");
    assert_eq!(app.charges_for(&id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_delivered_many_times_charges_once() {
    // No worker yet: the duplicates pile up in Redis first, then race each other.
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.sim.sim.set_faults(stripe_sim::Faults {
        latency_ms: 300,
        ..Default::default()
    });
    let id = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let conn = shared::queue::redis_connection(&app.settings.redis_url, None).unwrap();
    let queue = ChargeQueue::new(conn, &app.settings.queue_namespace);
    let uuid = id.parse().unwrap();
    for _ in 0..5 {
        queue.enqueue(uuid, None).await.unwrap();
    }
    app.start_worker();
    app.start_worker();

    let t = app
        .wait_for_state(&id, &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "complete");
    assert_eq!(app.charges_for(&id), 1);
    assert_eq!(app.intents_for(&id), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merchant_sets_the_amount_with_its_key() {
    let app = TestApp::spawn().await;
    let auth = format!("Bearer {MERCHANT_KEY}");
    let body = json!({"amount": 4321, "currency": "gbp", "email": "m@example.com", "payment_method": "pm_card_visa"});
    let (status, t, _) = app.post(&body, &[("authorization", &auth)]).await;
    assert_eq!(status, 202, "{t}");
    assert_eq!(t["amount"], 4321);
    let done = app
        .wait_for_state(t["id"].as_str().unwrap(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(done["state"], "complete");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_and_body_returns_the_first_transaction() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let body =
        json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"});
    let (s1, first, h1) = app.post(&body, &[("idempotency-key", "order-42")]).await;
    let (s2, second, h2) = app.post(&body, &[("idempotency-key", "order-42")]).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], second["id"]);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.count_rows().await, 1);
    assert_eq!(
        app.jobs_pushed().await,
        1,
        "a replay must not enqueue a second job"
    );

    // Same key, different body: refused, nothing written.
    let other = json!({"price": "pro", "email": "a@example.com", "payment_method": "pm_card_visa"});
    let (s3, err, _) = app.post(&other, &[("idempotency-key", "order-42")]).await;
    assert_eq!(s3, 409, "{err}");
    assert_eq!(err["error"]["code"], "idempotency_key_reused");
    assert_eq!(app.count_rows().await, 1);
    assert_eq!(app.jobs_pushed().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_key_make_one_transaction() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let body =
        json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"});
    let posts = (0..8).map(|_| app.post(&body, &[("idempotency-key", "double-click")]));
    let results = futures::future::join_all(posts).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(s, b, _)| {
            assert_eq!(*s, 202);
            b["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.count_rows().await, 1);
    assert_eq!(app.jobs_pushed().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payment_whose_job_was_lost_is_swept_back_into_the_queue() {
    let app = TestApp::spawn().await;
    // Insert a row the way the api does, but never enqueue: as if the push had failed.
    let id = uuid::Uuid::new_v4();
    let mut conn = app.db().await;
    let new = shared::models::NewTransaction {
        id,
        amount: 700,
        currency: "usd".into(),
        email: "lost@example.com".into(),
        price: None,
        payment_method: "pm_card_visa".into(),
        stripe_idempotency_key: shared::models::NewTransaction::stripe_key_for(id),
        request_key: None,
        request_fingerprint: None,
        reference: None,
        metadata: serde_json::json!({}),
        session_id: None,
    };
    shared::transactions::insert(&mut conn, &new).await.unwrap();
    let t = app
        .wait_for_state(&id.to_string(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(t["state"], "complete");
    assert_eq!(app.charges_for(&id.to_string()), 1);
}

/// A client that sends its request and closes the connection at once (a browser tab closed, a
/// load generator stopping): hyper drops the handler, but the payment's insert and push must
/// finish anyway, so it is charged now, not when the sweeper finds it `SWEEP_AFTER_MS` later.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_after_sending_is_charged_at_once() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn_with(Options {
        worker: true,
        tweak: |s| s.worker.sweep_after = Duration::from_secs(120),
    })
    .await;
    let email = "gone@example.com";
    let body =
        json!({"price": "basic", "email": email, "payment_method": "pm_card_visa"}).to_string();
    let request = format!(
        "POST /transactions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let addr = app.base.trim_start_matches("http://");
    let sent = std::time::Instant::now();
    for _ in 0..5 {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        drop(socket); // closed without reading the answer
    }
    let deadline = sent + Duration::from_secs(3);
    loop {
        let states = app.states_for_email(email).await;
        if states.len() == 5 && states.iter().all(|s| s == "complete") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "5 requests sent and closed; 3 s later the rows were {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request cut by the deadline after its insert was sent does not answer as if nothing was
/// stored: `503 outcome_unknown`; the payment is recorded and charged anyway, and resending it
/// with the same Idempotency-Key returns it.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_cut_by_the_deadline_after_its_insert_says_the_outcome_is_unknown() {
    use diesel_async::SimpleAsyncConnection;
    let app = TestApp::spawn_with(Options {
        worker: true,
        tweak: |s| s.http.request_timeout = Duration::from_millis(700),
    })
    .await;
    // Hold the insert up: the api's INSERT waits for this lock.
    let mut blocker = app.db().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE transactions IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let body =
        json!({"price": "basic", "email": "slow@example.com", "payment_method": "pm_card_visa"});
    let key = [("idempotency-key", "order-slow-1")];
    let (status, answer, _) = app.post(&body, &key).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "outcome_unknown", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{answer}"
    );
    blocker.batch_execute("COMMIT").await.unwrap();

    // The insert went through after all, and its job with it.
    let deadline = std::time::Instant::now() + WITHIN;
    while app.states_for_email("slow@example.com").await != ["complete"] {
        assert!(std::time::Instant::now() < deadline, "never charged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, replay, headers) = app.post(&body, &key).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay["state"], "complete");
    assert_eq!(app.count_rows().await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    assert_eq!(app.get("/healthz").await.0, 200);
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"postgres": "ok", "redis": "ok"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_fails_and_payments_are_refused_when_postgres_is_unreachable() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| s.database_url = "postgres://postgres@127.0.0.1:1/nothing".into(),
    })
    .await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["postgres"], "unavailable");
    let (status, err, headers) = app
        .post(
            &json!({"price": "basic", "email": "a@example.com", "payment_method": "pm_card_visa"}),
            &[],
        )
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "service_unavailable");
    assert!(headers.get("retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_refuses_a_schema_that_is_behind() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    // A database with no migrations applied.
    let mut conn = app.db().await;
    use diesel_async::RunQueryDsl;
    diesel::sql_query("DROP TABLE transactions CASCADE")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("DELETE FROM __diesel_schema_migrations")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = worker::startup::ensure_schema_current(&app.settings.database_url)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pending migration"), "{err}");
}

/// A worker never has more requests open toward Stripe than `STRIPE_MAX_CONCURRENT_REQUESTS`,
/// however many charges it runs at once: the calls beyond it wait their turn, and every payment
/// still completes. (Each open request is a connection, and each connection memory.)
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_keeps_its_open_stripe_requests_under_the_bound() {
    let app = TestApp::spawn_with(Options {
        tweak: |s| {
            s.worker.concurrency = 20;
            s.stripe.max_concurrent_requests = 2;
        },
        ..Default::default()
    })
    .await;
    app.sim.sim.set_faults(stripe_sim::Faults {
        latency_ms: 100,
        ..Default::default()
    });
    let before = app.sim.sim.stats().connections;
    let ids = app.pay_many(12).await;
    for id in &ids {
        let t = app
            .wait_for_state(id, &["complete", "failed"], WITHIN)
            .await;
        assert_eq!(t["state"], "complete", "{t}");
        assert_eq!(app.charges_for(id), 1);
    }
    // With 20 charges at once and 100 ms per call, an unbounded worker opens one connection per
    // call in flight (12 here); bounded, at most 2 are ever open, and kept alive they are reused.
    let opened = app.sim.sim.stats().connections - before;
    assert!(
        opened <= 2,
        "the worker opened {opened} connections to Stripe"
    );
}
