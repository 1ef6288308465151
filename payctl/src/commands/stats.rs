//! `payctl stats`: how many jobs are in each place, who is working, where the payments are.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use shared::state_machine::TxState;

use crate::ctx::{Ctx, Report, Worker};
use crate::duration::human_secs;
use crate::table::{Table, time_rel};

#[derive(Debug, Serialize)]
pub struct Stats {
    pub queue: String,
    pub scheduled: u64,
    /// Scheduled jobs already due: a worker moves them to `active` on its next poll.
    pub scheduled_due: u64,
    pub active: u64,
    pub inflight: u64,
    pub done: u64,
    pub dead: u64,
    /// Payloads in `{q}:data`: every job not yet purged.
    pub stored: u64,
    pub presumed_dead_after_secs: f64,
    pub workers: Vec<WorkerStats>,
    /// Transactions per state; `None` when Postgres could not be read.
    pub transactions: Option<BTreeMap<String, i64>>,
    pub transactions_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct WorkerStats {
    #[serde(flatten)]
    pub worker: Worker,
    pub inflight: u64,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Stats> {
    let workers = ctx.workers().await?;
    let k = &ctx.keys;
    let now = Utc::now().timestamp();
    let mut pipe = redis::pipe();
    pipe.zcard(k.scheduled())
        .zcount(k.scheduled(), "-inf", now)
        .llen(k.active())
        .scard(k.done())
        .scard(k.dead())
        .hlen(k.data());
    for w in &workers {
        pipe.scard(k.inflight(&w.name));
    }
    let counts: Vec<u64> = pipe
        .query_async(&mut ctx.redis)
        .await
        .context("counting jobs")?;
    let at = |i: usize| counts.get(i).copied().unwrap_or(0);
    let workers: Vec<WorkerStats> = workers
        .into_iter()
        .enumerate()
        .map(|(i, worker)| WorkerStats {
            worker,
            inflight: at(6 + i),
        })
        .collect();

    // The queue view is what an operator needs most when Postgres is in trouble: keep it.
    let (transactions, transactions_error) = match transactions(ctx).await {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    Ok(Stats {
        queue: ctx.keys.queue().to_owned(),
        scheduled: at(0),
        scheduled_due: at(1),
        active: at(2),
        inflight: workers.iter().map(|w| w.inflight).sum(),
        done: at(3),
        dead: at(4),
        stored: at(5),
        presumed_dead_after_secs: ctx.presumed_dead_after().as_secs_f64(),
        workers,
        transactions,
        transactions_error,
    })
}

async fn transactions(ctx: &mut Ctx) -> anyhow::Result<BTreeMap<String, i64>> {
    let conn = ctx.pg().await?;
    Ok(crate::txdb::count_by_state(conn)
        .await?
        .into_iter()
        .collect())
}

impl Stats {
    fn queue_table(&self) -> String {
        let mut t = Table::new(&["STATE", "JOBS", ""]);
        let rows = [
            (
                "scheduled",
                self.scheduled,
                format!("{} due now", self.scheduled_due),
            ),
            ("active", self.active, "waiting for a worker".into()),
            ("in flight", self.inflight, String::new()),
            ("done", self.done, String::new()),
            ("dead", self.dead, String::new()),
            ("stored", self.stored, "payloads in the data hash".into()),
        ];
        for (name, n, note) in rows {
            t.row(vec![name.into(), n.to_string(), note]);
        }
        t.render()
    }

    fn workers_section(&self) -> String {
        let secs = self.presumed_dead_after_secs;
        let dead_after = if secs.fract() == 0.0 {
            human_secs(secs as i64)
        } else {
            format!("{secs:.1}s")
        };
        let mut out = format!(
            "workers: {} (presumed dead after {dead_after} without a heartbeat)\n",
            self.workers.len()
        );
        if self.workers.is_empty() {
            return out;
        }
        let now = Utc::now();
        let mut t = Table::new(&["WORKER", "LAST HEARTBEAT", "IN FLIGHT", "STATUS"]);
        for w in &self.workers {
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
            self.queue,
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
