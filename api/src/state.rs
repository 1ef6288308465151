//! The state every handler shares: cheap to clone (pools and handles inside).

use std::sync::Arc;

use redis::aio::ConnectionManager;
use shared::db::PgPool;
use shared::queue::ChargeQueue;
use shared::queue::keys::Keys;
use shared::settings::Settings;
use tokio::sync::watch;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// New payments go through here, inserted together with the others POSTed meanwhile.
    pub inserts: crate::inserts::Inserts,
    pub queue: ChargeQueue,
    /// For readiness checks and the ops views; the queue has its own handle on the same
    /// connection.
    pub redis: ConnectionManager,
    /// The queue's Redis keys, for the ops views and the queue gauges.
    pub keys: Arc<Keys>,
    pub settings: Arc<Settings>,
    /// Which payments changed, told by Postgres (`crate::live`): what event streams wait on.
    pub live: Arc<crate::live::Hub>,
    /// Long-lived responses (event streams) end when the server is told to stop; otherwise a
    /// graceful shutdown would wait for every open checkout page.
    pub shutdown: Shutdown,
}

/// The receiving side of the server's stop signal.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Resolves once the server is stopping. A dropped sender means nobody can ever stop us
    /// this way, so that waits forever rather than ending every stream at once.
    pub async fn wait(&mut self) {
        if self.0.wait_for(|stopping| *stopping).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
