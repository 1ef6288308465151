//! `payctl reconcile` and `payctl discrepancies`: Postgres held against Stripe's consistent list
//! from the command line, and what it found.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Env;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use shared::schema::transactions::dsl;

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_corrects_a_payment_stripe_charged_and_discrepancies_lists_it() {
    let mut env = Env::new().await;
    let id = env.insert_transaction().await;
    let base = env.sim_with(stripe_sim::Faults::default()).await.base_url();
    // Charged at Stripe; recorded failed here (its answer never arrived, say).
    let res = reqwest::Client::new()
        .post(format!("{base}/v1/payment_intents"))
        .bearer_auth("sk_test_payctl")
        .form(&[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", "pm_card_visa"),
            ("confirm", "true"),
            ("metadata[transaction_id]", &id.to_string()),
        ])
        .send()
        .await
        .unwrap();
    let pi: serde_json::Value = res.json().await.unwrap();
    let mut conn = env.db().await;
    diesel::update(dsl::transactions.find(id))
        .set((
            dsl::state.eq("failed"),
            dsl::error_code.eq("processing_error"),
        ))
        .execute(&mut conn)
        .await
        .unwrap();

    let report = env.payctl_json(&["reconcile", "--since", "1h"]).await;
    assert_eq!(report["ours"], 1, "{report:#}");
    assert_eq!(report["fixed"], 1, "{report:#}");
    env.wait_for_state(id, "complete").await;

    let found = env.payctl_json(&["discrepancies", "--since", "1d"]).await;
    let list = found["discrepancies"].as_array().unwrap();
    assert!(
        list.iter().any(|d| d["kind"] == "corrected_to_complete"
            && d["transaction_id"] == id.to_string()
            && d["stripe_id"] == pi["id"]
            && d["source"] == "reconciler"),
        "{found:#}"
    );
    let again = env.payctl_json(&["reconcile", "--since", "1h"]).await;
    assert_eq!(again["fixed"], 0, "a second pass has nothing to fix");
    assert_eq!(again["discrepancies"], 0, "and records nothing twice");
    let human = env.payctl(&["discrepancies"]).await;
    assert!(String::from_utf8_lossy(&human.stdout).contains("corrected_to_complete"));
}
