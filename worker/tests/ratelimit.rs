//! The Stripe rate limit is one budget for every worker process: limiters that share a Redis
//! namespace never let more than the limit through in any one-second window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use worker::stripe::ratelimit::{Priority, RateLimiter};

#[tokio::test(flavor = "multi_thread")]
async fn limiters_in_different_processes_share_one_budget() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("test:{}", uuid::Uuid::new_v4().simple());
    // Two limiters on two connections stand for two worker processes.
    let a = RateLimiter::new(
        shared::queue::redis_connection(&url).unwrap(),
        &namespace,
        5,
    );
    let b = RateLimiter::new(
        shared::queue::redis_connection(&url).unwrap(),
        &namespace,
        5,
    );
    let calls = (0..24).map(|i| {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            limiter.acquire(Priority::Customer).await;
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
        }
    });
    let seconds = futures::future::join_all(calls).await;
    let mut per_second: HashMap<u64, usize> = HashMap::new();
    for s in seconds {
        *per_second.entry(s).or_default() += 1;
    }
    assert!(
        per_second.values().all(|n| *n <= 5),
        "over budget: {per_second:?}"
    );
    assert!(
        per_second.len() >= 5,
        "24 calls at 5/s need at least 5 windows: {per_second:?}"
    );

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{namespace}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}
