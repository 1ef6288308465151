//! `payctl purge-done --older-than D [--dry-run]`: apalis never deletes a finished job, so
//! the done set, the data hash and one meta hash per job grow without bound. This deletes
//! those finished more than D ago, a page of the done set at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ctx::{Ctx, Report};
use crate::duration::human_secs;
use shared::queue::scan;
use shared::queue::scripts;

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

pub async fn run(
    ctx: &mut Ctx,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<PurgeReport> {
    let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    let cutoff_secs = Utc::now().timestamp().saturating_sub(secs);
    let done = ctx.keys.done();
    let (mut scanned, mut purged) = (0u64, 0u64);
    let mut cursor = 0;
    loop {
        // Deleting members while SSCAN walks the set is safe: SSCAN still returns every
        // member that stays in the set for the whole walk.
        let (next, ids) = scan::set_page(&mut ctx.redis, &done, cursor).await?;
        scanned += ids.len() as u64;
        purged +=
            scripts::purge_done(&mut ctx.redis, &ctx.keys, &ids, cutoff_secs, dry_run).await?;
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

impl Report for PurgeReport {
    fn human(&self) -> String {
        let verb = if self.dry_run {
            "would purge"
        } else {
            "purged"
        };
        format!(
            "{verb} {} of {} done jobs finished more than {} ago (before {})\n",
            self.purged,
            self.scanned,
            human_secs(self.older_than_secs.try_into().unwrap_or(i64::MAX)),
            crate::table::time(Some(self.cutoff)),
        )
    }
}
