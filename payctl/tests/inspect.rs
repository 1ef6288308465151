//! The read-only commands against a real queue: `stats`, `list`, `dead`, `show`, and what
//! bad input gets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Behaviour, Env, assert_contains, task_ids, text};
use serde_json::Value;

const HOUR: Option<Duration> = Some(Duration::from_secs(3600));

fn worker<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("worker {name} not in {stats:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_counts_every_place_of_the_queue_the_workers_and_the_payments() {
    let mut env = Env::new().await;
    env.pay().await;
    let killer = env.start_test_worker(Behaviour::Abort);
    env.wait_json(&["stats"], "a dead job", |v| v["dead"] == 1)
        .await;
    env.stop_worker(&killer).await;

    let later = env.insert_transaction().await;
    env.enqueue(later, HOUR).await;
    for _ in 0..3 {
        env.pay().await;
    }
    // Its first fetch promotes the three due jobs to `active` and takes one of them.
    let holder = env.start_test_worker(Behaviour::Hold);
    let stats = env
        .wait_json(&["stats"], "a job in flight", |v| v["inflight"] == 1)
        .await;
    assert_eq!(stats["queue"], env.queue_name());
    assert_eq!(stats["scheduled"], 1, "{stats:#}");
    assert_eq!(stats["scheduled_due"], 0);
    assert_eq!(stats["active"], 2, "{stats:#}");
    assert_eq!(stats["done"], 0);
    assert_eq!(stats["dead"], 1);
    assert_eq!(stats["stored"], 5);
    assert_eq!(worker(&stats, &holder)["inflight"], 1);
    assert_eq!(worker(&stats, &holder)["presumed_dead"], false);
    assert_eq!(stats["transactions"]["pending"], 5);
    assert_eq!(stats["transactions"]["complete"], 0);

    // A cleanly stopped worker stays registered with its last heartbeat; once that is older
    // than heartbeat × missed (1.5 s here) it is reported as presumed dead. (While any worker
    // lives, apalis soon drops a dead one from the set as it re-queues its jobs: that is why
    // this is checked with every worker stopped.)
    let human_while_alive = text(&env.payctl(&["stats"]).await.stdout);
    env.stop_all_workers().await;
    let stats = env
        .wait_json(&["stats"], "the stopped worker presumed dead", |v| {
            worker(v, &holder)["presumed_dead"] == true
        })
        .await;
    assert!(worker(&stats, &holder)["age_secs"].as_i64().unwrap() >= 2);

    let out = env.payctl(&["stats"]).await;
    assert!(out.status.success());
    let human = text(&out.stdout);
    assert_contains(
        &human,
        &["queue ", "in flight", "presumed dead", &holder, "pending"],
    );
    assert_contains(&human_while_alive, &["WORKER", "LAST HEARTBEAT", "alive"]);
}

