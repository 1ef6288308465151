//! `payctl webhooks`: the deliveries to the merchant's endpoint as Postgres holds them, one
//! event's body and attempts, and sending again: one event, or every delivery that gave up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Env, text};
use shared::testing::receiver::{Receiver, types_for};

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_that_gave_up_are_listed_shown_and_sent_again() {
    let receiver = Receiver::start().await;
    receiver.set_down(true);
    let mut env = Env::new().await;
    let w = &mut env.settings.merchant_webhooks;
    w.urls = vec![receiver.url.clone()];
    w.secret = Some(shared::secret::Secret::new("whsec_payctl_0123456789"));
    w.retry_base = Duration::from_millis(50);
    w.retry_max = Duration::from_millis(100);
    w.poll_interval = Duration::from_millis(20);
    // Given up a second after the event: the endpoint is down for longer.
    w.max_age = Duration::from_secs(1);
    env.start_real_worker().await;
    // The worker registers the endpoint before the payment writes its events.
    let endpoint_listed =
        |v: &serde_json::Value| v["endpoints"].as_array().is_some_and(|e| e.len() == 1);
    env.wait_json(&["webhooks", "list"], "the endpoint", endpoint_listed)
        .await;
    let id = env.pay().await;
    env.wait_for_state(id, "complete").await;
    let listed = env
        .wait_json(
            &["webhooks", "list", "--state", "failed"],
            "deliveries given up",
            |v| v["deliveries"].as_array().is_some_and(|d| d.len() == 3),
        )
        .await;
    assert_eq!(listed["endpoints"][0]["failed"], 3, "{listed:#}");
    assert!(
        listed["endpoints"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("503")
    );
    let human = text(&env.payctl(&["webhooks", "list"]).await.stdout);
    assert!(
        human.contains("GAVE UP") && human.contains("payment.complete"),
        "{human}"
    );

    // One event, its body as the merchant gets it, and every attempt.
    let event = listed["deliveries"][0]["event_id"].as_i64().unwrap();
    let evt = format!("evt_{event}");
    let shown = env.payctl_json(&["webhooks", "show", &evt]).await;
    assert_eq!(shown["body"]["id"], evt.as_str());
    assert_eq!(shown["body"]["data"]["transaction"]["id"], id.to_string());
    assert!(
        shown["attempts"].as_array().unwrap().len() >= 2,
        "{shown:#}"
    );
    assert!(
        shown["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] == 503)
    );

    // Back up: one event sent again, then every failed one.
    receiver.set_down(false);
    let again = env.payctl_json(&["webhooks", "redeliver", &evt]).await;
    assert_eq!(again["due_now"], 1);
    receiver
        .wait_until(Duration::from_secs(20), |d| {
            d.iter().any(|e| e["id"] == evt.as_str())
        })
        .await;
    let rest = env
        .payctl_json(&["webhooks", "redeliver", "--failed", "--since", "1h"])
        .await;
    assert_eq!(rest["due_now"], 2, "{rest}");
    let delivered = receiver
        .wait_until(Duration::from_secs(20), |d| {
            types_for(d, &id.to_string()).len() == 3
        })
        .await;
    assert_eq!(types_for(&delivered, &id.to_string()).len(), 3);
    env.wait_json(&["webhooks", "list"], "all delivered", |v| {
        v["endpoints"][0]["delivered"] == 3
    })
    .await;

    // Mistakes are told, not guessed at.
    for (args, says) in [
        (vec!["webhooks", "show", "evt_x"], "is not an event id"),
        (vec!["webhooks", "show", "evt_999999"], "no event"),
    ] {
        let out = env.payctl(&args).await;
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for args in [
        vec!["webhooks", "redeliver"],
        vec!["webhooks", "redeliver", "--failed"],
        vec!["webhooks", "list", "--state", "lost"],
    ] {
        let out = env.payctl(&args).await;
        assert!(!out.status.success(), "{args:?}");
        assert!(!text(&out.stderr).is_empty(), "{args:?}: no message");
    }
}
