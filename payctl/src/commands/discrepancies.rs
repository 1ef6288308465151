//! `payctl discrepancies [--since 7d]`: where Stripe's word contradicted ours, newest first.

use std::fmt::Write;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use shared::discrepancies::{self, Discrepancy};

use crate::ctx::{Ctx, Report};
use crate::table::{Table, opt, time};

#[derive(Debug, Serialize)]
pub struct DiscrepancyReport {
    pub since_secs: u64,
    pub discrepancies: Vec<Discrepancy>,
    /// Every kind ever found, with its count.
    pub totals: Vec<(String, i64)>,
}

pub async fn run(ctx: &mut Ctx, since: Duration, limit: i64) -> anyhow::Result<DiscrepancyReport> {
    let from = Utc::now() - chrono::TimeDelta::from_std(since).unwrap_or_default();
    let conn = ctx.pg().await?;
    let found = discrepancies::since(conn, from, limit)
        .await
        .context("reading discrepancies")?;
    let totals = discrepancies::count_by_kind(conn)
        .await
        .context("counting discrepancies")?
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    Ok(DiscrepancyReport {
        since_secs: since.as_secs(),
        discrepancies: found,
        totals,
    })
}

impl Report for DiscrepancyReport {
    fn human(&self) -> String {
        let mut out = String::new();
        let totals: Vec<String> = self
            .totals
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "discrepancies: {} in the window; ever: {}",
            self.discrepancies.len(),
            if totals.is_empty() {
                "none".into()
            } else {
                totals.join(", ")
            }
        );
        if self.discrepancies.is_empty() {
            return out;
        }
        let mut t = Table::new(&[
            "FOUND",
            "KIND",
            "TRANSACTION",
            "STRIPE ID",
            "RELATED",
            "SOURCE",
            "DETAIL",
        ]);
        for d in &self.discrepancies {
            t.row(vec![
                time(Some(d.found_at)),
                d.kind.clone(),
                opt(d.transaction_id),
                opt(d.stripe_id.as_ref()),
                opt(d.related_transaction_id),
                d.source.clone(),
                d.detail.clone(),
            ]);
        }
        out.push_str(&t.render());
        out
    }
}
