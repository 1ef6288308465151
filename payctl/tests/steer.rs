//! The commands that change the queue: `retry` and `purge-done`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Behaviour, Env, task_ids, text};
use redis::AsyncCommands;

/// Payments whose jobs the aborting consumer sends to the dead set; returns the task ids.
async fn dead_jobs(env: &mut Env, n: usize) -> Vec<(String, uuid::Uuid)> {
    let mut txns = Vec::new();
    for _ in 0..n {
        txns.push(env.pay().await);
    }
    let killer = env.start_test_worker(Behaviour::Abort);
    let dead = env
        .wait_json(&["dead"], "the dead jobs", |v| v["total"] == n)
        .await;
    env.stop_worker(&killer).await;
    dead["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let txn = j["transaction_id"].as_str().unwrap().parse().unwrap();
            (j["task_id"].as_str().unwrap().to_owned(), txn)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_puts_a_dead_job_back_and_the_worker_then_completes_the_payment() {
    let mut env = Env::new().await;
    let (task, txn) = dead_jobs(&mut env, 1).await.remove(0);

    let report = env.payctl_json(&["retry", &task]).await;
    assert_eq!(report["retried"][0]["task_id"], task.as_str());
    assert_eq!(report["retried"][0]["transaction_id"], txn.to_string());
    assert_eq!(report["retried"][0]["transaction_rescheduled"], true);
    assert_eq!(report["failed"].as_array().unwrap().len(), 0);

    let stats = env.payctl_json(&["stats"]).await;
    assert_eq!(
        (stats["dead"].as_u64(), stats["scheduled"].as_u64()),
        (Some(0), Some(1))
    );
    let shown = env.payctl_json(&["show", &task]).await;
    let job = &shown["jobs"][0];
    assert_eq!(job["state"], "scheduled");
    assert_eq!(job["status"], "Pending");
    assert_eq!(job["attempts"], 0);
    assert!(job["locked_by"].is_null());

    env.start_real_worker().await;
    env.wait_for_state(txn, "complete").await;
    env.wait_json(&["list", "--state", "done"], "the retried job done", |v| {
        task_ids(v).contains(&task)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_all_dead_moves_every_dead_job_back() {
    let mut env = Env::new().await;
    let dead = dead_jobs(&mut env, 3).await;

    let out = env.payctl(&["retry", "--all-dead"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("retried: 3, could not retry: 0"),
        "{}",
        text(&out.stdout)
    );
    let scheduled = env.payctl_json(&["list", "--state", "scheduled"]).await;
    let mut moved = task_ids(&scheduled);
    moved.sort();
    let mut expected: Vec<String> = dead.iter().map(|(t, _)| t.clone()).collect();
    expected.sort();
    assert_eq!(moved, expected);
    assert_eq!(env.payctl_json(&["dead"]).await["total"], 0);

    // Nothing dead: nothing to do, and that is not an error.
    let again = env.payctl_json(&["retry", "--all-dead"]).await;
    assert_eq!(again["retried"].as_array().unwrap().len(), 0);

    env.start_real_worker().await;
    for (_, txn) in &dead {
        env.wait_for_state(*txn, "complete").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_refuses_unknown_ids_and_jobs_that_are_not_dead() {
    let env = Env::new().await;
    let txn = env.insert_transaction().await;
    env.enqueue(txn, Some(Duration::from_secs(3600))).await;
    let scheduled = task_ids(&env.payctl_json(&["list", "--state", "scheduled"]).await).remove(0);

    let out = env.payctl(&["retry", &scheduled]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is scheduled, not dead"), "{err}");

    let out = env.payctl(&["retry", "01JNOTATASK0000000000000000"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no task `01JNOTATASK0000000000000000`"));

    // Refusing changed nothing.
    let shown = env.payctl_json(&["show", &scheduled]).await;
    assert_eq!(shown["jobs"][0]["state"], "scheduled");
}

/// Whether the task is in the done set, has a payload, has a meta hash.
async fn stored(
    redis: &mut redis::aio::MultiplexedConnection,
    q: &str,
    task: &str,
) -> (bool, bool, bool) {
    redis::pipe()
        .sismember(format!("{q}:done"), task)
        .hexists(format!("{q}:data"), task)
        .exists(format!("{q}:meta:{task}"))
        .query_async(redis)
        .await
        .unwrap()
}

/// Two payments the real worker completed; the task ids of their (done) jobs.
async fn two_done_jobs(env: &mut Env) -> (String, String) {
    let txns = [env.pay().await, env.pay().await];
    env.start_real_worker().await;
    for txn in txns {
        env.wait_for_state(txn, "complete").await;
    }
    let done = env
        .wait_json(&["list", "--state", "done"], "two done jobs", |v| {
            v["total"] == 2
        })
        .await;
    env.stop_all_workers().await;
    let task_of = |txn: uuid::Uuid| {
        let jobs = done["jobs"].as_array().unwrap();
        let job = jobs.iter().find(|j| j["transaction_id"] == txn.to_string());
        job.unwrap()["task_id"].as_str().unwrap().to_owned()
    };
    (task_of(txns[0]), task_of(txns[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_done_deletes_only_done_jobs_finished_before_the_threshold() {
    let mut env = Env::new().await;
    let (old_task, new_task) = two_done_jobs(&mut env).await;
    let waiting = env.insert_transaction().await;
    env.enqueue(waiting, Some(Duration::from_secs(3600))).await;

    // apalis stamps `done_at` with the second the result was stored; no test waits two hours,
    // so the one field is moved back by hand.
    let q = env.queue_name();
    let mut redis = env.redis().await;
    let two_hours_ago = chrono::Utc::now().timestamp() - 7200;
    let _: () = redis
        .hset(format!("{q}:meta:{old_task}"), "done_at", two_hours_ago)
        .await
        .unwrap();

    let dry = env
        .payctl_json(&["purge-done", "--older-than", "1h", "--dry-run"])
        .await;
    assert_eq!(
        (dry["purged"].as_u64(), dry["scanned"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(env.payctl_json(&["stats"]).await["done"], 2);

    let out = env.payctl(&["purge-done", "--older-than", "1h"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("purged 1 of 2 done jobs"),
        "{}",
        text(&out.stdout)
    );

    assert_eq!(
        stored(&mut redis, &q, &old_task).await,
        (false, false, false)
    );
    assert_eq!(stored(&mut redis, &q, &new_task).await, (true, true, true));
    let stats = env.payctl_json(&["stats"]).await;
    assert_eq!(
        (stats["done"].as_u64(), stats["scheduled"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(stats["stored"], 2);

    let again = env.payctl_json(&["purge-done", "--older-than", "1h"]).await;
    assert_eq!(again["purged"], 0);
}
