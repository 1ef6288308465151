//! The ops page's view of dead jobs, and its retry button, through `shared::queue` with the
//! api's own Redis connection and Postgres pool: one implementation of the key layout and of
//! the retry for the CLI and the page.

use serde::Serialize;
use shared::queue::task::JobState;
use shared::queue::{dead, listing, workers};
use uuid::Uuid;

use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct DeadJob {
    pub task_id: String,
    pub transaction_id: Option<Uuid>,
    pub attempts: Option<u32>,
    pub last_error: Option<String>,
}

async fn worker_names(state: &AppState) -> anyhow::Result<Vec<String>> {
    let dead_after = state.settings.worker.presumed_dead_after();
    let listed = workers::registered(&mut state.redis.clone(), &state.keys, dead_after).await?;
    Ok(listed.into_iter().map(|w| w.name).collect())
}

pub async fn dead_jobs(state: &AppState, limit: usize) -> anyhow::Result<Vec<DeadJob>> {
    let names = worker_names(state).await?;
    let mut redis = state.redis.clone();
    let listed = listing::list(&mut redis, &state.keys, JobState::Dead, &names, limit).await?;
    Ok(listed
        .jobs
        .into_iter()
        .map(|j| DeadJob {
            task_id: j.task_id,
            transaction_id: j.transaction_id,
            attempts: j.attempts,
            last_error: j.error,
        })
        .collect())
}

/// `Ok(false)` when the id is not a dead job (unknown, or already moved back).
pub async fn retry(state: &AppState, task_id: &str) -> anyhow::Result<bool> {
    let mut redis = state.redis.clone();
    if !dead::is_dead(&mut redis, &state.keys, task_id).await? {
        return Ok(false);
    }
    let names = worker_names(state).await?;
    let mut pg = state.db.get().await?;
    dead::retry(&mut redis, &mut pg, &state.keys, task_id, &names).await?;
    Ok(true)
}
