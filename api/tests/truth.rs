//! The truth when Stripe is slow, inconsistent or contradicts us: a payment ends as Stripe
//! decided, never "not charged" from an eventually consistent read; Stripe's `succeeded`
//! always wins; a failed payment's intent is canceled; abandoned 3-D Secure ends; the
//! reconciler finds what every other path missed. Real api, worker, Postgres and Redis;
//! stripe-sim behaving as Stripe documents (search lag, stored 500s, late confirms).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestApp};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use shared::schema::transactions::dsl;
use stripe_sim::Faults;
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(20);

fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::default();
    f(&mut faults);
    faults
}

async fn paid(app: &TestApp, pm: &str) -> Uuid {
    app.pay("basic", pm).await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Polls the row until `ok` holds for it, or panics after `within`.
async fn wait_row(
    app: &TestApp,
    id: Uuid,
    within: Duration,
    what: &str,
    ok: impl Fn(&shared::models::Transaction) -> bool,
) -> shared::models::Transaction {
    let deadline = Instant::now() + within;
    loop {
        let row = app.row(id).await;
        if ok(&row) {
            return row;
        }
        assert!(Instant::now() < deadline, "never {what}: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn discrepancy_kinds(app: &TestApp, id: Uuid) -> Vec<String> {
    use shared::schema::discrepancies::dsl as d;
    let mut conn = app.db().await;
    d::discrepancies
        .filter(d::transaction_id.eq(id))
        .select(d::kind)
        .load(&mut conn)
        .await
        .unwrap()
}

fn intent_status(app: &TestApp, id: Uuid) -> String {
    let ledger = app.sim.sim.ledger();
    let intents = ledger.payment_intents_for(&id.to_string());
    assert_eq!(intents.len(), 1, "{intents:?}");
    intents[0].status.clone()
}

/// The charge executes but its confirm is answered by a stored 500, replayed for every retry,
/// and search lags ten minutes: the payment must end `complete` through a retrieve by id,
/// never `failed`, and resolving it spends no charge attempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_charge_answered_by_a_stored_500_completes_and_never_fails() {
    let app = TestApp::spawn().await;
    app.sim.sim.set_faults(faults(|f| {
        f.search_lag_ms = 600_000;
        f.error_500_after = 1.0;
        f.apply_to = vec!["confirm".into()];
    }));
    let id = paid(&app, "pm_card_visa").await;
    let done = app
        .wait_for_state(&id.to_string(), &["complete", "failed"], WITHIN)
        .await;
    assert_eq!(done["state"], "complete", "{done}");
    assert_eq!(app.charges_for(&id.to_string()), 1);
    let stats = app.sim.sim.stats();
    assert_eq!(stats.calls.search, 0);
    assert_eq!(stats.calls.confirm, 1, "one confirm: the rest are reads");
    let row = app.row(id).await;
    assert_eq!(row.attempts, 1, "resolving spent no charge attempt");
    assert!(row.outcome_unknown_since.is_none());
}

/// While Stripe cannot be read, a payment whose confirm went unanswered stays `processing`
/// with its reason and since when, keeps being read with backoff, spends no attempt, and ends
/// as Stripe decided once it can be read.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_outcome_waits_for_stripe_without_spending_attempts() {
    let app = TestApp::spawn_with(Options {
        worker: true,
        tweak: |s| {
            s.worker.retry.max_attempts = 2;
            // Failing reads open the breaker; keep its pauses short.
            s.stripe.breaker_cooldown = Duration::from_millis(300);
        },
    })
    .await;
    // The confirm executes but is answered 500, and reads fail: nothing can settle it.
    app.sim.sim.set_faults(faults(|f| {
        f.error_500_after = 1.0;
        f.apply_to = vec!["confirm".into()];
        f.read_error_500 = 1.0;
    }));
    let id = paid(&app, "pm_card_visa").await;
    wait_row(&app, id, WITHIN, "unknown", |r| {
        r.outcome_unknown_since.is_some()
    })
    .await;
    let reads = app.sim.sim.stats().calls.retrieve;
    let deadline = Instant::now() + WITHIN;
    while app.sim.sim.stats().calls.retrieve < reads + 4 {
        assert!(Instant::now() < deadline, "not read again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = app.row(id).await;
    assert_eq!(row.state, "processing");
    assert!(row.outcome_unknown_since.is_some());
    assert_eq!(row.attempts, 1, "{row:?}");
    assert!(row.lookups >= 3, "{row:?}");
    let (unknown, _) = {
        let mut conn = app.db().await;
        shared::transactions::outcome_unknown(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(unknown, 1);
    app.sim.sim.set_faults(Faults::default());
    let row = wait_row(&app, id, WITHIN, "complete", |r| r.state == "complete").await;
    assert!(row.outcome_unknown_since.is_none());
    assert_eq!(app.charges_for(&id.to_string()), 1);
}

/// A payment recorded failed (3-D Secure failed) whose intent the customer then confirmed: the
/// signed `payment_intent.succeeded` corrects it to `complete`, recorded as a correction; the
/// customer had already paid again for the same thing, so it is flagged a likely duplicate.
#[tokio::test(flavor = "multi_thread")]
async fn stripes_late_success_corrects_a_failed_payment_and_flags_the_duplicate() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.enable_webhooks();
    let id = paid(&app, "pm_card_threeDSecure2Required").await;
    let pi = app
        .charge_at_sim(id, 1000, "pm_card_threeDSecure2Required")
        .await;
    let pi = pi["id"].as_str().unwrap().to_owned();
    app.sim.sim.complete_challenge(&pi, false).unwrap();
    wait_row(&app, id, WITHIN, "failed", |r| r.state == "failed").await;
    // The customer pays again for the same thing, and that payment completes.
    let again = paid(&app, "pm_card_visa").await;
    let pi2 = app.charge_at_sim(again, 1000, "pm_card_visa").await;
    assert_eq!(pi2["status"], "succeeded");
    wait_row(&app, again, WITHIN, "complete", |r| r.state == "complete").await;
    // Then the first intent, never canceled (no worker ran), is confirmed after all.
    assert_eq!(
        app.sim.sim.customer_confirm(&pi, None).unwrap(),
        "succeeded"
    );
    let row = wait_row(&app, id, WITHIN, "corrected", |r| r.state == "complete").await;
    assert_eq!(row.stripe_id.as_deref(), Some(pi.as_str()));
    assert!(row.error().is_none());
    let kinds = discrepancy_kinds(&app, id).await;
    assert!(
        kinds.contains(&"corrected_to_complete".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"likely_duplicate".to_owned()), "{kinds:?}");
}

/// A succeeded intent for one of our payments that is not its own is the mark of a double
/// charge: a discrepancy, and the payment is left as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_succeeded_intent_for_a_payment_is_a_discrepancy() {
    let app = TestApp::spawn().await;
    app.enable_webhooks();
    let id = paid(&app, "pm_card_visa").await;
    let row = wait_row(&app, id, WITHIN, "complete", |r| r.state == "complete").await;
    // Someone charged it again under another key.
    let again = app.charge_at_sim_with(id, 1000, "pm_card_visa", None).await;
    assert_eq!(again["status"], "succeeded");
    let deadline = Instant::now() + WITHIN;
    while !discrepancy_kinds(&app, id)
        .await
        .contains(&"other_succeeded_intent".to_owned())
    {
        assert!(Instant::now() < deadline, "no discrepancy recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.row(id).await.stripe_id, row.stripe_id);
}

/// A declined payment's intent goes back to `requires_payment_method` and could be confirmed
/// by anyone holding its client secret: the worker cancels it, and a later confirm fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_payment_cannot_be_charged_later() {
    let app = TestApp::spawn().await;
    let id = paid(&app, "pm_card_visa_chargeDeclined").await;
    let row = wait_row(&app, id, WITHIN, "canceled", |r| r.canceled_at.is_some()).await;
    assert_eq!(row.state, "failed");
    assert_eq!(intent_status(&app, id), "canceled");
    let pi = row.stripe_id.unwrap();
    assert!(app.sim.sim.customer_confirm(&pi, None).is_err());
    assert_eq!(app.charges_for(&id.to_string()), 0);
    assert_eq!(
        app.sim.sim.requests_with_key(&format!("txn_{id}:cancel")),
        1
    );
}

/// The worker comes to cancel, but the customer confirmed first: Stripe answers "already
/// succeeded", and Stripe's success wins.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_that_finds_the_intent_succeeded_corrects_the_payment() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let id = paid(&app, "pm_card_visa_chargeDeclined").await;
    let pi = app
        .charge_at_sim(id, 1000, "pm_card_visa_chargeDeclined")
        .await;
    let pi = pi["error"]["payment_intent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut conn = app.db().await;
    diesel::update(dsl::transactions.find(id))
        .set((
            dsl::state.eq("failed"),
            dsl::stripe_id.eq(&pi),
            dsl::error_code.eq("card_declined"),
            dsl::cancel_requested_at.eq(diesel::dsl::now),
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        app.sim.sim.customer_confirm(&pi, None).unwrap(),
        "succeeded"
    );
    app.start_worker(); // the api's job is still queued
    let row = wait_row(&app, id, WITHIN, "corrected", |r| r.state == "complete").await;
    assert_eq!(row.stripe_id.as_deref(), Some(pi.as_str()));
    assert!(
        discrepancy_kinds(&app, id)
            .await
            .contains(&"corrected_to_complete".to_owned())
    );
}

/// A customer who leaves the 3-D Secure page: after `REQUIRES_ACTION_TIMEOUT_MS` the intent is
/// canceled and the payment fails with a message that says so. Re-checks meanwhile spend no
/// charge attempt and are a bounded number of jobs.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_three_d_secure_ends_failed_and_canceled() {
    let app = TestApp::spawn_with(Options {
        worker: true,
        tweak: |s| {
            s.worker.requires_action_timeout = Duration::from_secs(4);
            s.worker.sweep_after = Duration::from_secs(1); // the first re-check's delay
        },
    })
    .await;
    let id = paid(&app, "pm_card_threeDSecure2Required").await;
    wait_row(&app, id, WITHIN, "waiting", |r| {
        r.state == "requires_action"
    })
    .await;
    let row = wait_row(&app, id, WITHIN, "abandoned", |r| r.state == "failed").await;
    assert_eq!(
        row.error_code.as_deref(),
        Some("authentication_not_completed")
    );
    assert!(
        row.error_message
            .as_deref()
            .unwrap()
            .contains("not been charged")
    );
    assert!(row.canceled_at.is_some());
    assert_eq!(intent_status(&app, id), "canceled");
    assert_eq!(row.attempts, 1, "re-checks are not charge attempts");
    let jobs = app.jobs_pushed().await;
    assert!(jobs <= 12, "{jobs} jobs for one payment");
}

/// No attempt outlives its lease: with a slow rate limit (1 request/s for everyone) and a
/// lease shorter than the wait, leases are renewed before each call, and no payment sees two
/// workers' calls: each key is sent once.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_rate_limit_never_lets_two_workers_call_for_one_payment() {
    let mut app = TestApp::spawn_with(Options {
        worker: true,
        tweak: |s| {
            s.stripe.rate_limit = 2;
            s.stripe.timeout = Duration::from_millis(500);
            s.worker.lease = Duration::from_millis(800);
            s.worker.sweep_after = Duration::from_millis(300);
            s.worker.sweep_interval = Duration::from_millis(100);
        },
    })
    .await;
    app.start_worker();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(paid(&app, "pm_card_visa").await);
    }
    for id in &ids {
        app.wait_for_state(&id.to_string(), &["complete"], Duration::from_secs(40))
            .await;
    }
    for id in &ids {
        for suffix in ["", ":confirm"] {
            let key = format!("txn_{id}{suffix}");
            assert_eq!(app.sim.sim.requests_with_key(&key), 1, "{key}");
        }
        assert_eq!(app.charges_for(&id.to_string()), 1);
    }
}

/// With no webhook at all, the reconciler finds a payment recorded failed that Stripe charged
/// and corrects it, and records a succeeded intent for a transaction we do not have.
#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_corrects_what_no_other_path_reported() {
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        tweak: |s| s.worker.reconcile_interval = Duration::from_millis(300),
    })
    .await;
    let id = paid(&app, "pm_card_visa").await;
    let pi = app.charge_at_sim(id, 1000, "pm_card_visa").await;
    assert_eq!(pi["status"], "succeeded");
    let mut conn = app.db().await;
    diesel::update(dsl::transactions.find(id))
        .set((
            dsl::state.eq("failed"),
            dsl::error_code.eq("processing_error"),
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    let stranger = Uuid::new_v4();
    app.charge_at_sim(stranger, 500, "pm_card_visa").await;
    app.start_worker();
    let row = wait_row(&app, id, WITHIN, "reconciled", |r| r.state == "complete").await;
    assert_eq!(row.stripe_id.as_deref(), pi["id"].as_str());
    assert!(
        discrepancy_kinds(&app, id)
            .await
            .contains(&"corrected_to_complete".to_owned())
    );
    let deadline = Instant::now() + WITHIN;
    while !discrepancy_kinds(&app, stranger)
        .await
        .contains(&"unknown_transaction".to_owned())
    {
        assert!(
            Instant::now() < deadline,
            "unknown transaction not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(app.sim.sim.stats().calls.list >= 1);
}

/// Nothing Stripe tells us is dropped silently: an event that changes nothing says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_ignored_webhook_says_why() {
    let app = TestApp::spawn().await;
    app.enable_webhooks();
    // Late, so the worker has recorded the charge before Stripe's event arrives.
    app.sim
        .sim
        .set_faults(faults(|f| f.webhook_delay_ms = 1_000));
    let id = paid(&app, "pm_card_visa").await;
    wait_row(&app, id, WITHIN, "complete", |r| r.state == "complete").await;
    app.wait_for_deliveries(1, WITHIN).await;
    let mut conn = app.db().await;
    let deadline = Instant::now() + WITHIN;
    loop {
        let events = shared::stripe_events::for_transaction(&mut conn, id)
            .await
            .unwrap();
        let outcomes: Vec<String> = events.iter().filter_map(|e| e.outcome.clone()).collect();
        // The worker recorded it first, so the succeeded event had nothing left to change.
        if outcomes
            .iter()
            .any(|o| o.starts_with("ignored: the payment is already complete"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{outcomes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a payment costs in Stripe requests, as docs/reliability.md states it: a success is a
/// create and a confirm; a decline adds the cancel of its intent; 3-D Secure adds a read once
/// the browser reports the challenge done.
#[tokio::test(flavor = "multi_thread")]
async fn stripe_requests_per_payment_are_as_documented() {
    let app = TestApp::spawn().await;
    let ok = paid(&app, "pm_card_visa").await;
    app.wait_for_state(&ok.to_string(), &["complete"], WITHIN)
        .await;
    let declined = paid(&app, "pm_card_visa_chargeDeclined").await;
    wait_row(&app, declined, WITHIN, "canceled", |r| {
        r.canceled_at.is_some()
    })
    .await;
    let three_ds = paid(&app, "pm_card_threeDSecure2Required").await;
    let waiting = wait_row(&app, three_ds, WITHIN, "waiting", |r| {
        r.state == "requires_action"
    })
    .await;
    let pi = waiting.stripe_id.unwrap();
    app.sim.sim.complete_challenge(&pi, true).unwrap();
    let res = app
        .client
        .post(format!("{}/transactions/{three_ds}/confirm", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    app.wait_for_state(&three_ds.to_string(), &["complete"], WITHIN)
        .await;
    let calls = app.sim.sim.stats().calls;
    assert_eq!(calls.create, 3, "{calls:?}");
    assert_eq!(calls.confirm, 3, "{calls:?}");
    assert_eq!(calls.cancel, 1, "{calls:?}");
    assert_eq!(calls.retrieve, 1, "{calls:?}");
    assert_eq!((calls.search, calls.list), (0, 0), "{calls:?}");
}
