//! Fault injection: what each fault does to the answer, the ledger and the key store.

use std::time::Duration;

use stripe_sim::{Config, Faults};

use crate::common::{Harness, charge, start, start_with_faults};

fn only(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::default();
    f(&mut faults);
    faults
}

#[tokio::test]
async fn error_500_after_is_stored_and_replayed() {
    let h = start_with_faults(only(|f| f.error_500_after = 1.0)).await;
    let first = h
        .create(&charge("pm_card_visa", "tx_500a"), Some("key-500a"))
        .await;
    assert_eq!(first.status, 500);
    assert_eq!(first.error()["type"], "api_error");
    assert!(first.header("stripe-should-retry").is_none());
    // The charge happened anyway.
    assert_eq!(h.sim().ledger().charges_for("tx_500a").len(), 1);

    h.sim().set_faults(Faults::default());
    let again = h
        .create(&charge("pm_card_visa", "tx_500a"), Some("key-500a"))
        .await;
    assert_eq!(again.status, 500, "Stripe replays a stored 500");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json, first.json);
    assert_eq!(h.sim().ledger().charges.len(), 1);
    assert_eq!(h.sim().stats().faults.error_500_after, 1);
}

#[tokio::test]
async fn error_500_before_executes_nothing_and_stores_nothing() {
    let h = start_with_faults(only(|f| f.error_500_before = 1.0)).await;
    let first = h
        .create(&charge("pm_card_visa", "tx_500b"), Some("key-500b"))
        .await;
    assert_eq!(first.status, 500);
    assert!(h.sim().ledger().payment_intents.is_empty());
    h.sim().set_faults(Faults::default());
    let retry = h
        .create(&charge("pm_card_visa", "tx_500b"), Some("key-500b"))
        .await;
    assert_eq!(retry.status, 200);
    assert!(retry.header("idempotent-replayed").is_none());
    assert_eq!(h.sim().stats().faults.error_500_before, 1);
}

#[tokio::test]
async fn drop_after_closes_without_answer_but_charges() {
    let h = start_with_faults(only(|f| f.drop_after = 1.0)).await;
    let err = h
        .try_create(&charge("pm_card_visa", "tx_drop"), Some("key-drop"))
        .await;
    let err = err.expect_err("the connection is closed without a response");
    assert!(!err.is_timeout(), "closed, not timed out: {err:?}");
    let ledger = h.sim().ledger();
    assert_eq!(ledger.charges_for("tx_drop").len(), 1, "the charge exists");
    assert_eq!(h.sim().stats().faults.drop_after, 1);

    // Retrying with the same key gets the stored answer: no second charge.
    h.sim().set_faults(Faults::default());
    let retry = h
        .create(&charge("pm_card_visa", "tx_drop"), Some("key-drop"))
        .await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.json["id"].as_str(),
        Some(ledger.charges[0].payment_intent.as_str())
    );
    assert_eq!(h.sim().ledger().charges.len(), 1);
}

