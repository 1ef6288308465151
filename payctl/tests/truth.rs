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
    let pi = intent(&base, id, "true").await;
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

/// A pass walks its window a slice at a time (what it holds is bounded by the payment rate),
/// yet a `complete` row is still held against its intent when the two fall in different slices:
/// here the rows are ten minutes older than their intents. The charged one is left alone (asked
/// for by id); the one Stripe never charged is a discrepancy, recorded once.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_holds_rows_against_intents_made_in_another_slice() {
    let mut env = Env::new().await;
    let base = env.sim_with(stripe_sim::Faults::default()).await.base_url();
    let (charged, never) = (
        env.insert_transaction().await,
        env.insert_transaction().await,
    );
    let charged_pi = intent(&base, charged, "true").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let never_pi = intent(&base, never, "false").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut conn = env.db().await;
    for (id, pi) in [(charged, &charged_pi), (never, &never_pi)] {
        diesel::sql_query(
            "UPDATE transactions SET state = 'complete', stripe_id = $2,
                    created_at = now() - interval '10 minutes' WHERE id = $1",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .bind::<diesel::sql_types::Text, _>(pi)
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let report = env.payctl_json(&["reconcile", "--since", "1h"]).await;
    assert_eq!(report["complete_rows"], 2, "{report:#}");
    assert_eq!(report["fixed"], 0, "{report:#}");
    assert_eq!(report["discrepancies"], 1, "{report:#}");
    let found = env.payctl_json(&["discrepancies", "--since", "1d"]).await;
    let kinds: Vec<(String, String)> = found["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["stripe_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("complete_without_charge".to_owned(), never_pi)],
        "{found:#}"
    );
    let again = env.payctl_json(&["reconcile", "--since", "1h"]).await;
    assert_eq!(again["discrepancies"], 0, "recorded once: {again:#}");
}

/// A PaymentIntent made at stripe-sim for our transaction `id`, confirmed or not.
async fn intent(base: &str, id: uuid::Uuid, confirm: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}/v1/payment_intents"))
        .bearer_auth("sk_test_payctl")
        .form(&[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", "pm_card_visa"),
            ("confirm", confirm),
            ("metadata[transaction_id]", &id.to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
