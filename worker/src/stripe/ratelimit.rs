//! A rate limit toward Stripe shared by every worker process through Redis: Stripe counts
//! requests per account (25/s in test mode, 100/s live), not per process. A sliding one-second
//! window ([`shared::ratelimit::SlidingWindow`]): never more than the budget in any second,
//! where a fixed window let twice the budget through across a window's edge (Stripe answers
//! that with 429s).

use std::time::Duration;

use rand::RngExt;
use redis::aio::ConnectionManager;
use shared::ratelimit::{Decision, SlidingWindow};

/// Whose call it is. Customer-facing calls (a charge, its confirm, a 3-D Secure re-check, a
/// cancel) may use the whole budget; background work (the reconciler's lists) takes a place
/// only while the last second holds under half of it, so it yields when customers need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Customer,
    Background,
}

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    key: String,
    per_second: u64,
    window: SlidingWindow,
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, namespace: &str, per_second: u64) -> Self {
        Self {
            conn,
            key: format!("{namespace}:stripe_rate"),
            per_second,
            window: SlidingWindow {
                window: Duration::from_secs(1),
            },
        }
    }

    /// Waits for a place. `per_second == 0` disables the limit. If Redis cannot be asked, the
    /// call goes ahead: Stripe's own 429 (which we honour) is the backstop, and a payment must
    /// not stall on the limiter's own storage.
    pub async fn acquire(&self, priority: Priority) {
        if self.per_second == 0 {
            return;
        }
        let limit = match priority {
            Priority::Customer => self.per_second,
            Priority::Background => (self.per_second / 2).max(1),
        };
        for _ in 0..600 {
            let mut conn = self.conn.clone();
            match self.window.take(&mut conn, &self.key, limit).await {
                Ok(Decision::Allowed) => return,
                Ok(Decision::Wait(wait)) => {
                    // Callers woken by the same departure would all retry at once; a few ms
                    // of jitter spreads them.
                    let jitter = Duration::from_millis(rand::rng().random_range(0..10));
                    tokio::time::sleep(wait + jitter).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable; calling Stripe anyway");
                    return;
                }
            }
        }
    }
}
