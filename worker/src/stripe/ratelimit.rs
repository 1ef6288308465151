//! A rate limit toward Stripe shared by every worker process through Redis: Stripe counts
//! requests per account (25/s in test mode, 100/s live), not per process. A fixed one-second
//! window, counted with one atomic script per call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use redis::aio::ConnectionManager;

/// Takes a slot of this second if fewer than ARGV[1] are taken; 0 when none is left.
const SCRIPT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
return n";

/// Whose call it is. Customer-facing calls (a charge, its confirm, a 3-D Secure re-check, a
/// cancel) may use the whole budget; background work (the reconciler's lists) takes a slot only
/// while a second's count is under half of it, so it yields when customers need the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Customer,
    Background,
}

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    prefix: String,
    per_second: u64,
    script: redis::Script,
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, namespace: &str, per_second: u64) -> Self {
        Self {
            conn,
            prefix: format!("{namespace}:stripe_rate"),
            per_second,
            script: redis::Script::new(SCRIPT),
        }
    }

    /// Waits for a slot. `per_second == 0` disables the limit. If Redis cannot be asked, the
    /// call goes ahead: Stripe's own 429 (which we honour) is the backstop, and a payment must
    /// not stall on the limiter's own storage.
    pub async fn acquire(&self, priority: Priority) {
        if self.per_second == 0 {
            return;
        }
        let budget = match priority {
            Priority::Customer => self.per_second,
            Priority::Background => (self.per_second / 2).max(1),
        };
        for _ in 0..600 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let key = format!("{}:{}", self.prefix, now.as_secs());
            let mut conn = self.conn.clone();
            match self
                .script
                .key(&key)
                .arg(budget)
                .invoke_async::<u64>(&mut conn)
                .await
            {
                Ok(n) if n > 0 => return,
                Ok(_) => {
                    // Wait for the next window, spread over its first 100 ms.
                    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
                    let jitter = Duration::from_millis(rand::rng().random_range(0..100));
                    tokio::time::sleep(Duration::from_secs(1).saturating_sub(into) + jitter).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable; calling Stripe anyway");
                    return;
                }
            }
        }
    }
}
