//! The `StripeCharge` job and the producer side of its queue.
//!
//! The payload carries the transaction id only: everything else is read from Postgres, so a
//! job lost in Redis can be rebuilt from the row, and a job delivered twice finds the row
//! already moved on. Task ids are fresh ULIDs (apalis' default): a re-enqueue by the sweeper
//! must not be swallowed by an old task's id; the worker's lease on the row makes duplicate
//! deliveries harmless.

pub mod cleanup;
pub mod dead;
pub mod keys;
pub mod listing;
pub mod purge;
pub mod scan;
pub mod scripts;
pub mod show;
pub mod stats;
pub mod stuck;
pub mod task;
pub mod workers;

use std::path::Path;
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::task::builder::TaskBuilder;
use apalis_redis::{ConnectionManager, RedisStorage};
use redis::aio::ConnectionManagerConfig;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeCharge {
    pub transaction_id: Uuid,
    /// The W3C `traceparent` of whoever queued the charge, when traces are exported
    /// (`crate::telemetry`); absent otherwise, so the job is what it always was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The queue's name, fixed here rather than taken from the Rust type path (apalis' default),
/// so moving the type can never silently switch queues.
pub fn charge_queue_name(namespace: &str) -> String {
    format!("{namespace}:stripe_charge")
}

/// A Redis client for `redis://` or `rediss://` (TLS: verified against the system's roots, or
/// against `ca_file` only when one is given; the URL's `#insecure` fragment skips verification).
pub fn redis_client(
    redis_url: &str,
    ca_file: Option<&Path>,
) -> Result<redis::Client, redis::RedisError> {
    crate::tls::crypto_provider();
    let Some(path) = ca_file else {
        return redis::Client::open(redis_url);
    };
    let pem = std::fs::read(path).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "REDIS_CA_FILE cannot be read",
            format!("{}: {e}", path.display()),
        ))
    })?;
    let tls = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(redis_url, tls)
}

/// A Redis connection that is made on first use and re-made after Redis goes away, so the
/// services start, and keep running, while Redis is down.
pub fn redis_connection(
    redis_url: &str,
    ca_file: Option<&Path>,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis_client(redis_url, ca_file)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// apalis' storage configuration for the charge queue; the worker adds its own tuning.
pub fn queue_config(namespace: &str) -> apalis_redis::Config {
    apalis_redis::Config::default().queue(charge_queue_name(namespace))
}

/// A Redis connection the inspection functions accept: payctl's own multiplexed one, or a
/// service's reconnecting manager.
pub trait RedisConn: redis::aio::ConnectionLike + Send + Sync {}
impl<T: redis::aio::ConnectionLike + Send + Sync> RedisConn for T {}

/// Enqueues charge jobs. Cheap to clone: clones share one multiplexed Redis connection.
#[derive(Clone)]
pub struct ChargeQueue {
    storage: RedisStorage<StripeCharge>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not enqueue the charge job: {0}")]
pub struct EnqueueError(String);

impl ChargeQueue {
    pub fn new(conn: ConnectionManager, namespace: &str) -> Self {
        Self {
            storage: RedisStorage::new(conn).with_config(queue_config(namespace)),
        }
    }

    /// Queues a charge for `transaction_id`, to run now or after `delay`.
    pub async fn enqueue(
        &self,
        transaction_id: Uuid,
        delay: Option<Duration>,
    ) -> Result<(), EnqueueError> {
        let mut builder = TaskBuilder::new(StripeCharge {
            transaction_id,
            trace: crate::telemetry::traceparent(),
        });
        if let Some(d) = delay.filter(|d| !d.is_zero()) {
            builder = builder.run_after(d);
        }
        let mut storage = self.storage.clone();
        storage
            .push_task(builder.build())
            .await
            .map_err(|e| EnqueueError(e.to_string()))
    }
}
