//! The Stripe rate limit is one budget for every worker process: limiters that share a Redis
//! namespace never let more than the limit through in any one-second window, wherever that
//! window starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use worker::stripe::ratelimit::{Priority, RateLimiter};

/// The most calls any window of `len` holds.
fn busiest(times: &[Duration], len: Duration) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| **t < sorted[i] + len)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn limiters_in_different_processes_share_one_budget_over_any_second() {
    let (_, url) = shared::testing::base_urls();
    let namespace = format!("test:{}", uuid::Uuid::new_v4().simple());
    // Two limiters on two connections stand for two worker processes.
    let limiter = || {
        RateLimiter::new(
            shared::queue::redis_connection(&url, None).unwrap(),
            &namespace,
            5,
        )
    };
    let (a, b) = (limiter(), limiter());
    let start = Instant::now();
    let calls = (0..24).map(|i| {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            limiter.acquire(Priority::Customer).await;
            start.elapsed()
        }
    });
    let times = futures::future::join_all(calls).await;
    // A little slack for the time between Redis' decision and ours seeing it; a fixed window
    // lets 10 through across an edge, well inside this.
    let busiest_second = busiest(&times, Duration::from_millis(950));
    assert!(
        busiest_second <= 5,
        "over budget: {busiest_second} in a second: {times:?}"
    );
    // 24 calls at 5/s: the first 5 at once, then 5 per second.
    let last = times.iter().max().unwrap();
    assert!(*last >= Duration::from_millis(3_800), "too fast: {times:?}");

    // Background calls get half the budget while customers are idle.
    let before = Instant::now();
    let background = (0..6).map(|_| {
        let a = a.clone();
        async move {
            a.acquire(Priority::Background).await;
            before.elapsed()
        }
    });
    let times = futures::future::join_all(background).await;
    let busiest_second = busiest(&times, Duration::from_millis(950));
    assert!(busiest_second <= 2, "background over half: {times:?}");

    shared::testing::remove_namespace(&url, &namespace).await;
}
