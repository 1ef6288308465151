//! `payctl reconcile --since 1h`: one reconciler pass (`worker::reconcile`) over the intents
//! Stripe lists as created within the window, with this process's own Stripe client (it
//! shares the workers' rate limit, at background priority).

use std::time::Duration;

use chrono::Utc;
use worker::reconcile::{self, Report as PassReport};
use worker::stripe::Stripe;

use crate::ctx::{Ctx, Report};

pub async fn run(ctx: &mut Ctx, since: Duration) -> anyhow::Result<PassReport> {
    let s = &ctx.settings;
    let redis = shared::queue::redis_connection(&s.redis_url, s.redis_ca_file.as_deref())?;
    let stripe = Stripe::new(&s.stripe, redis, &s.queue_namespace)?;
    let db = shared::db::pool(&s.database_url, 1)?;
    let to = Utc::now();
    let from = to - chrono::TimeDelta::from_std(since).unwrap_or_default();
    reconcile::pass(&db, &stripe, from, to).await
}

impl Report for PassReport {
    fn human(&self) -> String {
        format!(
            "reconciled {} to {}: {} intents listed ({} ours, {} pages), {} payments fixed, {} \
             complete payments checked, {} new discrepancies\n",
            crate::table::time(self.from),
            crate::table::time(self.to),
            self.intents,
            self.ours,
            self.pages,
            self.fixed,
            self.complete_rows,
            self.discrepancies,
        )
    }
}
