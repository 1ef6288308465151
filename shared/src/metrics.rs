//! Prometheus metrics shared by both binaries: one process-wide recorder, rendered by each
//! binary's `/metrics`, and the gauges that are computed when scraped (queue depths from Redis,
//! payments per state from Postgres). Names follow Prometheus conventions (`_total`,
//! `_seconds`); docs/operations.md says what each one means.

use std::sync::OnceLock;

use apalis_redis::ConnectionManager;
use diesel_async::AsyncPgConnection;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::queue::queue_config;

/// Latency buckets, in seconds, from 1 ms (an api request) to 30 s (a slow Stripe call).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use. `None` only if another recorder was
/// installed first (then this process exports nothing rather than failing).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Job counts per queue state, read with cheap O(1) commands (plus a SCAN of the in-flight
/// sets, one per live worker).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepths {
    pub scheduled: u64,
    pub active: u64,
    pub inflight: u64,
    pub done: u64,
    pub dead: u64,
    pub workers: u64,
}

pub async fn queue_depths(
    conn: &ConnectionManager,
    namespace: &str,
) -> redis::RedisResult<QueueDepths> {
    let config = queue_config(namespace);
    let mut conn = conn.clone();
    let (scheduled, active, done, dead, workers): (u64, u64, u64, u64, u64) = redis::pipe()
        .cmd("ZCARD")
        .arg(config.scheduled_jobs_set())
        .cmd("LLEN")
        .arg(config.active_jobs_list())
        .cmd("SCARD")
        .arg(config.done_jobs_set())
        .cmd("SCARD")
        .arg(config.dead_jobs_set())
        .cmd("ZCARD")
        .arg(config.workers_set())
        .query_async(&mut conn)
        .await?;
    let mut inflight = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}:*", config.inflight_jobs_set()))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        for key in keys {
            inflight += redis::cmd("SCARD")
                .arg(key)
                .query_async::<u64>(&mut conn)
                .await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(QueueDepths {
        scheduled,
        active,
        inflight,
        done,
        dead,
        workers,
    })
}

/// Sets `payments_queue_jobs{state}` and `payments_queue_workers`; on a Redis error, sets
/// `payments_queue_up` to 0 instead of failing the scrape.
pub async fn export_queue_depths(conn: &ConnectionManager, namespace: &str) {
    match queue_depths(conn, namespace).await {
        Ok(d) => {
            metrics::gauge!("payments_queue_up").set(1.0);
            for (state, n) in [
                ("scheduled", d.scheduled),
                ("active", d.active),
                ("inflight", d.inflight),
                ("done", d.done),
                ("dead", d.dead),
            ] {
                metrics::gauge!("payments_queue_jobs", "state" => state).set(n as f64);
            }
            metrics::gauge!("payments_queue_workers").set(d.workers as f64);
        }
        Err(e) => {
            tracing::warn!(error = %e, "queue depths unavailable");
            metrics::gauge!("payments_queue_up").set(0.0);
        }
    }
}

/// Sets `payments_transactions{state}` from Postgres.
pub async fn export_transaction_counts(conn: &mut AsyncPgConnection) {
    match crate::transactions::count_by_state(conn).await {
        Ok(counts) => {
            for st in crate::state_machine::TxState::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == st.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("payments_transactions", "state" => st.as_str()).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "transaction counts unavailable"),
    }
}

/// The text exposition of every metric recorded in this process.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}
