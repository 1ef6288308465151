//! `payctl stuck`: each reason a payment can stop moving, built with the worker's own queries
//! on the row (claim, record) and real jobs in Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Behaviour, Env, assert_contains, text};
use serde_json::Value;
use shared::state_machine::change as txq;
use shared::state_machine::outcome::Outcome;
use uuid::Uuid;

fn entry(report: &Value, txn: Uuid) -> &Value {
    report["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["transaction_id"] == txn.to_string())
        .unwrap_or_else(|| panic!("{txn} not reported: {report:#}"))
}

/// One unfinished payment for each reason.
struct Cases {
    job_dead: Uuid,
    no_job: Uuid,
    queued: Uuid,
    leased: Uuid,
    retrying: Uuid,
    three_ds: Uuid,
}

async fn one_of_each(env: &mut Env) -> Cases {
    let hour = Duration::from_secs(3600);
    // Its job died: the aborting consumer sends it to the dead set.
    let job_dead = env.pay().await;
    let killer = env.start_test_worker(Behaviour::Abort);
    env.wait_json(&["dead"], "a dead job", |v| v["total"] == 1)
        .await;
    env.stop_worker(&killer).await;
    // Recorded, never enqueued (the push after the commit failed).
    let no_job = env.insert_transaction().await;
    let queued = env.insert_transaction().await;
    env.enqueue(queued, Some(hour)).await;

    let mut db = env.db().await;
    // A worker claimed it and crashed mid-call: its lease is still running.
    let leased = env.insert_transaction().await;
    txq::claim(&mut db, leased, "worker-that-died", hour)
        .await
        .unwrap()
        .unwrap();
    // Stripe answered 500: the worker recorded a retry an hour from now.
    let retrying = env.insert_transaction().await;
    let retry = Outcome::Retry {
        stripe_id: None,
        reason: "stripe: 500 api_error".into(),
        delay: hour,
        outcome_unknown: false,
        attempt_given_back: false,
    };
    txq::claim(&mut db, retrying, "w1", hour)
        .await
        .unwrap()
        .unwrap();
    txq::record(&mut db, retrying, "w1", &retry)
        .await
        .unwrap()
        .unwrap();
    // 3-D Secure: the customer has to act.
    let three_ds = env.insert_transaction().await;
    let action = Outcome::RequiresAction {
        stripe_id: "pi_1".into(),
        client_secret: "pi_1_secret".into(),
        recheck_in: hour,
    };
    txq::claim(&mut db, three_ds, "w1", hour)
        .await
        .unwrap()
        .unwrap();
    txq::record(&mut db, three_ds, "w1", &action)
        .await
        .unwrap()
        .unwrap();
    Cases {
        job_dead,
        no_job,
        queued,
        leased,
        retrying,
        three_ds,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_says_why_each_unfinished_payment_is_not_moving() {
    let mut env = Env::new().await;
    let c = one_of_each(&mut env).await;

    let report = env.payctl_json(&["stuck", "--older-than", "0s"]).await;
    assert_eq!(
        report["transactions"].as_array().unwrap().len(),
        6,
        "{report:#}"
    );
    let reason = |txn| {
        entry(&report, txn)["reason_code"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(reason(c.no_job), "no_job");
    assert_eq!(reason(c.job_dead), "job_dead");
    assert_eq!(reason(c.queued), "job_queued");
    assert_eq!(reason(c.leased), "lease_held_by_gone_worker");
    assert_eq!(reason(c.retrying), "waiting_for_retry");
    assert_eq!(reason(c.three_ds), "waiting_for_customer");

    let r = entry(&report, c.retrying);
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("waiting for retry at ")
    );
    assert_eq!(r["last_error"], "stripe: 500 api_error");
    assert_eq!(r["attempts"], 1);
    assert!(
        entry(&report, c.leased)["reason"]
            .as_str()
            .unwrap()
            .contains("worker-that-died")
    );
    assert_eq!(entry(&report, c.job_dead)["jobs"][0]["state"], "dead");
    assert_eq!(entry(&report, c.queued)["jobs"][0]["state"], "scheduled");
    assert_eq!(
        entry(&report, c.no_job)["jobs"].as_array().unwrap().len(),
        0
    );

    // Younger than the threshold: not stuck.
    let none = env.payctl_json(&["stuck", "--older-than", "1h"]).await;
    assert_eq!(none["transactions"].as_array().unwrap().len(), 0);

    let out = env.payctl(&["stuck", "--older-than", "0s"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_contains(
        &text(&out.stdout),
        &[
            "REASON",
            "no job",
            "job dead",
            "lease held by a worker that is gone",
            "waiting for retry at",
            "waiting for the customer (3-D Secure)",
            "stripe: 500 api_error",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_a_live_worker_is_in_flight_not_stuck_on_a_gone_one() {
    let mut env = Env::new().await;
    let holder = env.start_test_worker(Behaviour::Hold);
    env.wait_json(&["stats"], "the worker registered", |v| {
        v["workers"].as_array().is_some_and(|w| !w.is_empty())
    })
    .await;
    let txn = env.insert_transaction().await;
    let mut db = env.db().await;
    txq::claim(&mut db, txn, &holder, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let report = env.payctl_json(&["stuck", "--older-than", "0s"]).await;
    assert_eq!(entry(&report, txn)["reason_code"], "in_flight");

    // Once that worker stops heartbeating, the same lease is held by a gone worker.
    env.stop_worker(&holder).await;
    env.wait_json(
        &["stuck", "--older-than", "0s"],
        "the lease holder gone",
        |v| entry(v, txn)["reason_code"] == "lease_held_by_gone_worker",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_the_real_worker_is_making_is_in_flight() {
    let mut env = Env::new().await;
    // Stripe answers after 3 s: long enough to look at the payment while it is being charged.
    env.settings.stripe.timeout = Duration::from_secs(8);
    env.settings.worker.lease = Duration::from_secs(12);
    let slow = stripe_sim::Faults {
        latency_ms: 3000,
        ..Default::default()
    };
    env.start_real_worker_with(slow).await;
    let txn = env.pay().await;
    let report = env
        .wait_json(
            &["stuck", "--older-than", "0s"],
            "the charge in flight",
            |v| {
                v["transactions"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["lease_owner"].is_string()))
            },
        )
        .await;
    let t = entry(&report, txn);
    assert_eq!(t["reason_code"], "in_flight", "{t:#}");
    assert_eq!(t["state"], "processing");
    env.wait_for_state(txn, "complete").await;
}
