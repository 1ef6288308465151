//! One module per subcommand; each `run` returns a report that prints as a table or JSON.

pub mod discrepancies;
pub mod list;
pub mod purge;
pub mod reconcile;
pub mod retry;
pub mod show;
pub mod stats;
pub mod stuck;
pub mod webhooks;

/// Task ids are ULIDs by default but apalis accepts any string; refuse only what cannot be
/// an id, so a typo gives a clear message instead of an odd Redis key.
pub fn check_task_id(id: &str) -> anyhow::Result<&str> {
    let id = id.trim();
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("`{}` is not a task id", id.escape_debug());
    }
    Ok(id)
}
