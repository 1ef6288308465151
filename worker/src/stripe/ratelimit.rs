//! A rate limit toward Stripe shared by every worker process through Redis: Stripe counts
//! requests per account (25/s in test mode, 100/s live), not per process. A sliding one-second
//! window ([`shared::ratelimit::SlidingWindow`]): never more than the budget in any second,
//! where a fixed window let twice the budget through across a window's edge (Stripe answers
//! that with 429s).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngExt;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use shared::ratelimit::{Decision, SlidingWindow};

/// Whose call it is. What customers wait on (a new payment's create and confirm, a retried
/// attempt, reading back a confirm whose answer was lost) may use the whole budget; background
/// work (3-D Secure re-checks, cancels of failed payments' intents, the reconciler) takes a
/// place only while no customer's call waits for one, in any worker process, and the last
/// second holds under half the budget. So while new payments use the budget, background work
/// waits, and it drains once they leave room (`crate::policy::priority` says which step is
/// which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    Customer,
    Background,
}

/// Stripe counts a second at its end, when each request arrives; we count when we decide, and a
/// call can leave a little later than its decision (a lease renewed, a connection opened) while
/// the next one leaves at once. 100 ms of margin keeps that from ever putting more than the
/// budget into one of Stripe's seconds (the bench's "At Stripe's rate limit" counts the 429s).
const WINDOW: Duration = Duration::from_millis(1_100);

/// How long a customer's wait keeps background work out after it was last seen: the window's
/// length, so a queue of customers' calls holds the whole budget.
const DEMAND_TTL: Duration = Duration::from_secs(1);
/// How long a sleeping customer's mark outlives its sleep: time to wake and ask again.
const DEMAND_MARGIN: Duration = Duration::from_millis(250);
/// How often waiting background work looks again.
const BACKGROUND_RECHECK: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    key: String,
    /// Set (with [`DEMAND_TTL`]) while customers' calls queue for a place.
    demand_key: String,
    per_second: u64,
    window: SlidingWindow,
    /// One waiter per priority asks Redis at a time; the others queue here, first come first
    /// served (a fair lock), instead of all asking Redis again whenever a place opens.
    turns: Arc<[tokio::sync::Mutex<()>; 2]>,
    /// Customers' calls in this process waiting for a place.
    customers_waiting: Arc<AtomicUsize>,
}

/// Counts a waiting customer's call while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl RateLimiter {
    pub fn new(conn: ConnectionManager, namespace: &str, per_second: u64) -> Self {
        Self {
            conn,
            key: format!("{namespace}:stripe_rate"),
            demand_key: format!("{namespace}:stripe_rate:customers_waiting"),
            per_second,
            window: SlidingWindow { window: WINDOW },
            turns: Arc::new([tokio::sync::Mutex::new(()), tokio::sync::Mutex::new(())]),
            customers_waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for a place, however long that takes (a call never goes over the budget to end a
    /// wait: Stripe would refuse it). `per_second == 0` disables the limit. If Redis cannot be
    /// asked, the call goes ahead: Stripe's own 429 (which we honour) is the backstop, and a
    /// payment must not stall on the limiter's own storage.
    pub async fn acquire(&self, priority: Priority) {
        if self.per_second == 0 {
            return;
        }
        let (limit, turn) = match priority {
            Priority::Customer => (self.per_second, &self.turns[0]),
            Priority::Background => ((self.per_second / 2).max(1), &self.turns[1]),
        };
        let _waiting = (priority == Priority::Customer).then(|| {
            self.customers_waiting.fetch_add(1, Ordering::SeqCst);
            Waiting(&self.customers_waiting)
        });
        let _turn = turn.lock().await;
        let mut conn = self.conn.clone();
        loop {
            if priority == Priority::Background {
                match conn.exists::<_, bool>(&self.demand_key).await {
                    Ok(true) => {
                        tokio::time::sleep(BACKGROUND_RECHECK).await;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "rate limiter unavailable; calling Stripe anyway");
                        return;
                    }
                }
            } else if self.customers_waiting.load(Ordering::SeqCst) > 1 {
                // Others queue behind this one: the budget is the customers'.
                self.mark_demand(&mut conn, DEMAND_TTL).await;
            }
            match self.window.take(&mut conn, &self.key, limit).await {
                Ok(Decision::Allowed) => return,
                Ok(Decision::Wait(wait)) => {
                    // Other processes' waiters are woken by the same departure; a few ms of
                    // jitter spreads them.
                    let jitter = Duration::from_millis(rand::rng().random_range(0..10));
                    if priority == Priority::Customer {
                        // The mark must outlive the sleep: a wait can be longer than
                        // DEMAND_TTL (up to the window), and background work that found the
                        // mark gone while this call slept would take the place it wakes for.
                        let ttl = DEMAND_TTL.max(wait + jitter + DEMAND_MARGIN);
                        self.mark_demand(&mut conn, ttl).await;
                    }
                    tokio::time::sleep(wait + jitter).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rate limiter unavailable; calling Stripe anyway");
                    return;
                }
            }
        }
    }

    async fn mark_demand(&self, conn: &mut ConnectionManager, ttl: Duration) {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let marked: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&self.demand_key)
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .query_async(conn)
            .await;
        if let Err(e) = marked {
            tracing::debug!(error = %e, "cannot mark customers' demand");
        }
    }
}
