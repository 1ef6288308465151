//! `payctl show <task-id|transaction-id>`: a job and its transaction side by side. A
//! transaction id shows the transaction and every job whose payload names it.

use chrono::{DateTime, Utc};
use shared::queue::show::{self, ShowReport, TxView};
use shared::queue::task::Job;

use crate::commands::check_task_id;
use crate::commands::list::jobs_table;
use crate::ctx::{Ctx, Report};
use crate::table::{Table, block, opt, side_by_side, time, time_rel};
use shared::events::PaymentEvent;

pub async fn run(ctx: &mut Ctx, id: &str) -> anyhow::Result<ShowReport> {
    let id = check_task_id(id)?;
    let workers = ctx.worker_names().await?;
    let (redis, pg, keys) = ctx.parts().await?;
    show::show(redis, pg, keys, id, &workers).await
}

fn job_block(j: &Job, now: DateTime<Utc>) -> Vec<String> {
    block(&[
        ("state", j.state.as_str().into()),
        ("due", time_rel(j.run_at, now)),
        ("worker", opt(j.worker.as_ref())),
        ("status", opt(j.status.as_ref())),
        (
            "attempts",
            format!("{} of {}", opt(j.attempts), opt(j.max_attempts)),
        ),
        ("locked by", opt(j.locked_by.as_ref())),
        ("locked at", time_rel(j.locked_at, now)),
        ("ended at", time_rel(j.done_at, now)),
        ("last result", j.outcome()),
        ("transaction", opt(j.transaction_id)),
    ])
}

fn tx_block(t: &TxView, now: DateTime<Utc>) -> Vec<String> {
    block(&[
        ("state", t.state.clone()),
        ("amount", format!("{} {}", t.amount, t.currency)),
        ("email", t.email.clone()),
        ("stripe id", opt(t.stripe_id.as_ref())),
        ("attempts", t.attempts.to_string()),
        ("next attempt", time_rel(Some(t.next_attempt_at), now)),
        ("lease owner", opt(t.lease_owner.as_ref())),
        ("lease until", time_rel(t.lease_expires_at, now)),
        ("last error", opt(t.last_error.as_ref())),
        ("error", opt(t.error_code.as_ref())),
        ("decline code", opt(t.error_decline_code.as_ref())),
        ("created", time(Some(t.created_at))),
        ("updated", time(Some(t.updated_at))),
    ])
}

/// The event log as a table: when, what, from which state, who.
pub fn history_table(history: &[PaymentEvent]) -> String {
    let mut t = Table::new(&["EVENT", "AT", "TYPE", "FROM", "TO", "ATTEMPT", "CAUSE"]);
    for e in history {
        t.row(vec![
            e.public_id(),
            time(Some(e.created_at)),
            e.kind.clone(),
            opt(e.previous_state.as_ref()),
            e.new_state.clone(),
            e.attempt.to_string(),
            e.cause.clone(),
        ]);
    }
    t.render()
}

impl Report for ShowReport {
    fn human(&self) -> String {
        let mut out = jobs_and_transaction(self);
        if !self.history.is_empty() {
            out.push_str(&format!(
                "
history: {} events
",
                self.history.len()
            ));
            out.push_str(&history_table(&self.history));
        }
        out
    }
}

fn jobs_and_transaction(report: &ShowReport) -> String {
    {
        let now = Utc::now();
        let tx_title = |t: &TxView| format!("transaction {}", t.id);
        match (report.found_by, &report.transaction, report.jobs.first()) {
            ("task", Some(t), Some(j)) => side_by_side(
                &format!("job {}", j.task_id),
                &job_block(j, now),
                &tx_title(t),
                &tx_block(t, now),
            ),
            ("task", None, Some(j)) => side_by_side(
                &format!("job {}", j.task_id),
                &job_block(j, now),
                "no transaction",
                &[],
            ),
            (_, Some(t), _) => {
                let mut out = format!("{}\n", tx_title(t));
                for line in tx_block(t, now) {
                    out.push_str(&format!("  {line}\n"));
                }
                out.push_str(&format!("\njobs: {}\n", report.jobs.len()));
                if !report.jobs.is_empty() {
                    out.push_str(&jobs_table(&report.jobs));
                }
                out
            }
            _ => "nothing found\n".into(),
        }
    }
}
