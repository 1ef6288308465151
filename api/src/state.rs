//! The state every handler shares: cheap to clone (pools and handles inside).

use std::sync::Arc;

use apalis_redis::ConnectionManager;
use shared::db::PgPool;
use shared::jobs::ChargeQueue;
use shared::settings::Settings;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub queue: ChargeQueue,
    /// For readiness checks; the queue has its own handle on the same connection.
    pub redis: ConnectionManager,
    pub settings: Arc<Settings>,
}
