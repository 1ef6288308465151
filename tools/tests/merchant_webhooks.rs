//! The merchant's webhooks against the real processes: nothing is lost when the worker is
//! SIGKILLed in the middle of deliveries and Redis is emptied (none of the outbox is in Redis).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use serde_json::json;
use shared::testing::receiver::Receiver;
use tools::chaos::service_env;
use tools::stack::{Stack, StackConfig, default_bin_dir};

const MERCHANT_KEY: &str = "mk_hooks_0123456789abcdef";

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

async fn ids(database_url: &str, sql: &str) -> BTreeSet<i64> {
    let mut conn = shared::db::connect(database_url).await.unwrap();
    let rows: Vec<Id> = diesel::sql_query(sql).load(&mut conn).await.unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_event_is_lost_when_the_worker_dies_mid_delivery_and_redis_is_emptied() {
    let receiver = Receiver::start().await;
    // The merchant's app is slow: every delivery is in flight for 2 s.
    receiver.set_delay(Duration::from_secs(2));
    let mut env = service_env();
    for (k, v) in [
        ("MERCHANT_API_KEY", MERCHANT_KEY),
        ("MERCHANT_WEBHOOK_URL", receiver.url.as_str()),
        ("MERCHANT_WEBHOOK_SECRET", "whsec_stack_hooks_0123456789"),
        ("MERCHANT_WEBHOOK_TIMEOUT_MS", "4000"),
        ("MERCHANT_WEBHOOK_RETRY_BASE_MS", "100"),
        ("MERCHANT_WEBHOOK_POLL_MS", "50"),
    ] {
        env.push((k.into(), v.into()));
    }
    let mut stack = Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: None,
        bin_dir: default_bin_dir(),
        log_dir: default_bin_dir().join("platform-logs/merchant-webhooks"),
        workers: 1,
        sim_faults: json!({}),
        env,
        redis_url: None,
        webhooks: false,
    })
    .await
    .expect("stack");
    let client = reqwest::Client::new();
    for i in 0..5 {
        let res = client
            .post(format!("{}/transactions", stack.api_url))
            .bearer_auth(MERCHANT_KEY)
            .json(
                &json!({"amount": 700, "currency": "usd", "email": "h@example.com",
                          "payment_method": "pm_card_visa", "reference": format!("order-{i}")}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    // Wait for deliveries in flight (claimed, not answered yet), then kill the worker and
    // empty Redis, as a crash and a Redis restart without persistence do.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let in_flight = ids(
            &stack.database_url,
            "SELECT id FROM webhook_deliveries WHERE state = 'pending' AND attempts > 0",
        )
        .await;
        if !in_flight.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery ever in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.kill_worker(0).await.unwrap();
    stack.empty_redis().await.unwrap();
    receiver.set_delay(Duration::ZERO);
    stack.start_worker().unwrap();

    // Every payment completes, and every event of the log reaches the merchant.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = ids(&stack.database_url, "SELECT id FROM payment_events").await;
        let complete = ids(
            &stack.database_url,
            "SELECT count(*) AS id FROM transactions WHERE state = 'complete'",
        )
        .await;
        let delivered: BTreeSet<i64> = receiver
            .delivered()
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect();
        // Delivered by the receiver's count and by the worker's record: the attempts the killed
        // worker never recorded were made again once their claim ran out.
        let open = ids(
            &stack.database_url,
            "SELECT id FROM webhook_deliveries WHERE state <> 'delivered'",
        )
        .await;
        if complete.contains(&5) && events.len() == 15 && delivered == events && open.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events {events:?}, delivered {delivered:?}, complete {complete:?}, open {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.teardown().await.unwrap();
}
