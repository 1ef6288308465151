//! Finished jobs leave Redis by themselves: the worker deletes those done longer ago than
//! `DONE_JOB_RETENTION_MS`, and not before; counted on its `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::TestApp;
use shared::queue::keys::Keys;
use tokio::time::Instant;

async fn done_jobs(app: &TestApp) -> (usize, usize) {
    let client = redis::Client::open(app.settings.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Keys::new(&app.settings.queue_namespace);
    let done: usize = redis::cmd("SCARD")
        .arg(keys.done())
        .query_async(&mut conn)
        .await
        .unwrap();
    (done, app.jobs_pushed().await)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_purges_finished_jobs_once_they_are_old_enough() {
    let app = TestApp::spawn_configured(true, |s| {
        s.worker.done_retention = Duration::from_secs(3);
        s.worker.done_purge_interval = Duration::from_millis(200);
    })
    .await;
    let ids = app.pay_many(3).await;
    for id in &ids {
        app.wait_for_state(id, &["complete"], Duration::from_secs(20))
            .await;
    }
    // Done, and younger than the retention: kept, although purges run every 200 ms.
    let deadline = Instant::now() + Duration::from_secs(10);
    while done_jobs(&app).await.0 < 3 {
        assert!(Instant::now() < deadline, "the jobs never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await; // three purges that must not delete
    assert_eq!(done_jobs(&app).await, (3, 3), "purged before their time");

    // Past the retention: gone, data and all.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (done, data) = done_jobs(&app).await;
        if done == 0 && data == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still {done} done, {data} data");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        finished.elapsed() >= Duration::from_secs(2),
        "purged too early"
    );
    let addr = app.settings.worker.metrics_addr.unwrap();
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let purged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("payments_queue_done_purged_total "))
        .expect("the purge counter")
        .trim()
        .parse()
        .unwrap();
    assert!(purged >= 3.0, "{purged}");
    // The payments themselves are untouched.
    for id in &ids {
        assert_eq!(
            app.get(&format!("/transactions/{id}")).await.1["state"],
            "complete"
        );
    }
}
