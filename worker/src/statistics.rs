//! The worker's half of `shared::db::statistics`: every `WORKER_ANALYZE_INTERVAL_MS`, analyze
//! the payments' tables that doubled since their statistics, so no connection keeps plans made
//! for a table a fraction of its size.

use std::time::Duration;

use shared::db::PgPool;
use shared::db::statistics::analyze_grown;
use shared::telemetry::Throttle;
use tokio_util::sync::CancellationToken;

/// The worker's loop: [`analyze_grown`] every `interval` (zero: never) until `stop`.
pub async fn run(db: PgPool, interval: Duration, stop: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let failures = Throttle::new(Duration::from_secs(60));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(mut conn) = db.get().await else {
            continue;
        };
        match analyze_grown(&mut conn).await {
            Ok(tables) => {
                for table in tables {
                    metrics::counter!("payments_tables_analyzed_total", "table" => table)
                        .increment(1);
                    tracing::debug!(table, "analyzed: the table doubled since its statistics");
                }
            }
            Err(e) => {
                if let Some(left_out) = failures.ready() {
                    tracing::warn!(error = %e, left_out, "analyzing grown tables failed; will try again");
                }
            }
        }
    }
}
