//! What Stripe documents about an intent's life, and the simulator must do too: create
//! unconfirmed and confirm by id; which intents can still be confirmed (a declined one can,
//! by anyone with its client secret); cancel; the consistent list over a `created` window;
//! search lagging behind writes; reads failing in an outage.

use std::time::Duration;

use stripe_sim::{Config, Faults};

use crate::common::{start, start_with_faults};

fn unconfirmed<'a>(pm: &'a str, tx: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("amount", "2000"),
        ("currency", "usd"),
        ("payment_method", pm),
        ("metadata[transaction_id]", tx),
    ]
}

#[tokio::test]
async fn an_intent_created_unconfirmed_charges_only_when_confirmed_by_id() {
    let h = start(Config::default()).await;
    let a = h
        .create(&unconfirmed("pm_card_visa", "tx_c"), Some("k1"))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json["status"], "requires_confirmation");
    assert!(
        h.sim().ledger().charges.is_empty(),
        "no money moves before the confirm"
    );
    let id = a.json["id"].as_str().unwrap();
    let path = format!("/v1/payment_intents/{id}/confirm");
    let c = h.post(&path, &[], Some("k1:confirm")).await;
    assert_eq!(c.status, 200, "{:?}", c.json);
    assert_eq!(c.json["status"], "succeeded");
    // The confirm's key replays its answer; a confirm of a succeeded intent is refused.
    let again = h.post(&path, &[], Some("k1:confirm")).await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json["status"], "succeeded");
    let fresh = h.post(&path, &[], Some("other")).await;
    assert_eq!(fresh.status, 400);
    assert_eq!(fresh.error()["code"], "payment_intent_unexpected_state");
    assert_eq!(fresh.error()["payment_intent"]["status"], "succeeded");
    assert_eq!(h.sim().ledger().charges_for("tx_c").len(), 1);
    assert_eq!(h.sim().requests_with_key("k1:confirm"), 2);
}

#[tokio::test]
async fn a_declined_intent_can_be_confirmed_again_until_it_is_canceled() {
    let h = start(Config::default()).await;
    let a = h
        .create(&unconfirmed("pm_card_visa_chargeDeclined", "tx_d"), None)
        .await;
    let id = a.json["id"].as_str().unwrap().to_owned();
    let c = h
        .post(&format!("/v1/payment_intents/{id}/confirm"), &[], None)
        .await;
    assert_eq!(c.status, 402);
    assert_eq!(
        c.error()["payment_intent"]["status"],
        "requires_payment_method"
    );
    // Anyone with the client secret may try another card: the customer, after the fact.
    assert_eq!(h.sim().customer_confirm(&id, None).unwrap(), "succeeded");
    assert_eq!(h.sim().ledger().charges_for("tx_d").len(), 1);

    let b = h
        .create(&unconfirmed("pm_card_visa_chargeDeclined", "tx_e"), None)
        .await;
    let id = b.json["id"].as_str().unwrap().to_owned();
    h.post(&format!("/v1/payment_intents/{id}/confirm"), &[], None)
        .await;
    let cancel = format!("/v1/payment_intents/{id}/cancel");
    let x = h
        .post(&cancel, &[("cancellation_reason", "abandoned")], Some("x"))
        .await;
    assert_eq!(x.status, 200, "{:?}", x.json);
    assert_eq!(x.json["status"], "canceled");
    assert_eq!(x.json["cancellation_reason"], "abandoned");
    assert!(
        h.sim().customer_confirm(&id, None).is_err(),
        "canceled is final"
    );
    let twice = h.post(&cancel, &[], Some("y")).await;
    assert_eq!(twice.status, 400);
    assert_eq!(twice.error()["payment_intent"]["status"], "canceled");
    assert!(h.sim().ledger().charges_for("tx_e").is_empty());
}

#[tokio::test]
async fn a_succeeded_intent_cannot_be_canceled() {
    let h = start(Config::default()).await;
    let a = h
        .create(&crate::common::charge("pm_card_visa", "tx_s"), None)
        .await;
    let id = a.json["id"].as_str().unwrap();
    let x = h
        .post(&format!("/v1/payment_intents/{id}/cancel"), &[], None)
        .await;
    assert_eq!(x.status, 400);
    assert_eq!(x.error()["code"], "payment_intent_unexpected_state");
    assert_eq!(x.error()["payment_intent"]["status"], "succeeded");
}

#[tokio::test]
async fn list_reads_a_created_window_newest_first_page_by_page() {
    let h = start(Config::default()).await;
    for i in 0..5 {
        h.create(&unconfirmed("pm_card_visa", &format!("tx_{i}")), None)
            .await;
    }
    let now = chrono_now();
    let page = h
        .get(&format!(
            "/v1/payment_intents?limit=2&created[gte]={}&created[lte]={}",
            now - 60,
            now + 60
        ))
        .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.json["data"].as_array().unwrap().len(), 2);
    assert_eq!(page.json["has_more"], true);
    assert_eq!(page.json["data"][0]["metadata"]["transaction_id"], "tx_4");
    let last = page.json["data"][1]["id"].as_str().unwrap();
    let next = h
        .get(&format!(
            "/v1/payment_intents?limit=10&created[gte]={}&starting_after={last}",
            now - 60
        ))
        .await;
    let ids: Vec<&str> = next.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["transaction_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tx_2", "tx_1", "tx_0"]);
    let before = h
        .get(&format!("/v1/payment_intents?created[lt]={}", now - 60))
        .await;
    assert!(before.json["data"].as_array().unwrap().is_empty());
    let bad = h.get("/v1/payment_intents?created[gte]=soon").await;
    assert_eq!(bad.status, 400);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn search_lags_behind_writes_but_retrieve_and_list_do_not() {
    let h = start_with_faults(Faults {
        search_lag_ms: 300,
        ..Faults::default()
    })
    .await;
    let a = h
        .create(&crate::common::charge("pm_card_visa", "tx_l"), None)
        .await;
    let id = a.json["id"].as_str().unwrap();
    let search = "/v1/payment_intents/search?query=metadata%5B%27transaction_id%27%5D%3A%27tx_l%27";
    assert!(
        h.get(search).await.json["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        h.get(&format!("/v1/payment_intents/{id}")).await.status,
        200
    );
    assert_eq!(
        h.get("/v1/payment_intents").await.json["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        h.get(search).await.json["data"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn reads_can_fail_like_an_outage_and_faults_can_target_one_call() {
    let h = start_with_faults(Faults {
        read_error_500: 1.0,
        error_500_after: 1.0,
        apply_to: vec!["confirm".into()],
        ..Faults::default()
    })
    .await;
    // The create is spared; the confirm executes and answers 500; reads fail.
    let a = h
        .create(&unconfirmed("pm_card_visa", "tx_f"), Some("f"))
        .await;
    assert_eq!(a.status, 200);
    let id = a.json["id"].as_str().unwrap();
    let c = h
        .post(
            &format!("/v1/payment_intents/{id}/confirm"),
            &[],
            Some("f:c"),
        )
        .await;
    assert_eq!(c.status, 500);
    assert_eq!(h.sim().ledger().charges_for("tx_f").len(), 1, "it executed");
    assert_eq!(
        h.get(&format!("/v1/payment_intents/{id}")).await.status,
        500
    );
    assert!(
        Faults {
            apply_to: vec!["refund".into()],
            ..Faults::default()
        }
        .validate()
        .is_err()
    );
}