/// One payment whose job the aborting consumer sent to the dead set: its task id and its id.
async fn one_dead_job(env: &mut Env) -> (String, uuid::Uuid) {
    let txn = env.pay().await;
    let killer = env.start_test_worker(Behaviour::Abort);
    let dead = env
        .wait_json(&["dead"], "a dead job", |v| v["total"] == 1)
        .await;
    env.stop_worker(&killer).await;
    (task_ids(&dead).remove(0), txn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lists_each_dead_job_with_its_last_error_and_its_payments_state() {
    let mut env = Env::new().await;
    let (task, txn) = one_dead_job(&mut env).await;
    let dead = env.payctl_json(&["dead"]).await;
    let job = &dead["jobs"][0];
    assert_eq!(job["task_id"], task.as_str());
    assert_eq!(job["state"], "dead");
    assert_eq!(job["transaction_id"], txn.to_string());
    assert_eq!(job["status"], "Killed");
    assert_eq!(job["attempts"], 1);
    let error = job["error"].as_str().unwrap();
    assert!(error.contains("aborted on purpose"), "{job}");
    assert_eq!(job["transaction_state"], "pending");
    assert!(job["done_at"].is_string());

    let out = env.payctl(&["dead"]).await;
    assert!(out.status.success());
    let human = text(&out.stdout);
    assert!(human.starts_with("dead jobs: 1 (showing 1)"), "{human}");
    let columns = [
        "TASK",
        "TRANSACTION",
        "ATTEMPTS",
        "STATUS",
        "LAST RESULT",
        "TX STATE",
    ];
    assert_contains(&human, &columns);
    assert_contains(&human, &[&task, "Killed", "aborted on purpose"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_jobs_scheduled_in_flight_and_done() {
    let mut env = Env::new().await;
    let later = env.insert_transaction().await;
    env.enqueue(later, HOUR).await;
    let scheduled = env.payctl_json(&["list", "--state", "scheduled"]).await;
    assert_eq!(scheduled["total"], 1);
    assert_eq!(scheduled["jobs"][0]["transaction_id"], later.to_string());
    assert_eq!(scheduled["jobs"][0]["status"], "Pending");
    assert!(scheduled["jobs"][0]["run_at"].is_string());

    let held = env.pay().await;
    let holder = env.start_test_worker(Behaviour::Hold);
    let inflight = env
        .wait_json(&["list", "--state", "inflight"], "a job in flight", |v| {
            v["total"] == 1
        })
        .await;
    let job = &inflight["jobs"][0];
    assert_eq!(job["transaction_id"], held.to_string());
    assert_eq!(job["worker"], holder.as_str());
    assert_eq!(job["status"], "Running");
    assert_eq!(
        env.payctl_json(&["list", "--state", "active"]).await["total"],
        0
    );

    env.release_held();
    let done = env
        .wait_json(&["list", "--state", "done"], "a done job", |v| {
            v["total"] == 1
        })
        .await;
    assert_eq!(done["jobs"][0]["status"], "Done");
    assert_eq!(done["jobs"][0]["transaction_id"], held.to_string());

    // With no worker left to take them, --limit bounds the listing, not the total.
    env.stop_all_workers().await;
    env.pay().await;
    env.pay().await;
    let limited = env
        .payctl_json(&["list", "--state", "scheduled", "--limit", "2"])
        .await;
    assert_eq!(limited["total"], 3);
    assert_eq!(task_ids(&limited).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_finds_a_job_by_task_id_and_every_job_of_a_transaction_by_its_id() {
    let mut env = Env::new().await;
    let (dead_task, txn) = one_dead_job(&mut env).await;
    // A second job for the same payment, as the sweeper or a retry would push.
    env.enqueue(txn, HOUR).await;
    let other = env.pay().await;

    let by_task = env.payctl_json(&["show", &dead_task]).await;
    assert_eq!(by_task["found_by"], "task");
    assert_eq!(by_task["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(by_task["jobs"][0]["state"], "dead");
    assert_eq!(by_task["transaction"]["id"], txn.to_string());
    assert_eq!(by_task["transaction"]["state"], "pending");
    assert!(by_task["transaction"].get("client_secret").is_none());

    let by_txn = env.payctl_json(&["show", &txn.to_string()]).await;
    assert_eq!(by_txn["found_by"], "transaction");
    assert_eq!(by_txn["transaction"]["id"], txn.to_string());
    let mut states: Vec<&str> = by_txn["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    states.sort();
    assert_eq!(states, ["dead", "scheduled"], "{by_txn:#}");
    assert!(
        by_txn["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["transaction_id"] == txn.to_string())
    );
    let by_other = env.payctl_json(&["show", &other.to_string()]).await;
    assert_eq!(by_other["jobs"].as_array().unwrap().len(), 1);

    let out = env.payctl(&["show", &dead_task]).await;
    assert!(out.status.success());
    let human = text(&out.stdout);
    let first = human.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("job {dead_task}"))
            && first.contains(&format!("transaction {txn}")),
        "not side by side:\n{human}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_one_clear_line_and_exit_code_1_or_2_for_usage() {
    let env = Env::new().await;
    let unknown_txn = uuid::Uuid::new_v4().to_string();
    // 1: the command ran and failed; 2: the command line did not parse.
    let cases: [(&[&str], &str, i32); 11] = [
        (
            &["show", "01NOSUCHTASK"],
            "no transaction or task with id `01NOSUCHTASK`",
            1,
        ),
        (&["show", &unknown_txn], "no transaction or task with id", 1),
        (&["show", "has space"], "is not a task id", 1),
        (
            &["retry", "01NOSUCHTASK"],
            "no task `01NOSUCHTASK` in queue",
            1,
        ),
        (&["purge-done", "--older-than", "5x"], "unknown unit `x`", 2),
        (&["stuck", "--older-than", "soon"], "is not a duration", 2),
        (&["purge-done"], "--older-than", 2),
        (&["list", "--state", "lost"], "invalid value 'lost'", 2),
        (&["dead", "--limit", "0"], "--limit", 2),
        (&["stats", "--jsn"], "unexpected argument '--jsn'", 2),
        (&["no-such-command"], "unrecognized subcommand", 2),
    ];
    for (args, expected, code) in cases {
        let out = env.payctl(args).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "payctl {args:?}: {err}");
        assert!(err.contains(expected), "payctl {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "payctl {args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    let out = env.payctl(&["--help"]).await;
    assert!(out.status.success());
    for command in [
        "stats",
        "dead",
        "list",
        "retry",
        "show",
        "stuck",
        "purge-done",
    ] {
        assert!(
            text(&out.stdout).contains(command),
            "{command} missing from --help"
        );
    }
}

#[tokio::test]
async fn settings_are_checked_as_the_services_check_them() {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payctl"));
    cmd.env_clear()
        .env("QUEUE_NAMESPACE", "bad ns!")
        .arg("stats");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: invalid configuration: QUEUE_NAMESPACE"),
        "{err}"
    );

    // Nothing listens on port 1: a clear line, not a hang or a panic.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payctl"));
    cmd.env_clear()
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .arg("stats");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: cannot connect to Redis (REDIS_URL)"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_still_shows_the_queue_when_postgres_cannot_be_read() {
    let env = Env::new().await;
    env.enqueue(uuid::Uuid::new_v4(), HOUR).await;
    let s = &env.settings;
    let missing = s.database_url.replace("/test_", "/missing_");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payctl"));
    cmd.env_clear()
        .env("DATABASE_URL", missing)
        .env("REDIS_URL", &s.redis_url)
        .env("QUEUE_NAMESPACE", &s.queue_namespace)
        .args(["stats", "--json"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["scheduled"], 1);
    assert!(stats["transactions"].is_null());
    let why = stats["transactions_error"].as_str().unwrap();
    assert!(why.contains("cannot connect to Postgres"), "{why}");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: transactions could not be counted"),
        "{err}"
    );
}
