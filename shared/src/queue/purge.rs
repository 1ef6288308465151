//! Deleting finished jobs: apalis never deletes one, so the done set, the data hash and one
//! meta hash per job grow without bound. This deletes those finished more than a given age ago,
//! a page of the done set at a time, each page checked again inside a Lua script.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::{scan, scripts};

#[derive(Debug, Serialize)]
pub struct PurgeReport {
    pub older_than_secs: u64,
    /// Jobs finished before this instant are deleted.
    pub cutoff: DateTime<Utc>,
    pub dry_run: bool,
    /// Done jobs looked at.
    pub scanned: u64,
    /// Done jobs deleted (or, dry, that would be).
    pub purged: u64,
}

/// Deletes the done jobs finished more than `older_than` ago (or, `dry_run`, counts them).
pub async fn purge_done(
    conn: &mut impl RedisConn,
    keys: &Keys,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<PurgeReport> {
    let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    let cutoff_secs = Utc::now().timestamp().saturating_sub(secs);
    let done = keys.done();
    let (mut scanned, mut purged) = (0u64, 0u64);
    let mut cursor = 0;
    loop {
        // Deleting members while SSCAN walks the set is safe: SSCAN still returns every
        // member that stays in the set for the whole walk.
        let (next, ids) = scan::set_page(conn, &done, cursor).await?;
        scanned += ids.len() as u64;
        purged += scripts::purge_done(conn, keys, &ids, cutoff_secs, dry_run).await?;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(PurgeReport {
        older_than_secs: older_than.as_secs(),
        cutoff: DateTime::from_timestamp(cutoff_secs, 0).unwrap_or_default(),
        dry_run,
        scanned,
        purged,
    })
}
