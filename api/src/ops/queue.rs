//! The ops page's view of dead jobs, and its retry button, through `payctl`'s library: one
//! implementation of the key layout and of the retry script for the CLI and the page.

use payctl::commands::{list, retry};
use payctl::ctx::Ctx;
use serde::Serialize;
use shared::queue::task::JobState;
use uuid::Uuid;

use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct DeadJob {
    pub task_id: String,
    pub transaction_id: Option<Uuid>,
    pub attempts: Option<u32>,
    pub last_error: Option<String>,
}

async fn ctx(state: &AppState) -> anyhow::Result<Ctx> {
    Ctx::connect((*state.settings).clone()).await
}

pub async fn dead_jobs(state: &AppState, limit: usize) -> anyhow::Result<Vec<DeadJob>> {
    let mut ctx = ctx(state).await?;
    let listed = list::run(&mut ctx, JobState::Dead, limit).await?;
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
    let mut ctx = ctx(state).await?;
    let is_dead = shared::queue::scan::set_members(&mut ctx.redis, &ctx.keys.dead(), None)
        .await?
        .iter()
        .any(|t| t == task_id);
    if !is_dead {
        return Ok(false);
    }
    retry::one(&mut ctx, task_id).await?;
    Ok(true)
}
