//! Test harness: each test gets its own Postgres database and its own queue namespace in
//! Redis, real apalis consumers to move jobs around, and the built `payctl` binary to look
//! at the result. Everything is stopped and removed when the `Env` is dropped, even after a
//! failed assertion.
//!
//! Two kinds of consumer build the Redis state, so every key is written by apalis' own Lua
//! scripts, never by hand:
//! - the real worker (`worker::startup::Application`, against a stripe-sim) for jobs that complete;
//! - a bare apalis worker on the same queue whose handler aborts (the real worker never
//!   aborts, and reaching `dead` through apalis' own retries takes 25 failures and about five
//!   minutes of backoff) or holds the job until released (a job in flight, deterministically).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod consumers;

use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::Value;
use shared::models::NewTransaction;
use shared::queue::{ChargeQueue, redis_connection};
use shared::settings::Settings;
use shared::testing::Scratch;
use stripe_sim::RunningSim;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(20);

struct Running {
    name: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub struct Env {
    pub settings: Settings,
    scratch: Scratch,
    sim: Option<RunningSim>,
    running: Vec<Running>,
    /// Released when the Env goes: no held job outlives its test.
    gate: Arc<Semaphore>,
}

/// What a bare apalis consumer does with each job it fetches.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// `AbortError`: apalis marks the job Killed and moves it to the dead set.
    Abort,
    /// Keeps the job in flight until [`Env::release_held`].
    Hold,
}

impl Env {
    pub async fn new() -> Self {
        let scratch = Scratch::create().await;

        let mut settings = Settings::from_env().expect("settings");
        settings.database_url = scratch.database_url.clone();
        // Pools open every connection at start; tests run side by side on one Postgres.
        settings.database_pool_size = Some(4);
        settings.redis_url = scratch.redis_url.clone();
        settings.queue_namespace = scratch.namespace.clone();
        settings.stripe.secret_key = Some(shared::secret::Secret::new("sk_test_payctl"));
        settings.stripe.timeout = Duration::from_secs(2);
        settings.worker.lease = Duration::from_secs(4);
        settings.worker.poll_interval = Duration::from_millis(50);
        settings.worker.heartbeat = Duration::from_millis(500);
        settings.worker.missed_heartbeats = 3;
        settings.worker.retry.base_delay = Duration::from_millis(100);
        settings.worker.retry.max_delay = Duration::from_millis(500);
        // The tests decide when a payment looks lost; the sweeper must not step in.
        settings.worker.sweep_interval = Duration::from_secs(3600);
        settings.worker.sweep_after = Duration::from_secs(3600);
        settings.worker.shutdown_timeout = Duration::from_secs(5);
        Env {
            settings,
            scratch,
            sim: None,
            running: Vec::new(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    pub fn queue_name(&self) -> String {
        self.settings.charge_queue()
    }

    pub async fn db(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.settings.database_url)
            .await
            .unwrap()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.settings.redis_url.as_str()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    /// Records a pending transaction the way the api does (and enqueues nothing).
    pub async fn insert_transaction(&self) -> Uuid {
        let id = Uuid::new_v4();
        let new = NewTransaction {
            id,
            amount: 1000,
            currency: "usd".into(),
            email: "buyer@example.com".into(),
            price: Some("basic".into()),
            payment_method: "pm_card_visa".into(),
            stripe_idempotency_key: NewTransaction::stripe_key_for(id),
            request_key: None,
            request_fingerprint: None,
            reference: None,
            metadata: serde_json::json!({}),
            session_id: None,
        };
        shared::transactions::insert(&mut self.db().await, &new)
            .await
            .unwrap();
        id
    }

    /// Pushes a charge job with the producer the api and the worker use.
    pub async fn enqueue(&self, transaction_id: Uuid, delay: Option<Duration>) {
        let conn = redis_connection(&self.settings.redis_url, None).unwrap();
        ChargeQueue::new(conn, &self.settings.queue_namespace)
            .enqueue(transaction_id, delay)
            .await
            .unwrap();
    }

    /// A transaction and its job, due now: what `POST /transactions` leaves behind.
    pub async fn pay(&self) -> Uuid {
        let id = self.insert_transaction().await;
        self.enqueue(id, None).await;
        id
    }

    /// Runs the built binary with this test's environment only.
    pub async fn payctl(&self, args: &[&str]) -> Output {
        let s = &self.settings;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_payctl"));
        cmd.env_clear()
            .env("DATABASE_URL", &s.database_url)
            .env("REDIS_URL", &s.redis_url)
            .env("QUEUE_NAMESPACE", &s.queue_namespace)
            .env(
                "WORKER_HEARTBEAT_MS",
                s.worker.heartbeat.as_millis().to_string(),
            )
            .env(
                "WORKER_MISSED_HEARTBEATS",
                s.worker.missed_heartbeats.to_string(),
            )
            // For `payctl reconcile`: the test's stripe-sim, when one runs.
            .env("STRIPE_API_BASE", &s.stripe.api_base)
            .env("STRIPE_SECRET_KEY", "sk_test_payctl_reconcile")
            .args(args);
        // The binary blocks only this blocking-pool thread, never the runtime's workers.
        tokio::task::spawn_blocking(move || cmd.output().expect("run payctl"))
            .await
            .unwrap()
    }

    /// Runs `payctl <args> --json`, expects success, returns the parsed output.
    pub async fn payctl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.payctl(&all).await;
        assert!(
            out.status.success(),
            "payctl {args:?} failed: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("payctl {args:?}: not JSON ({e}): {}", text(&out.stdout)))
    }

    /// Polls `payctl <args> --json` until `check` accepts the output, or panics after WAIT.
    pub async fn wait_json(
        &self,
        args: &[&str],
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.payctl_json(args).await;
            if check(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "never saw {what}: {v:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the transaction's state in Postgres until it is `state`.
    pub async fn wait_for_state(&self, id: Uuid, state: &str) {
        let deadline = Instant::now() + WAIT;
        let mut conn = self.db().await;
        loop {
            let t = shared::transactions::find(&mut conn, id).await.unwrap();
            if t.as_ref().is_some_and(|t| t.state == state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "transaction {id} never became {state}: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Fails unless `haystack` contains every one of `expected`.
pub fn assert_contains(haystack: &str, expected: &[&str]) {
    for e in expected {
        assert!(haystack.contains(e), "no `{e}` in:\n{haystack}");
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The task ids of a `list`/`dead` JSON output.
pub fn task_ids(list: &Value) -> Vec<String> {
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["task_id"].as_str().unwrap().to_owned())
        .collect()
}

impl Drop for Env {
    fn drop(&mut self) {
        self.gate.close();
        let mut tasks = Vec::new();
        for r in self.running.drain(..) {
            let _ = r.stop.send(());
            tasks.push(r.task);
        }
        self.sim.take();
        // The consumers are waited for first, so none writes a key after the keys are deleted;
        // meanwhile the test runtime keeps running them.
        self.scratch.remove_blocking(async move {
            for t in tasks {
                if tokio::time::timeout(WAIT, t).await.is_err() {
                    eprintln!("a test worker did not stop in time");
                }
            }
        });
    }
}
