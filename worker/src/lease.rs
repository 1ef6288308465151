//! The lease an attempt holds on its payment, kept for as long as the attempt runs, so that no
//! Stripe call outlives it.
//!
//! A claim takes the lease for `WORKER_LEASE_MS`. While the attempt runs, a keeper renews it
//! every third of that in Postgres, so a long wait for the shared rate limit (or a slow Postgres)
//! never lets it lapse; before each Stripe call the attempt checks that the lease still covers
//! the whole call (its timeout plus a margin) and renews it at once if not. A lease that cannot
//! be renewed (another worker took it over, Postgres is gone) ends the attempt before its next
//! call: two workers never call Stripe for one payment at once, and only the holder writes a
//! verdict. A worker that dies stops renewing, and its lease runs out as before.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use shared::db::PgPool;
use shared::state_machine::change::{Transition, change};
use uuid::Uuid;

/// Slack for the clocks and the round trips around a call.
pub const MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Held {
    /// When the lease runs out, by our clock (taken before the statement that set it was sent:
    /// never late).
    until: Instant,
    lost: bool,
}

#[derive(Clone)]
struct Keeper {
    db: PgPool,
    id: Uuid,
    owner: String,
    length: Duration,
    held: Arc<Mutex<Held>>,
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renews for `length` from now; false (and the lease lost) when it is no longer ours.
    async fn renew(&self, length: Duration) -> bool {
        let asked = Instant::now();
        let renewed = async {
            let mut conn = self.db.get().await.map_err(|e| e.to_string())?;
            let renew = Transition::Renew {
                owner: &self.owner,
                lease: length,
            };
            change(&mut conn, self.id, renew)
                .await
                .map_err(|e| e.to_string())
        };
        let ok = matches!(renewed.await, Ok(Some(c)) if c.applied);
        let mut held = self.lock();
        if ok {
            held.until = asked + length;
            metrics::counter!("payments_lease_renewals_total").increment(1);
        } else if !held.lost {
            held.lost = true;
            tracing::warn!("lease no longer ours; the attempt makes no further call");
        }
        ok
    }

    async fn keep(self) {
        loop {
            tokio::time::sleep(self.length / 3).await;
            if !self.renew(self.length).await {
                return;
            }
        }
    }
}

pub struct Lease {
    keeper: Keeper,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lease {
    /// The lease a claim just took (`taken_at`: when the claim was sent), kept from now on.
    pub fn taken(db: &PgPool, id: Uuid, owner: &str, length: Duration, taken_at: Instant) -> Self {
        let keeper = Keeper {
            db: db.clone(),
            id,
            owner: owner.to_owned(),
            length,
            held: Arc::new(Mutex::new(Held {
                until: taken_at + length,
                lost: false,
            })),
        };
        let task = tokio::spawn(keeper.clone().keep());
        Self { keeper, task }
    }

    /// Whether the attempt had to stop because the lease could not be kept.
    pub fn lost(&self) -> bool {
        self.keeper.lock().lost
    }

    /// Makes sure the lease runs for `need` more; `Err` when it cannot be kept, and then no
    /// call may be made.
    pub async fn cover(&mut self, need: Duration) -> Result<(), String> {
        let until = {
            let held = self.keeper.lock();
            if held.lost {
                return Err("lease lost".into());
            }
            held.until
        };
        if Instant::now() + need + MARGIN <= until {
            return Ok(());
        }
        let length = self.keeper.length.max(need + MARGIN);
        if self.keeper.renew(length).await {
            Ok(())
        } else {
            Err("lease taken over".into())
        }
    }
}
