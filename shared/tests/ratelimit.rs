//! The shared limits on a real Redis: GCRA gives a burst, then the rate, per key, counted alike
//! by every connection (every process); the sliding window's behaviour under load is tested
//! with the Stripe limiter that uses it (worker/tests/ratelimit.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shared::ratelimit::{Decision, Gcra, SlidingWindow};

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn gcra_allows_the_burst_then_one_per_interval_across_connections() {
    let (_, url) = shared::testing::base_urls();
    let ns = format!("test:{}", uuid::Uuid::new_v4().simple());
    let (mut a, mut b) = (conn(&url).await, conn(&url).await);
    // 3 a minute, all 3 at once: one every 20 s after that.
    let gcra = Gcra::new(3, Duration::from_secs(60), 3);
    let key = format!("{ns}:client");
    for i in 0..3 {
        let c = if i == 1 { &mut b } else { &mut a };
        assert_eq!(gcra.check(c, &key).await.unwrap(), Decision::Allowed);
    }
    match gcra.check(&mut b, &key).await.unwrap() {
        Decision::Wait(w) => assert!(
            w > Duration::from_secs(19) && w <= Duration::from_secs(20),
            "{w:?}"
        ),
        Decision::Allowed => panic!("a fourth request in the same minute was allowed"),
    }
    // A refused request does not use anything up: the wait stays what it was.
    assert!(matches!(
        gcra.check(&mut a, &key).await.unwrap(),
        Decision::Wait(_)
    ));
    // Another key has its own count.
    let other = format!("{ns}:other");
    assert_eq!(gcra.check(&mut a, &other).await.unwrap(), Decision::Allowed);
    // The key expires once it no longer holds anything back.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut a)
        .await
        .unwrap();
    assert!((59_000..=61_000).contains(&ttl), "{ttl}");
    shared::testing::remove_namespace(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_gcra_lets_a_request_through_once_its_interval_has_passed() {
    let (_, url) = shared::testing::base_urls();
    let ns = format!("test:{}", uuid::Uuid::new_v4().simple());
    let mut c = conn(&url).await;
    let gcra = Gcra::new(10, Duration::from_secs(1), 1);
    let key = format!("{ns}:fast");
    assert_eq!(gcra.check(&mut c, &key).await.unwrap(), Decision::Allowed);
    let Decision::Wait(wait) = gcra.check(&mut c, &key).await.unwrap() else {
        panic!("a second request within 100 ms was allowed");
    };
    tokio::time::sleep(wait).await;
    assert_eq!(gcra.check(&mut c, &key).await.unwrap(), Decision::Allowed);
    shared::testing::remove_namespace(&url, &ns).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sliding_window_says_when_the_oldest_call_leaves() {
    let (_, url) = shared::testing::base_urls();
    let ns = format!("test:{}", uuid::Uuid::new_v4().simple());
    let mut c = conn(&url).await;
    let window = SlidingWindow {
        window: Duration::from_secs(1),
    };
    let key = format!("{ns}:window");
    for _ in 0..4 {
        assert_eq!(
            window.take(&mut c, &key, 4).await.unwrap(),
            Decision::Allowed
        );
    }
    let Decision::Wait(full) = window.take(&mut c, &key, 4).await.unwrap() else {
        panic!("a fifth call within the window was allowed");
    };
    assert!(full <= Duration::from_secs(1), "{full:?}");
    // A caller limited to half waits for more of the window to clear than one with the whole.
    let Decision::Wait(half) = window.take(&mut c, &key, 2).await.unwrap() else {
        panic!("a half-limit call over half was allowed");
    };
    assert!(half >= full, "{half:?} < {full:?}");
    tokio::time::sleep(full).await;
    assert_eq!(
        window.take(&mut c, &key, 4).await.unwrap(),
        Decision::Allowed
    );
    shared::testing::remove_namespace(&url, &ns).await;
}