#[tokio::test]
async fn rate_limit_429_has_retry_after_and_is_not_stored() {
    let h = start_with_faults(only(|f| {
        f.rate_limit_429 = 1.0;
        f.retry_after_secs = 3;
    }))
    .await;
    let a = h
        .create(&charge("pm_card_visa", "tx_429"), Some("key-429"))
        .await;
    assert_eq!(a.status, 429);
    assert_eq!(a.error()["type"], "rate_limit_error");
    assert_eq!(a.header("retry-after"), Some("3"));
    assert_eq!(a.header("stripe-should-retry"), Some("true"));
    assert!(h.sim().ledger().payment_intents.is_empty());
    h.sim().set_faults(Faults::default());
    let retry = h
        .create(&charge("pm_card_visa", "tx_429"), Some("key-429"))
        .await;
    assert_eq!(retry.status, 200);
    assert!(retry.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn conflict_409_is_not_stored() {
    let h = start_with_faults(only(|f| f.conflict_409 = 1.0)).await;
    let a = h
        .create(&charge("pm_card_visa", "tx_409"), Some("key-409"))
        .await;
    assert_eq!(a.status, 409);
    assert_eq!(a.error()["code"], "idempotency_key_in_use");
    h.sim().set_faults(Faults::default());
    let retry = h
        .create(&charge("pm_card_visa", "tx_409"), Some("key-409"))
        .await;
    assert_eq!(retry.status, 200);
    assert!(retry.header("idempotent-replayed").is_none());
}

#[tokio::test]
async fn hang_outlasts_the_client_timeout_after_executing() {
    let h = start_with_faults(only(|f| {
        f.hang = 1.0;
        f.hang_ms = 2_000;
    }))
    .await;
    let req = h
        .http
        .post(h.url("/v1/payment_intents"))
        .bearer_auth(crate::common::KEY)
        .header("Idempotency-Key", "key-hang")
        .timeout(Duration::from_millis(200))
        .form(&charge("pm_card_visa", "tx_hang"));
    let err = req.send().await.expect_err("client times out");
    assert!(err.is_timeout());
    assert_eq!(h.sim().ledger().charges_for("tx_hang").len(), 1);
    h.sim().set_faults(Faults::default());
    let retry = h
        .create(&charge("pm_card_visa", "tx_hang"), Some("key-hang"))
        .await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(h.sim().stats().faults.hang, 1);
}

#[tokio::test]
async fn faults_over_http_and_stats() {
    let h = start(Config::default()).await;
    let resp = h
        .http
        .post(h.url("/sim/faults"))
        .json(&serde_json::json!({ "latency_ms": 5, "seed": 9 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let faults: Faults = h
        .http
        .get(h.url("/sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        faults,
        Faults {
            latency_ms: 5,
            seed: 9,
            ..Faults::default()
        }
    );
    h.create(&charge("pm_card_visa", "tx_stats"), None).await;
    h.get("/v1/payment_intents/pi_x").await;
    let stats: serde_json::Value = h
        .http
        .get(h.url("/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["requests"], 2);
    assert_eq!(stats["faults"]["latency"], 2);
    assert_eq!(stats["faults"]["drop_after"], 0);

    for bad in [r#"{"hang": 2.0}"#, r#"{"hangg": 0.5}"#, "not json"] {
        let resp = h
            .http
            .post(h.url("/sim/faults"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
}

/// Statuses of `n` sequential creates without keys.
async fn statuses(h: &Harness, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        let tx = format!("tx_seed_{i}");
        out.push(h.create(&charge("pm_card_visa", &tx), None).await.status);
    }
    out
}

#[tokio::test]
async fn seeded_faults_are_reproducible() {
    let faults = only(|f| {
        f.seed = 1234;
        f.error_500_before = 0.25;
        f.rate_limit_429 = 0.15;
        f.error_500_after = 0.2;
    });
    let a = start_with_faults(faults.clone()).await;
    let b = start_with_faults(faults.clone()).await;
    let run_a = statuses(&a, 40).await;
    let run_b = statuses(&b, 40).await;
    assert_eq!(run_a, run_b, "same seed, same faults");
    assert!(
        run_a.contains(&200) && run_a.contains(&500) && run_a.contains(&429),
        "{run_a:?}"
    );
    // Re-seeding through set_faults (or reset) replays the sequence.
    a.sim().set_faults(faults.clone());
    assert_eq!(statuses(&a, 40).await, run_a);
    assert_eq!(a.sim().stats(), {
        let mut s = b.sim().stats();
        s.requests *= 2;
        s.faults.error_500_before *= 2;
        s.faults.rate_limit_429 *= 2;
        s.faults.error_500_after *= 2;
        s.calls.create *= 2;
        s
    });
}

/// Stripe's account limit (`rate_limit_per_second`): the requests over it in any second get 429
/// `rate_limit_error` before anything executes; a second later there is room again.
#[tokio::test]
async fn the_account_rate_limit_refuses_what_goes_over_it() {
    let h = start_with_faults(only(|f| f.rate_limit_per_second = 3)).await;
    let mut statuses = Vec::new();
    for n in 0..5 {
        let r = h
            .create(
                &charge("pm_card_visa", &format!("tx_rl{n}")),
                Some(&format!("key-rl{n}")),
            )
            .await;
        if r.status == 429 {
            assert_eq!(r.error()["type"], "rate_limit_error");
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    assert_eq!(
        h.sim().ledger().payment_intents.len(),
        3,
        "refused requests executed nothing"
    );
    assert_eq!(h.sim().stats().rate_limited, 2);
    // Room again once the first second has passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = h
            .create(&charge("pm_card_visa", "tx_rl9"), Some("key-rl9"))
            .await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
