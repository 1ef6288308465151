//! Builds and runs the worker: the apalis charge consumer, the sweeper and the metrics
//! endpoint, under one shutdown. `Application::build(settings)` then
//! `run_until_stopped(shutdown)`, like the api.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::ConnectionManager;
use apalis_redis::RedisStorage;
use shared::queue::keys::Keys;
use shared::queue::{ChargeQueue, StripeCharge, queue_config, redis_connection};
use shared::settings::{Settings, WorkerSettings};
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

/// A worker process, built and ready to run: its pool, its Stripe client, its queue consumer's
/// configuration and its name. Connections are made lazily: a worker built while Postgres or
/// Redis is down starts and waits for them.
pub struct Application {
    ctx: Arc<ChargeContext>,
    storage: RedisStorage<StripeCharge>,
    sweeper: Sweeper,
    redis: ConnectionManager,
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let w = &settings.worker;
        let conn = redis_connection(&settings.redis_url, settings.redis_ca_file.as_deref())?;
        // A job holds a connection only to claim and to record, never across the Stripe call,
        // so a small pool serves a large concurrency; it also keeps several workers plus the
        // api under Postgres' default 100 connections.
        let pool_size = settings
            .database_pool_size
            .unwrap_or((w.concurrency as u32).clamp(4, 16));
        // The worker's commits need not wait for their WAL flush: everything it writes it can
        // learn again from Stripe, but an intent's id (docs/reliability.md, "the worker's
        // writes need not wait for the disk").
        const ASYNC_COMMIT: &str = "SET synchronous_commit = off";
        let (session, rounds_session): (&[&str], &[&str]) = if w.synchronous_commit {
            (&[], &[shared::rounds::SESSION])
        } else {
            (&[ASYNC_COMMIT], &[ASYNC_COMMIT, shared::rounds::SESSION])
        };
        // `WORKER_BATCH_PARALLEL` rounds of claims and as many of writes at once, each holding
        // one connection of their own (at most half the pool); the rest of the pool serves lease
        // renewals, the sweeper, the reconciler and the webhooks (`shared::rounds`: fewer rounds
        // at once, larger rounds).
        let parallel = w.batch_parallel.min((pool_size as usize / 4).max(1));
        let for_rounds = 2 * parallel as u32;
        let db = shared::db::pool_with_session(
            &settings.database_url,
            pool_size.saturating_sub(for_rounds).max(1),
            Duration::from_secs(10),
            session,
        )?;
        let rounds_db = shared::db::pool_with_session(
            &settings.database_url,
            for_rounds,
            Duration::from_secs(10),
            rounds_session,
        )?;
        let queue = ChargeQueue::new(conn.clone(), &settings.queue_namespace);
        let owner = worker_name();
        let ctx = Arc::new(ChargeContext {
            batches: crate::batch::Batches::start(
                rounds_db,
                owner.clone(),
                w.lease,
                w.batch_max,
                parallel,
            ),
            db: db.clone(),
            queue: queue.clone(),
            stripe: Stripe::new(&settings.stripe, conn.clone(), &settings.queue_namespace)?,
            retry: w.retry.clone(),
            lease: w.lease,
            recheck: w.sweep_after,
            requires_action_timeout: w.requires_action_timeout,
            owner,
        });
        let config = queue_config(&settings.queue_namespace)
            // Prefetch only what we can run: a prefetched job waits in this worker's in-flight
            // set and would be stranded there if the process died.
            .batch_size(w.concurrency)
            .heartbeat_interval(w.heartbeat)
            .missed_heartbeats(w.missed_heartbeats);
        let storage = RedisStorage::<StripeCharge>::new(conn.clone()).with_config(config);
        let sweeper = Sweeper {
            db,
            queue,
            interval: w.sweep_interval,
            after: w.sweep_after,
        };
        Ok(Self {
            ctx,
            storage,
            sweeper,
            redis: conn,
            settings,
        })
    }

    /// The name this process registers under, and writes into the leases it takes.
    pub fn name(&self) -> &str {
        &self.ctx.owner
    }

    /// Runs until `shutdown` resolves, then stops fetching, lets running charges finish within
    /// `WORKER_SHUTDOWN_TIMEOUT_MS`, and hands prefetched jobs back to the queue.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            ctx,
            storage,
            sweeper,
            redis,
            settings,
        } = self;
        let w = &settings.worker;
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(sweeper.run(stop.clone()));
        let reconciler = crate::reconcile::Reconciler {
            db: ctx.db.clone(),
            ctx: ctx.clone(),
            redis: redis.clone(),
            lock_key: format!("{}:reconcile_lock", settings.queue_namespace),
            interval: w.reconcile_interval,
            window: w.reconcile_window,
        };
        let reconciler = tokio::spawn(reconciler.run(stop.clone()));
        let purger = crate::retention::Purger {
            redis: redis.clone(),
            keys: Keys::new(&settings.queue_namespace),
            lock_key: format!("{}:purge_lock", settings.queue_namespace),
            owner: ctx.owner.clone(),
            interval: w.done_purge_interval,
            retention: w.done_retention,
        };
        let purger = tokio::spawn(purger.run(stop.clone()));
        let statistics = tokio::spawn(crate::statistics::run(
            ctx.db.clone(),
            w.analyze_interval,
            stop.clone(),
        ));
        let webhooks =
            crate::merchant_webhooks::Sender::new(ctx.db.clone(), &settings.merchant_webhooks)
                .map(|sender| tokio::spawn(sender.run(stop.clone())));
        let metrics = w.metrics_addr.map(|addr| {
            let keys = Keys::new(&settings.queue_namespace);
            let (dead_after, stop) = (w.presumed_dead_after(), stop.clone());
            let serve =
                crate::metrics::serve(addr, ctx.clone(), redis.clone(), keys, dead_after, stop);
            tokio::spawn(serve)
        });
        tracing::info!(worker = %ctx.owner, concurrency = w.concurrency,
            queue = %settings.charge_queue(), "worker starting");
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                tracing::info!("shutdown requested: finishing in-flight charges");
                stop.cancel();
            }
        });
        consume(ctx, storage, w, &stop).await;
        let _ = sweeper.await;
        let _ = reconciler.await;
        let _ = purger.await;
        let _ = statistics.await;
        if let Some(w) = webhooks {
            let _ = w.await;
        }
        if let Some(m) = metrics {
            let _ = m.await;
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Runs the apalis consumer until `stop`. apalis ends a worker for good when Redis loses its
/// registration (a Redis restart) or stays unreachable; the monitor then returns. Until we are
/// told to stop, start it again, under a new name, with a growing pause, so the process
/// recovers by itself.
async fn consume(
    ctx: Arc<ChargeContext>,
    storage: RedisStorage<StripeCharge>,
    w: &WorkerSettings,
    stop: &CancellationToken,
) {
    let (poll, concurrency) = (w.poll_interval, w.concurrency);
    let name = ctx.owner.clone();
    let mut generation = 0u32;
    while !stop.is_cancelled() {
        let worker_name = if generation == 0 {
            name.clone()
        } else {
            format!("{name}-g{generation}")
        };
        let (storage, ctx) = (storage.clone(), ctx.clone());
        let monitor = Monitor::new()
            .register(move |restart| {
                WorkerBuilder::new(format!("{worker_name}-{restart}"))
                    .backend(storage.clone().poll_with_interval(poll))
                    .concurrency(concurrency)
                    .data(ctx.clone())
                    .build(stripe_charge)
            })
            // Also makes `run_with_signal` return when the worker dies, not only on shutdown.
            .shutdown_timeout(w.shutdown_timeout);
        let signal = stop.clone().cancelled_owned();
        if let Err(e) = monitor
            .run_with_signal(async move {
                signal.await;
                Ok(())
            })
            .await
        {
            tracing::warn!(error = %e, "queue consumer ended with an error");
        }
        if stop.is_cancelled() {
            break;
        }
        generation += 1;
        let pause = Duration::from_millis(200u64.saturating_mul(1 << generation.min(5)));
        tracing::warn!(
            ?pause,
            generation,
            "queue consumer stopped (Redis lost or unreachable?); restarting"
        );
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
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
