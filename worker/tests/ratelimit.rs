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

/// At the limit, what customers wait on goes first: background calls (3-D Secure re-checks,
/// cancels, the reconciler) asked while customers' calls fill the window get a place only once
/// those have left room, and never push the window over the limit.
#[tokio::test(flavor = "multi_thread")]
async fn background_calls_wait_while_customers_use_the_budget() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let (_, url) = shared::testing::base_urls();
    let namespace = format!("test:{}", uuid::Uuid::new_v4().simple());
    let limiter = RateLimiter::new(
        shared::queue::redis_connection(&url, None).unwrap(),
        &namespace,
        10,
    );
    let start = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let call = |priority| {
        let (limiter, done) = (limiter.clone(), done.clone());
        async move {
            limiter.acquire(priority).await;
            done.fetch_add(1, Ordering::SeqCst);
            start.elapsed()
        }
    };
    // 30 customers' calls at 10/s: three full windows, customers asking for more than the
    // budget the whole time.
    let customers = tokio::spawn(futures::future::join_all(
        (0..25)
            .map(|_| call(Priority::Customer))
            .collect::<Vec<_>>(),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while done.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "the first window never filled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let background = futures::future::join_all((0..5).map(|_| call(Priority::Background))).await;
    let customers = customers.await.unwrap();
    let last_customer = customers.iter().max().unwrap();
    assert!(
        background.iter().all(|t| t > last_customer),
        "background went before customers: {background:?} vs last customer {last_customer:?}"
    );
    let all: Vec<Duration> = customers.iter().chain(&background).copied().collect();
    assert!(busiest(&all, Duration::from_millis(950)) <= 10, "{all:?}");
    shared::testing::remove_namespace(&url, &namespace).await;
}
