//! `payctl stuck`: unfinished payments older than a threshold, each with the reason it is not
//! moving (`shared::queue::stuck`).

use std::fmt::Write;
use std::time::Duration;

use shared::queue::stuck::{self, StuckReport};

use crate::ctx::{Ctx, Report};
use crate::duration::human_secs;
use crate::table::{Table, opt};

pub async fn run(ctx: &mut Ctx, older_than: Duration, limit: i64) -> anyhow::Result<StuckReport> {
    let workers = ctx.workers().await?;
    let (redis, pg, keys) = ctx.parts().await?;
    stuck::stuck(redis, pg, keys, workers, older_than, limit).await
}

impl Report for StuckReport {
    fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "unfinished transactions older than {}: {}",
            human_secs(self.older_than_secs.try_into().unwrap_or(i64::MAX)),
            self.transactions.len()
        );
        if self.transactions.is_empty() {
            return out;
        }
        let mut t = Table::new(&[
            "TRANSACTION",
            "STATE",
            "AGE",
            "ATTEMPTS",
            "REASON",
            "LAST ERROR",
        ]);
        for s in &self.transactions {
            t.row(vec![
                s.transaction_id.to_string(),
                s.state.clone(),
                human_secs(s.age_secs),
                s.attempts.to_string(),
                s.reason.clone(),
                opt(s.last_error.as_ref()),
            ]);
        }
        out.push_str(&t.render());
        out
    }
}
