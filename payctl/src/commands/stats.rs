//! `payctl stats`: how many jobs are in each place, who is working, where the payments are.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use shared::state_machine::TxState;

use shared::queue::stats::{self, QueueStats};

use crate::ctx::{Ctx, Report};
use crate::duration::human_secs;
use crate::table::{Table, time_rel};

#[derive(Debug, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub queue: QueueStats,
    /// Transactions per state; `None` when Postgres could not be read.
    pub transactions: Option<BTreeMap<String, i64>>,
    pub transactions_error: Option<String>,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Stats> {
    let dead_after = ctx.presumed_dead_after();
    let queue = stats::stats(&mut ctx.redis, &ctx.keys, dead_after).await?;
    // The queue view is what an operator needs most when Postgres is in trouble: keep it.
    let (transactions, transactions_error) = match transactions(ctx).await {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(Stats {
        queue,
        transactions,
        transactions_error,
    })
}

async fn transactions(ctx: &mut Ctx) -> anyhow::Result<BTreeMap<String, i64>> {
    let conn = ctx.pg().await?;
    let counts = shared::transactions::count_by_state(conn)
        .await
        .context("counting transactions")?;
    Ok(counts
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), n))
        .collect())
}

impl Stats {
    fn queue_table(&self) -> String {
        let mut t = Table::new(&["STATE", "JOBS", ""]);
        let rows = [
            (
                "scheduled",
                self.queue.scheduled,
                format!("{} due now", self.queue.scheduled_due),
            ),
            ("active", self.queue.active, "waiting for a worker".into()),
            ("in flight", self.queue.inflight, String::new()),
            ("done", self.queue.done, String::new()),
            ("dead", self.queue.dead, String::new()),
            (
                "stored",
                self.queue.stored,
                "payloads in the data hash".into(),
            ),
        ];
        for (name, n, note) in rows {
            t.row(vec![name.into(), n.to_string(), note]);
        }
        t.render()
    }

    fn workers_section(&self) -> String {
        let secs = self.queue.presumed_dead_after_secs;
        let dead_after = if secs.fract() == 0.0 {
            human_secs(secs as i64)
        } else {
            format!("{secs:.1}s")
        };
        let mut out = format!(
            "workers: {} (presumed dead after {dead_after} without a heartbeat)\n",
            self.queue.workers.len()
        );
        if self.queue.workers.is_empty() {
            return out;
        }
        let now = Utc::now();
        let mut t = Table::new(&["WORKER", "LAST HEARTBEAT", "IN FLIGHT", "STATUS"]);
        for w in &self.queue.workers {
            let status = if w.worker.presumed_dead {
                "presumed dead"
            } else {
                "alive"
            };
            t.row(vec![
                w.worker.name.clone(),
                time_rel(w.worker.last_heartbeat, now),
                w.inflight.to_string(),
                status.into(),
            ]);
        }
        out.push_str(&t.render());
        out
    }

    fn transactions_section(&self) -> String {
        let Some(counts) = &self.transactions else {
            let why = self
                .transactions_error
                .as_deref()
                .unwrap_or("unknown error");
            return format!("transactions: unavailable: {why}\n");
        };
        let mut t = Table::new(&["STATE", "COUNT"]);
        for s in TxState::ALL {
            let n = counts.get(s.as_str()).copied().unwrap_or(0);
            t.row(vec![s.as_str().into(), n.to_string()]);
        }
        format!("transactions\n{}", t.render())
    }
}

impl Report for Stats {
    fn human(&self) -> String {
        format!(
            "queue {}\n{}\n{}\n{}",
            self.queue.queue,
            self.queue_table(),
            self.workers_section(),
            self.transactions_section()
        )
    }

    fn partial_failure(&self) -> Option<String> {
        self.transactions_error
            .as_ref()
            .map(|e| format!("transactions could not be counted: {e}"))
    }
}
