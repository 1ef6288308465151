//! What every command works with: the settings, the queue's keys, a Redis connection, a
//! Postgres connection made on first use (`purge-done` never needs one), and the workers.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use shared::settings::Settings;

use shared::queue::keys::Keys;
use shared::queue::task::{self, Conn};

pub struct Ctx {
    pub settings: Settings,
    pub keys: Keys,
    pub redis: Conn,
    pg: Option<AsyncPgConnection>,
}

/// A worker registered in `{q}:workers`, with the age of its last heartbeat.
#[derive(Clone, Debug, Serialize)]
pub struct Worker {
    pub name: String,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub age_secs: i64,
    /// No heartbeat for longer than `WORKER_HEARTBEAT_MS × WORKER_MISSED_HEARTBEATS`: a live
    /// worker will re-queue its in-flight jobs.
    pub presumed_dead: bool,
}

impl Ctx {
    pub async fn connect(settings: Settings) -> anyhow::Result<Self> {
        let redis = task::connect(&settings.redis_url).await?;
        Ok(Self {
            keys: Keys::new(&settings.queue_namespace),
            settings,
            redis,
            pg: None,
        })
    }

    pub async fn pg(&mut self) -> anyhow::Result<&mut AsyncPgConnection> {
        if self.pg.is_none() {
            self.pg = Some(crate::txdb::connect(&self.settings.database_url).await?);
        }
        self.pg.as_mut().context("no Postgres connection")
    }

    /// How long a worker may go without a heartbeat before apalis presumes it dead.
    pub fn presumed_dead_after(&self) -> Duration {
        let w = &self.settings.worker;
        w.heartbeat
            .saturating_mul(w.missed_heartbeats.try_into().unwrap_or(u32::MAX))
    }

    /// Every registered worker, by name. The set holds one entry per worker process start
    /// (a cleanly stopped worker stays listed), so it is small enough to read at once.
    pub async fn workers(&mut self) -> anyhow::Result<Vec<Worker>> {
        let key = self.keys.workers();
        let rows: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.redis)
            .await
            .with_context(|| format!("reading {key}"))?;
        let now = Utc::now().timestamp();
        let limit = self.presumed_dead_after().as_secs_f64();
        Ok(rows
            .into_iter()
            .map(|(name, score)| {
                // Heartbeats are whole unix seconds, so an age is up to a second short.
                let age_secs = now - score as i64;
                Worker {
                    name,
                    last_heartbeat: task::timestamp(score as i64),
                    age_secs,
                    presumed_dead: age_secs as f64 > limit,
                }
            })
            .collect())
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
