//! Finished jobs do not stay in Redis for ever: apalis never deletes one, so its done set, data
//! hash and meta hashes would grow with every payment. Every `DONE_JOB_PURGE_INTERVAL_MS` one
//! worker (a Redis lock picks it) deletes the done jobs finished more than
//! `DONE_JOB_RETENTION_MS` ago (`shared::queue::purge`, what `payctl purge-done` runs). The
//! payments themselves are in Postgres; a done job is only the queue's memory of having run.

use std::time::Duration;

use redis::aio::ConnectionManager;
use shared::queue::keys::Keys;
use tokio_util::sync::CancellationToken;

pub struct Purger {
    pub redis: ConnectionManager,
    pub keys: Keys,
    pub lock_key: String,
    pub owner: String,
    pub interval: Duration,
    pub retention: Duration,
}

impl Purger {
    pub async fn run(self, stop: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !crate::turn::take(&self.redis, &self.lock_key, &self.owner, self.interval).await {
                continue;
            }
            let mut conn = self.redis.clone();
            match shared::queue::purge::purge_done(&mut conn, &self.keys, self.retention, false)
                .await
            {
                Ok(report) => {
                    metrics::counter!("payments_queue_done_purged_total").increment(report.purged);
                    if report.purged > 0 {
                        tracing::info!(
                            purged = report.purged,
                            scanned = report.scanned,
                            older_than_secs = report.older_than_secs,
                            "finished jobs purged"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"),
                    "purging finished jobs failed; will try again"),
            }
        }
    }
}
