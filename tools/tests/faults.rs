//! One fault at a time, against the real processes: a worker SIGKILLed mid-charge, a worker
//! SIGTERMed mid-charge, Stripe down for a while, Redis stopped and started again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tools::chaos::service_env;
use tools::stack::{Stack, StackConfig, default_bin_dir, free_port};

async fn stack(
    name: &str,
    workers: usize,
    faults: Value,
    extra: &[(&str, &str)],
    redis: Option<String>,
) -> Stack {
    let mut env = service_env();
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Stack::start(StackConfig {
        apis: 1,
        pooler_port: None,
        database_url: None,
        bin_dir: default_bin_dir(),
        log_dir: default_bin_dir().join(format!("fault-logs/{name}")),
        workers,
        sim_faults: faults,
        env,
        redis_url: redis,
        webhooks: false,
    })
    .await
    .expect("stack")
}

async fn pay(stack: &Stack, pm: &str) -> String {
    let res = reqwest::Client::new()
        .post(format!("{}/transactions", stack.api_url))
        .json(&json!({"price": "basic", "email": "f@example.com", "payment_method": pm}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn transaction(stack: &Stack, id: &str) -> Value {
    reqwest::get(format!("{}/transactions/{id}", stack.api_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_final(stack: &Stack, id: &str, within: Duration) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let t = transaction(stack, id).await;
        if t["state"] == "complete" || t["state"] == "failed" {
            return (t, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{id} not final after {within:?}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sim_requests(stack: &Stack) -> u64 {
    let stats: Value = reqwest::get(format!("{}/sim/stats", stack.sim_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["requests"].as_u64().unwrap()
}

async fn charges(stack: &Stack, id: &str) -> usize {
    let ledger: Value = reqwest::get(format!("{}/sim/ledger", stack.sim_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    ledger["charges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["transaction_id"] == id)
        .count()
}

async fn wait_for_sim_requests(stack: &Stack, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim_requests(stack).await < n {
        assert!(
            Instant::now() < deadline,
            "stripe-sim never saw {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_charge_has_its_job_finished_by_another_within_the_bound() {
    // Stripe takes 0.7 s to answer (inside the 1 s timeout), so the kill lands mid-charge.
    let mut s = stack("kill", 1, json!({"latency_ms": 700}), &[], None).await;
    let id = pay(&s, "pm_card_visa").await;
    wait_for_sim_requests(&s, 1).await;
    s.kill_worker(0).await.unwrap();
    let killed_at = Instant::now();
    s.start_worker().unwrap();
    let (t, _) = wait_final(&s, &id, Duration::from_secs(30)).await;
    let took = killed_at.elapsed();
    assert_eq!(t["state"], "complete", "{t}");
    assert_eq!(
        charges(&s, &id).await,
        1,
        "the re-run must not charge again"
    );
    // Bound: re-queue after heartbeat × missed (1.5 s) and the lease (2.5 s), plus apalis'
    // re-delivery backoff and the 0.7 s Stripe latency.
    assert!(took < Duration::from_secs(15), "re-run took {took:?}");
    s.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_charge_in_flight_finish_before_the_worker_exits() {
    let mut s = stack("term", 1, json!({"latency_ms": 700}), &[], None).await;
    let id = pay(&s, "pm_card_visa").await;
    wait_for_sim_requests(&s, 1).await;
    let status = s.terminate_worker(0).await.unwrap();
    assert!(status.success(), "worker exit: {status:?}");
    // No worker runs any more: the charge must have been recorded before the exit.
    let t = transaction(&s, &id).await;
    assert_eq!(t["state"], "complete", "{t}");
    assert_eq!(charges(&s, &id).await, 1);
    s.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn while_stripe_is_down_the_breaker_holds_jobs_back_and_they_drain_when_it_returns() {
    // One charge at a time, so the calls the breaker sees are sequential.
    let env = [
        ("STRIPE_BREAKER_THRESHOLD", "3"),
        ("STRIPE_BREAKER_COOLDOWN_MS", "1000"),
        ("WORKER_CONCURRENCY", "1"),
    ];
    let mut s = stack("outage", 1, json!({"error_500_before": 1.0}), &env, None).await;
    // Without a breaker the first 6 calls go out within milliseconds of each other. With it,
    // 3 failures open it, and each further call is a lone probe a cooldown (1 s) apart: 6 calls
    // take at least 3 s from the first, which comes after the first payment is sent.
    let outage = Instant::now();
    let mut ids = vec![];
    for _ in 0..30 {
        ids.push(pay(&s, "pm_card_visa").await);
    }
    wait_for_sim_requests(&s, 6).await;
    let took = outage.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "6 calls within {took:?}: the breaker did not hold back"
    );

    s.set_sim_faults(&json!({})).await.unwrap();
    for id in &ids {
        let (t, _) = wait_final(&s, id, Duration::from_secs(60)).await;
        assert_eq!(t["state"], "complete", "{t}");
        assert_eq!(charges(&s, id).await, 1);
    }
    assert_eq!(s.workers_exited(), 0);
    s.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn payments_taken_while_redis_is_down_complete_once_it_is_back() {
    let port = free_port().unwrap();
    let start_redis = || {
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server")
    };
    let mut redis = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "private redis did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = stack("redis-down", 2, json!({}), &[], Some(url.clone())).await;
    let before = pay(&s, "pm_card_visa").await;
    wait_final(&s, &before, Duration::from_secs(20)).await;

    redis.kill().unwrap();
    redis.wait().unwrap();
    // Postgres still records payments: the api accepts them; their jobs cannot be pushed.
    let mut during = vec![];
    for _ in 0..5 {
        during.push(pay(&s, "pm_card_visa").await);
    }
    let mut redis = start_redis();
    for id in &during {
        // The sweeper re-enqueues them (SWEEP_AFTER_MS = 4 s in these tests).
        let (t, _) = wait_final(&s, id, Duration::from_secs(60)).await;
        assert_eq!(t["state"], "complete", "{t}");
        assert_eq!(charges(&s, id).await, 1);
    }
    assert_eq!(
        s.workers_exited(),
        0,
        "workers must reconnect by themselves"
    );
    s.teardown().await.unwrap();
    redis.kill().unwrap();
    redis.wait().unwrap();
}
