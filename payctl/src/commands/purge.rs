//! `payctl purge-done --older-than D [--dry-run]`: deletes the done jobs finished more than D
//! ago (`shared::queue::purge`).

use std::time::Duration;

use shared::queue::purge::{self, PurgeReport};

use crate::ctx::{Ctx, Report};
use crate::duration::human_secs;

pub async fn run(
    ctx: &mut Ctx,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<PurgeReport> {
    purge::purge_done(&mut ctx.redis, &ctx.keys, older_than, dry_run).await
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
