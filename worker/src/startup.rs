//! Builds and runs the worker: the apalis charge consumer and the sweeper, under one shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::RedisStorage;
use shared::jobs::{ChargeQueue, StripeCharge, queue_config, redis_connection};
use shared::settings::Settings;
use tokio_util::sync::CancellationToken;

use crate::jobs::stripe_charge::{ChargeContext, stripe_charge};
use crate::stripe::Stripe;
use crate::sweeper::Sweeper;

/// A name unique to this process start. apalis refuses a name still heartbeating, and a name
/// reused across replicas would block the recovery of a dead one's jobs.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    let host = if host.is_empty() { "worker" } else { host };
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs until `shutdown` resolves, then stops fetching, lets running charges finish within
/// `WORKER_SHUTDOWN_TIMEOUT_MS`, and hands prefetched jobs back to the queue.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let w = &settings.worker;
    let conn = redis_connection(&settings.redis_url)?;
    let db = shared::db::pool(&settings.database_url, (w.concurrency as u32).clamp(4, 64));
    let queue = ChargeQueue::new(conn.clone(), &settings.queue_namespace);
    let name = worker_name();
    let ctx = Arc::new(ChargeContext {
        db: db.clone(),
        queue: queue.clone(),
        stripe: Stripe::new(&settings.stripe, conn.clone(), &settings.queue_namespace)?,
        retry: w.retry.clone(),
        lease: w.lease,
        recheck: w.sweep_after,
        owner: name.clone(),
    });

    let config = queue_config(&settings.queue_namespace)
        // Prefetch only what we can run: a prefetched job waits in this worker's in-flight
        // set and would be stranded there if the process died.
        .batch_size(w.concurrency)
        .heartbeat_interval(w.heartbeat)
        .missed_heartbeats(w.missed_heartbeats);
    let storage = RedisStorage::<StripeCharge>::new(conn).with_config(config);
    let poll = w.poll_interval;
    let concurrency = w.concurrency;

    let stop = CancellationToken::new();
    let sweeper = Sweeper {
        db,
        queue,
        interval: w.sweep_interval,
        after: w.sweep_after,
    };
    let sweeper = tokio::spawn(sweeper.run(stop.clone()));

    tracing::info!(worker = %name, concurrency, queue = %settings.charge_queue(), "worker starting");
    let signal_stop = stop.clone();
    let monitor = Monitor::new()
        .register(move |restart| {
            // After a crash-restart of the worker future, register under a new name too.
            let worker_name = if restart == 0 {
                name.clone()
            } else {
                format!("{name}-r{restart}")
            };
            WorkerBuilder::new(worker_name)
                .backend(storage.clone().poll_with_interval(poll))
                .concurrency(concurrency)
                .data(ctx.clone())
                .build(stripe_charge)
        })
        .shutdown_timeout(w.shutdown_timeout);
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            signal_stop.cancel();
            tracing::info!("shutdown requested: finishing in-flight charges");
            Ok(())
        })
        .await;
    stop.cancel();
    let _ = sweeper.await;
    result.map_err(|e| anyhow::anyhow!("worker stopped with an error: {e}"))
}

/// The worker never migrates: the api owns the schema. Running on an old schema could write
/// rows the api cannot read, so it stops with a clear message instead.
pub async fn ensure_schema_current(database_url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match shared::db::pending_migrations(database_url).await {
            Ok(pending) if pending.is_empty() => return Ok(()),
            Ok(pending) => anyhow::bail!(
                "the database schema is behind this worker: {} pending migration(s) ({}). \
                 Run `api migrate` (or start the api, which migrates) and start the worker again.",
                pending.len(),
                pending.join(", ")
            ),
            Err(shared::db::MigrationError::Connect(e)) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "Postgres not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => anyhow::bail!("cannot check the database schema: {e}"),
        }
    }
}
