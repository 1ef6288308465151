//! What every command works with: the settings, the queue's keys, a Redis connection, a
//! Postgres connection made on first use (`purge-done` never needs one), and the workers.

use std::time::Duration;

use anyhow::Context;
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use shared::settings::Settings;

use redis::aio::MultiplexedConnection;
use shared::queue::keys::Keys;
use shared::queue::workers::{self, Worker};

pub type Conn = MultiplexedConnection;

/// Opens one connection with short timeouts: an ops command should fail in seconds, not hang.
pub async fn connect(redis_url: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Conn> {
    let client = shared::queue::redis_client(redis_url, ca_file)
        .context("REDIS_URL is not a valid Redis URL")?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("cannot connect to Redis (REDIS_URL)")
}

/// One Postgres connection, given 5 s to open.
pub async fn connect_pg(database_url: &str) -> anyhow::Result<AsyncPgConnection> {
    let connect = shared::db::connect(database_url);
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .context("cannot connect to Postgres (DATABASE_URL)")
}

pub struct Ctx {
    pub settings: Settings,
    pub keys: Keys,
    pub redis: Conn,
    pg: Option<AsyncPgConnection>,
}

impl Ctx {
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let redis = connect(&settings.redis_url, settings.redis_ca_file.as_deref()).await?;
        Ok(Self {
            keys: Keys::new(&settings.queue_namespace),
            settings,
            redis,
            pg: None,
        })
    }

    pub async fn pg(&mut self) -> anyhow::Result<&mut AsyncPgConnection> {
        if self.pg.is_none() {
            self.pg = Some(connect_pg(&self.settings.database_url).await?);
        }
        self.pg.as_mut().context("no Postgres connection")
    }

    /// How long a worker may go without a heartbeat before apalis presumes it dead.
    pub fn presumed_dead_after(&self) -> Duration {
        self.settings.worker.presumed_dead_after()
    }

    /// The registered workers' names.
    pub async fn worker_names(&mut self) -> anyhow::Result<Vec<String>> {
        Ok(self.workers().await?.into_iter().map(|w| w.name).collect())
    }

    /// The Redis connection, the Postgres connection (made now if need be) and the keys, apart,
    /// for a function that needs all three.
    pub async fn parts(&mut self) -> anyhow::Result<(&mut Conn, &mut AsyncPgConnection, &Keys)> {
        self.pg().await?;
        let pg = self.pg.as_mut().context("no Postgres connection")?;
        Ok((&mut self.redis, pg, &self.keys))
    }

    /// Every registered worker, by name.
    pub async fn workers(&mut self) -> anyhow::Result<Vec<Worker>> {
        let dead_after = self.presumed_dead_after();
        workers::registered(&mut self.redis, &self.keys, dead_after).await
    }
}

/// What a command hands back: JSON for scripts, text for people.
pub trait Report: Serialize {
    fn human(&self) -> String;

    /// Set when the command did its work only in part: printed after the output, exit code 1.
    fn partial_failure(&self) -> Option<String> {
        None
    }
}
