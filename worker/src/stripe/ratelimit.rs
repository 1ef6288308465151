//! A rate limit toward Stripe shared by every worker process through Redis: Stripe counts
//! requests per account (25/s in test mode, 100/s live), not per process. A fixed one-second
//! window, counted with one atomic script per call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_redis::ConnectionManager;
use rand::RngExt;

const SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], 2000) end
return n";

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
    pub async fn acquire(&self) {
        if self.per_second == 0 {
            return;
        }
        for _ in 0..600 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let key = format!("{}:{}", self.prefix, now.as_secs());
            let mut conn = self.conn.clone();
            match self.script.key(&key).invoke_async::<u64>(&mut conn).await {
                Ok(n) if n <= self.per_second => return,
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
