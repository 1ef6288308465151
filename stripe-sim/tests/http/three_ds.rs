//! 3-D Secure: requires_action, the challenge page, approve / fail / decline-after-approve.

use stripe_sim::Config;

use crate::common::{Harness, charge, start};

async fn requires_action(h: &Harness, pm: &str, tx: &str) -> (String, String) {
    let a = h.create(&charge(pm, tx), None).await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    assert_eq!(a.json["status"], "requires_action");
    let id = a.json["id"].as_str().unwrap().to_owned();
    let next = &a.json["next_action"];
    assert_eq!(next["type"], "redirect_to_url");
    assert!(next["redirect_to_url"]["return_url"].is_null());
    let url = next["redirect_to_url"]["url"].as_str().unwrap().to_owned();
    let secret = a.json["client_secret"].as_str().unwrap();
    assert_eq!(
        url,
        format!(
            "{}/sim/3ds/{id}?client_secret={secret}",
            h.running.base_url()
        )
    );
    assert!(
        h.sim().ledger().charges_for(tx).is_empty(),
        "no charge before authentication"
    );
    (id, url)
}

async fn complete(h: &Harness, id: &str, result: &str) -> reqwest::Response {
    h.http
        .post(h.url(&format!("/sim/3ds/{id}/complete")))
        .form(&[("result", result)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn approve_then_succeeded_and_charged() {
    let h = start(Config::default()).await;
    for pm in [
        "pm_card_threeDSecure2Required",
        "pm_card_authenticationRequired",
        "tok_threeDSecure2Required",
    ] {
        let tx = format!("tx_{pm}");
        let (id, url) = requires_action(&h, pm, &tx).await;
        let page = h.http.get(&url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Simulated 3-D Secure"));
        assert!(page.contains("id=\"sim-3ds-approve\""));
        assert!(page.contains("id=\"sim-3ds-fail\""));
        assert!(page.contains(&format!("action=\"/sim/3ds/{id}/complete\"")));

        let resp = complete(&h, &id, "approve").await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("Authentication complete, you can close this window")
        );
        let pi = h.get(&format!("/v1/payment_intents/{id}")).await;
        assert_eq!(pi.json["status"], "succeeded");
        assert!(pi.json["next_action"].is_null());
        assert_eq!(pi.json["amount_received"], 2000);
        assert_eq!(h.sim().ledger().charges_for(&tx).len(), 1);

        // Only once: the intent no longer requires action.
        assert_eq!(complete(&h, &id, "approve").await.status(), 400);
    }
    assert_eq!(h.sim().ledger().charges.len(), 3);
}

#[tokio::test]
async fn fail_means_authentication_failure() {
    let h = start(Config::default()).await;
    let (id, _) = requires_action(&h, "pm_card_threeDSecure2Required", "tx_fail").await;
    // JSON works as well as the form.
    let resp = h
        .http
        .post(h.url(&format!("/sim/3ds/{id}/complete")))
        .json(&serde_json::json!({ "result": "fail" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pi = h.get(&format!("/v1/payment_intents/{id}")).await;
    assert_eq!(pi.json["status"], "requires_payment_method");
    let e = &pi.json["last_payment_error"];
    assert_eq!(e["code"], "payment_intent_authentication_failure");
    assert_eq!(
        e["message"],
        "We are unable to authenticate your payment method. Please choose a different payment \
         method and try again."
    );
    assert!(h.sim().ledger().charges.is_empty());
}

#[tokio::test]
async fn three_ds_then_declined_and_rust_api() {
    let h = start(Config::default()).await;
    let (id, _) =
        requires_action(&h, "pm_card_threeDSecureRequiredChargeDeclined", "tx_3dsd").await;
    h.sim().complete_challenge(&id, true).unwrap();
    let pi = h.get(&format!("/v1/payment_intents/{id}")).await;
    assert_eq!(pi.json["status"], "requires_payment_method");
    assert_eq!(pi.json["last_payment_error"]["code"], "card_declined");
    assert_eq!(
        pi.json["last_payment_error"]["decline_code"],
        "generic_decline"
    );
    assert!(h.sim().ledger().charges.is_empty());
    assert!(h.sim().complete_challenge(&id, true).is_err());
    assert!(h.sim().complete_challenge("pi_missing", true).is_err());
}

#[tokio::test]
async fn return_url_redirects_with_303() {
    let h = start(Config::default()).await;
    let (id, _) = requires_action(&h, "pm_card_authenticationRequired", "tx_ret").await;
    let resp = h
        .http
        .post(h.url(&format!("/sim/3ds/{id}/complete")))
        .form(&[
            ("result", "approve"),
            ("return_url", "http://shop.example/done?order=1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "http://shop.example/done?order=1"
    );
}
