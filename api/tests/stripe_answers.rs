//! Answers from Stripe that say nothing about whether the card was charged must never end a
//! payment `failed`: a search that lags behind a known intent, a refused key, a known intent
//! Stripe does not find. Real api, worker, Postgres, Redis; stripe-sim stands in for Stripe.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestApp};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use shared::schema::transactions::dsl;
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(20);

/// A payment the api accepted (its job is queued).
async fn accepted_payment(app: &TestApp) -> Uuid {
    let created = app.pay("basic", "pm_card_visa").await;
    created["id"].as_str().unwrap().parse().unwrap()
}

/// Makes the row look like a worker already sent it to Stripe: `processing`, the intent's id
/// recorded and `attempts` spent.
async fn mark_sent(app: &TestApp, id: Uuid, stripe_id: &str, attempts: i32) {
    let mut conn = app.db().await;
    diesel::update(dsl::transactions.find(id))
        .set((
            dsl::state.eq("processing"),
            dsl::stripe_id.eq(stripe_id),
            dsl::attempts.eq(attempts),
        ))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn state_of(app: &TestApp, id: Uuid) -> String {
    let mut conn = app.db().await;
    dsl::transactions
        .find(id)
        .select(dsl::state)
        .first(&mut conn)
        .await
        .unwrap()
}

/// Waits until stripe-sim has seen `n` requests by `count`, returning the payment's state then
/// (or earlier, if it ended).
async fn after_requests(
    app: &TestApp,
    id: Uuid,
    n: u64,
    count: fn(&stripe_sim::Stats) -> u64,
) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let state = state_of(app, id).await;
        let seen = count(&app.sim.sim.stats());
        if seen >= n || state == "failed" || state == "complete" {
            return state;
        }
        assert!(Instant::now() < deadline, "only {seen} requests");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn worker_metrics(app: &TestApp) -> String {
    let addr = app.settings.worker.metrics_addr.unwrap();
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Stripe's search may not show an intent for a minute; the worker knows the intent's id and
/// must retrieve it (a consistent read) rather than conclude from an empty search that the card
/// was not charged.
#[tokio::test(flavor = "multi_thread")]
async fn a_known_intent_is_retrieved_not_searched_when_attempts_run_out() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| s.worker.retry.max_attempts = 2,
    })
    .await;
    app.sim.sim.set_faults(stripe_sim::Faults {
        search_lag_ms: 600_000,
        ..Default::default()
    });
    let id = accepted_payment(&app).await;
    let pi = app.charge_at_sim(id, 1000, "pm_card_visa").await;
    let pi = pi["id"].as_str().unwrap().to_owned();
    // Attempts spent: the next claim resolves instead of creating.
    mark_sent(&app, id, &pi, 2).await;
    // The api already pushed the job; the worker starts now.
    app.start_worker();

    let done = app
        .wait_for_state(&id.to_string(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(done["stripe_id"], pi.as_str());
    let calls = app.sim.sim.stats().calls;
    assert_eq!(calls.search, 0, "searched although the id was known");
    assert!(calls.retrieve >= 1);
}

/// A rolled or test/live-mixed key (401, `Stripe-Should-Retry: false`) is our configuration,
/// not the customer's card: the payment keeps waiting, the alarm is raised.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_never_fails_a_payment_and_raises_the_alarm() {
    let app = TestApp::spawn_with(Options {
        worker: true,
        tweak: |s| {
            s.stripe.secret_key =
                Some(shared::secret::Secret::new("sk_live_rolled_key_0123456789"));
            s.worker.retry.max_attempts = 2;
        },
    })
    .await;
    let id: Uuid = app.pay("basic", "pm_card_visa").await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // Twice its attempts' worth of refused requests (every one before the key check, so none
    // ran): still not failed, the attempts given back.
    let state = after_requests(&app, id, 4, |s| s.requests).await;
    assert_eq!(state, "processing");
    let metrics = worker_metrics(&app).await;
    assert!(
        metrics.contains(r#"payments_stripe_alarms_total{reason="authentication"}"#),
        "{metrics}"
    );
    assert_eq!(app.intents_for(&id.to_string()), 0);
}

/// A 404 for an intent we created ourselves means the wrong account or mode, never "not
/// charged".
#[tokio::test(flavor = "multi_thread")]
async fn a_known_intent_stripe_cannot_find_never_fails_the_payment() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| s.worker.retry.max_attempts = 2,
    })
    .await;
    let id = accepted_payment(&app).await;
    mark_sent(&app, id, "pi_not_in_this_account_0000000", 0).await;
    let mut app = app;
    app.start_worker();
    let state = after_requests(&app, id, 4, |s| s.calls.retrieve).await;
    assert_eq!(state, "processing");
    let metrics = worker_metrics(&app).await;
    assert!(
        metrics.contains(r#"payments_stripe_alarms_total{reason="intent_missing"}"#),
        "{metrics}"
    );
}
