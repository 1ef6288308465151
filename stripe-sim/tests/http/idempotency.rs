//! Idempotency keys, as Stripe applies them.

use std::time::Duration;

use stripe_sim::{Config, Faults};

use crate::common::{KEY, charge, start, wait_for};

#[tokio::test]
async fn replay_returns_the_stored_answer_with_header() {
    let h = start(Config::default()).await;
    let first = h
        .create(&charge("pm_card_visa", "tx_idem"), Some("key-1"))
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("idempotency-key"), Some("key-1"));
    assert!(first.header("idempotent-replayed").is_none());

    let again = h
        .create(&charge("pm_card_visa", "tx_idem"), Some("key-1"))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("idempotency-key"), Some("key-1"));
    assert_eq!(again.header("original-request"), first.header("request-id"));
    assert_ne!(again.header("request-id"), first.header("request-id"));
    assert_eq!(again.json, first.json);

    let ledger = h.sim().ledger();
    assert_eq!(ledger.payment_intents.len(), 1);
    assert_eq!(
        ledger.payment_intents[0].idempotency_key.as_deref(),
        Some("key-1")
    );
    assert_eq!(ledger.charges.len(), 1);
}

#[tokio::test]
async fn declines_are_stored_and_replayed() {
    let h = start(Config::default()).await;
    let first = h
        .create(
            &charge("pm_card_visa_chargeDeclined", "tx_d"),
            Some("key-d"),
        )
        .await;
    let again = h
        .create(
            &charge("pm_card_visa_chargeDeclined", "tx_d"),
            Some("key-d"),
        )
        .await;
    assert_eq!((first.status, again.status), (402, 402));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json);
    assert_eq!(h.sim().ledger().payment_intents.len(), 1);
}

#[tokio::test]
async fn different_params_is_an_idempotency_error() {
    let h = start(Config::default()).await;
    h.create(&charge("pm_card_visa", "tx_a"), Some("key-2"))
        .await;
    let other = h
        .create(&charge("pm_card_visa", "tx_b"), Some("key-2"))
        .await;
    assert_eq!(other.status, 400);
    assert_eq!(other.error()["type"], "idempotency_error");
    assert_eq!(
        other.error()["message"],
        "Keys for idempotent requests can only be used with the same parameters they were first \
         used with. Try using a key other than 'key-2' if you meant to execute a different request."
    );
    assert_eq!(h.sim().ledger().charges.len(), 1);
}

#[tokio::test]
async fn same_key_while_in_flight_is_409() {
    let h = start(Config::default()).await;
    h.sim().set_faults(Faults {
        latency_ms: 1500,
        ..Faults::default()
    });
    let first = tokio::spawn({
        let http = h.http.clone();
        let url = h.url("/v1/payment_intents");
        async move {
            http.post(url)
                .bearer_auth(KEY)
                .header("Idempotency-Key", "key-busy")
                .form(&charge("pm_card_visa", "tx_busy"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    wait_for(
        "first request to arrive",
        Duration::from_secs(5),
        || async { (h.sim().stats().requests >= 1).then_some(()) },
    )
    .await;
    let second = h
        .create(&charge("pm_card_visa", "tx_busy"), Some("key-busy"))
        .await;
    assert_eq!(second.status, 409, "{:?}", second.json);
    assert_eq!(second.error()["type"], "idempotency_error");
    assert_eq!(second.error()["code"], "idempotency_key_in_use");
    assert_eq!(first.await.unwrap(), 200);
    // The 409 was not stored: now the key replays the first answer.
    h.sim().set_faults(Faults::default());
    let third = h
        .create(&charge("pm_card_visa", "tx_busy"), Some("key-busy"))
        .await;
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
    assert_eq!(h.sim().ledger().charges.len(), 1);
}

#[tokio::test]
async fn validation_failures_are_not_stored() {
    let h = start(Config::default()).await;
    let bad = h.create(&[("currency", "usd")], Some("key-3")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.error()["type"], "invalid_request_error");
    let good = h
        .create(&charge("pm_card_visa", "tx_3"), Some("key-3"))
        .await;
    assert_eq!(good.status, 200, "{:?}", good.json);
    assert!(good.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn keys_are_scoped_per_api_key_and_limited_to_255_chars() {
    let h = start(Config::default()).await;
    h.create(&charge("pm_card_visa", "tx_s1"), Some("shared-key"))
        .await;
    let other_account = h
        .http
        .post(h.url("/v1/payment_intents"))
        .bearer_auth("sk_test_another_account_key")
        .header("Idempotency-Key", "shared-key")
        .form(&charge("pm_card_visa", "tx_s2"))
        .send()
        .await
        .unwrap();
    assert_eq!(other_account.status(), 200);
    assert!(other_account.headers().get("idempotent-replayed").is_none());

    let long = "k".repeat(256);
    let a = h
        .create(&charge("pm_card_visa", "tx_long"), Some(&long))
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.error()["type"], "invalid_request_error");
    let ok = h
        .create(&charge("pm_card_visa", "tx_long"), Some(&"k".repeat(255)))
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn keys_expire_after_the_ttl() {
    let h = start(Config {
        idempotency_ttl_secs: 1,
        ..Config::default()
    })
    .await;
    let first = h
        .create(&charge("pm_card_visa", "tx_ttl"), Some("key-ttl"))
        .await;
    // Once the key is older than the TTL, the same key makes a new request.
    let fresh = wait_for("the key to expire", Duration::from_secs(5), || async {
        let a = h
            .create(&charge("pm_card_visa", "tx_ttl"), Some("key-ttl"))
            .await;
        a.header("idempotent-replayed").is_none().then_some(a)
    })
    .await;
    assert_ne!(fresh.json["id"], first.json["id"]);
    assert_eq!(h.sim().ledger().charges.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_charge_once() {
    let h = start(Config::default()).await;
    h.sim().set_faults(Faults {
        latency_ms: 100,
        ..Faults::default()
    });
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = h.http.clone();
        let url = h.url("/v1/payment_intents");
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .bearer_auth(KEY)
                .header("Idempotency-Key", "key-race")
                .form(&charge("pm_card_visa", "tx_race"))
                .send()
                .await
                .unwrap();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            (resp.status().as_u16(), replayed)
        }));
    }
    let mut executed = 0;
    for task in tasks {
        match task.await.unwrap() {
            (200, false) => executed += 1,
            (200, true) | (409, _) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(executed, 1, "exactly one request executes");
    assert_eq!(h.sim().ledger().charges_for("tx_race").len(), 1);
}
