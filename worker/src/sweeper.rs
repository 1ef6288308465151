//! The sweeper: Postgres is the truth and Redis may lose jobs (restarted without persistence, a
//! push that failed after the row was committed, a key deleted by hand). Every interval it
//! finds unfinished payments that have been due for too long with no live lease, and queues
//! them again. A duplicate is harmless: the lease and the forward-only updates absorb it.

use std::time::Duration;

use shared::db::PgPool;
use shared::queue::ChargeQueue;
use shared::state_machine::sweep;
use tokio_util::sync::CancellationToken;

pub struct Sweeper {
    pub db: PgPool,
    pub queue: ChargeQueue,
    pub interval: Duration,
    pub after: Duration,
}

impl Sweeper {
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.sweep_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(requeued = n, "sweeper re-enqueued payments"),
                Err(e) => tracing::warn!(error = %e, "sweep failed; will try again"),
            }
        }
    }

    /// One pass; returns how many payments were queued again.
    pub async fn sweep_once(&self) -> Result<usize, String> {
        let ids = {
            let mut conn = self.db.get().await.map_err(|e| e.to_string())?;
            sweep::sweep(&mut conn, self.after, 500)
                .await
                .map_err(|e| e.to_string())?
        };
        for id in &ids {
            // A failed push leaves the row due again after `after`; the next pass retries it.
            self.queue
                .enqueue(*id, None)
                .await
                .map_err(|e| e.to_string())?;
            metrics::counter!("payments_sweeper_requeued_total").increment(1);
        }
        Ok(ids.len())
    }
}
