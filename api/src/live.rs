//! Live status from the event log: which payments changed, told by Postgres.
//!
//! Every event row a page waits for (not `payment.pending` nor `payment.processing`) commits with
//! a `NOTIFY payment_events, '<transaction id>'` (a trigger, see the checkout-sessions migration
//! and `2026-12-02-000007_notify_what_pages_wait_for`), from whichever process made the change:
//! a worker, this api or another one. Each api process keeps one connection of its own that `LISTEN`s
//! ([`spawn_listener`]): not from the pool, and on `DATABASE_DIRECT_URL`, since a
//! transaction-mode pooler cannot hold a `LISTEN`. The [`Hub`] fans each notification out in
//! memory to the event streams following that payment, so an open checkout page costs no query
//! while nothing changes, and one SELECT when something does.
//!
//! Notifications sent while the listener is disconnected are lost. Whenever it (re)connects,
//! every stream is told to re-read its row ([`Subscription::changed`] wakes on a resync too),
//! so a missed change is seen as soon as the listener is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use tokio::sync::watch;
use uuid::Uuid;

use crate::state::Shutdown;

/// The channel the trigger notifies.
pub const CHANNEL: &str = "payment_events";
/// How the listening connection shows in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "payments-api-listen";
/// A quiet listening connection is checked this often, so a dead one is noticed (and the
/// streams resynced) without waiting for TCP to give up.
const PING_EVERY: Duration = Duration::from_secs(30);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The streams waiting on each payment, and the resync signal.
pub struct Hub {
    watchers: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
    /// Bumped each time the listener (re)connects: anything may have been missed before.
    resync: watch::Sender<u64>,
    connected: AtomicBool,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            watchers: Mutex::new(HashMap::new()),
            resync: watch::channel(0).0,
            connected: AtomicBool::new(false),
        })
    }

    /// Follows `id`. Subscribe before reading the row, so a change committed between the read
    /// and the wait still wakes the stream.
    pub fn subscribe(self: &Arc<Self>, id: Uuid) -> Subscription {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        let rx = watchers
            .entry(id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        metrics::gauge!("payments_live_streams").set(watchers.len() as f64);
        Subscription {
            id,
            rx,
            resync: self.resync.subscribe(),
            hub: Arc::clone(self),
        }
    }

    /// `id` changed: wake the streams following it.
    pub fn notify(&self, id: Uuid) {
        let watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = watchers.get(&id) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Every stream re-reads its row.
    pub fn resync(&self) {
        self.resync.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether the listener is connected now (for `/readyz`-style checks and tests).
    pub fn is_listening(&self) -> bool {
        AtomicBool::load(&self.connected, Ordering::Relaxed)
    }

    fn set_listening(&self, on: bool) {
        self.connected.store(on, Ordering::Relaxed);
        metrics::gauge!("payments_live_listener_connected").set(f64::from(u8::from(on)));
    }
}

/// One stream's interest in one payment; dropping it forgets the payment when nobody else
/// follows it.
pub struct Subscription {
    id: Uuid,
    rx: watch::Receiver<u64>,
    resync: watch::Receiver<u64>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// Waits until the payment may have changed: a notification for it, or a resync. `false`
    /// when the hub is gone.
    pub async fn changed(&mut self) -> bool {
        tokio::select! {
            r = self.rx.changed() => r.is_ok(),
            r = self.resync.changed() => r.is_ok(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watchers = self.hub.watchers.lock().unwrap_or_else(|p| p.into_inner());
        // Our receiver is still alive here: 1 means nobody else follows the payment.
        if watchers
            .get(&self.id)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            watchers.remove(&self.id);
        }
        metrics::gauge!("payments_live_streams").set(watchers.len() as f64);
    }
}

/// Keeps one connection listening on [`CHANNEL`] for as long as `hub` lives or until the
/// server stops, reconnecting with backoff; each (re)connection resyncs every stream.
pub fn spawn_listener(hub: &Arc<Hub>, database_url: String, shutdown: Shutdown) {
    let hub = Arc::downgrade(hub);
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        let mut delay = RETRY_FIRST;
        loop {
            let stop = tokio::select! {
                stop = listen_once(&hub, &database_url) => stop,
                () = shutdown.wait() => true,
            };
            if let Some(hub) = hub.upgrade() {
                hub.set_listening(false);
            }
            if stop || hub.strong_count() == 0 {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.wait() => return,
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    });
}

/// One listening connection, until it fails; `true` when the hub is gone (stop for good).
async fn listen_once(hub: &Weak<Hub>, database_url: &str) -> bool {
    let mut conn = match connect(database_url).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "live status: cannot listen; retrying");
            return false;
        }
    };
    let Some(strong) = hub.upgrade() else {
        return true;
    };
    strong.set_listening(true);
    // Listening now: anything that changed while we were not is re-read.
    strong.resync();
    drop(strong);
    tracing::info!("live status: listening for payment events");
    loop {
        let next = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::select! {
                n = notifications.next() => Some(n),
                () = tokio::time::sleep(PING_EVERY) => None,
            }
        };
        let Some(hub) = hub.upgrade() else {
            return true;
        };
        match next {
            Some(Some(Ok(n))) => match Uuid::parse_str(&n.payload) {
                Ok(id) => {
                    metrics::counter!("payments_live_notifications_total").increment(1);
                    hub.notify(id);
                }
                Err(_) => tracing::warn!(payload = %n.payload, "live status: odd notification"),
            },
            Some(Some(Err(e))) => {
                tracing::warn!(error = %e, "live status: listening connection failed");
                return false;
            }
            Some(None) => {
                tracing::warn!("live status: listening connection closed");
                return false;
            }
            None => {
                if let Err(e) = diesel::sql_query("SELECT 1").execute(&mut conn).await {
                    tracing::warn!(error = %e, "live status: listening connection is gone");
                    return false;
                }
            }
        }
    }
}

async fn connect(database_url: &str) -> anyhow::Result<AsyncPgConnection> {
    let mut conn = shared::db::connect(database_url).await?;
    diesel::sql_query(format!("SET application_name = '{APPLICATION_NAME}'"))
        .execute(&mut conn)
        .await?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_notification_wakes_only_the_streams_of_its_payment() {
        let hub = Hub::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut sa = hub.subscribe(a);
        let mut sb = hub.subscribe(b);
        hub.notify(a);
        assert!(sa.changed().await);
        let woke = tokio::time::timeout(Duration::from_millis(50), sb.changed()).await;
        assert!(woke.is_err(), "b was woken by a's change");
        // A resync wakes everyone.
        hub.resync();
        assert!(sb.changed().await);
    }

    #[tokio::test]
    async fn a_payment_nobody_follows_is_forgotten() {
        let hub = Hub::new();
        let id = Uuid::new_v4();
        let first = hub.subscribe(id);
        let second = hub.subscribe(id);
        drop(first);
        assert_eq!(hub.watchers.lock().unwrap().len(), 1);
        drop(second);
        assert!(hub.watchers.lock().unwrap().is_empty());
        hub.notify(id); // nobody to wake: nothing happens
    }
}
