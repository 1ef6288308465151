//! The reconciler: Postgres held against Stripe's consistent list of intents for a window.
//!
//! Every succeeded intent carrying our `metadata[transaction_id]` must have a `complete` row
//! that names it, and every `complete` row its succeeded intent. What Stripe's word decides is
//! fixed (a payment Stripe charged becomes `complete`: a correction if it was recorded
//! `failed`); the rest is recorded as a discrepancy for people (a second succeeded intent for
//! one payment, an intent for a payment we do not have, a `complete` payment without a charge).
//!
//! It runs in every worker every `RECONCILE_INTERVAL_MS` (one worker at a time, by a Redis
//! lock) over the last `RECONCILE_WINDOW_MS`, and on demand (`payctl reconcile --since 1h`).
//! Its list calls take the shared rate limit at background priority: they yield to charges.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::Serialize;
use shared::db::{PgConn, PgPool};
use shared::discrepancies::{self, NewDiscrepancy};
use shared::intent::IntentFacts;
use shared::models::Transaction;
use shared::state_machine::TxState;
use shared::state_machine::change::{Source, Transition, change};
use shared::state_machine::outcome::Outcome;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::stripe::{Priority, Stripe};

/// What one pass found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Intents Stripe listed in the window, and with our metadata.
    pub intents: usize,
    pub ours: usize,
    /// List pages read (Stripe requests).
    pub pages: usize,
    /// Payments moved to `complete` because Stripe charged them (corrections included).
    pub fixed: usize,
    /// Discrepancies recorded for the first time.
    pub discrepancies: usize,
    /// `complete` payments checked against their intent.
    pub complete_rows: usize,
}

/// How much of the window one step of a pass holds in memory: the intents Stripe created in
/// one slice, and the succeeded ones of two. At 200 payments/s a slice is 12,000 intents; a
/// pass over the whole window at once held every intent of the last hour (the soak at 200/s:
/// the worker went from 21 to 146 MB at its first pass).
const SLICE_SECS: i64 = 60;

/// One pass over the intents created within `[from, to]`, one slice of [`SLICE_SECS`] after
/// another, so what it holds is bounded by the payment rate, not by the window.
///
/// Every succeeded intent is checked against its row as each list page arrives. A `complete`
/// row of a slice is checked against the succeeded intents of its own slice and the next one
/// (its intent is created after the row: a retry may cross the slice's end); one whose intent
/// neither showed is asked for by id (a consistent read) before it is called a discrepancy.
pub async fn pass(
    db: &PgPool,
    stripe: &Stripe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let mut report = Report {
        from: Some(from),
        to: Some(to),
        ..Report::default()
    };
    let mut conn = db.get().await?;
    // The slice before this one, its rows still to check once this one's intents are known.
    let mut previous: Option<(DateTime<Utc>, DateTime<Utc>, HashSet<String>)> = None;
    let mut start = from.timestamp();
    let end = to.timestamp();
    while start <= end {
        let last = (start + SLICE_SECS - 1).min(end);
        let succeeded = check_intents(&mut conn, stripe, start, last, &mut report).await?;
        // The rows' own bounds: the window's, at the slices' seconds in between.
        let rows_from = if start == from.timestamp() {
            from
        } else {
            at(start)
        };
        let rows_to = if last == end { to } else { at(last + 1) };
        if let Some((f, t, before)) = previous.take() {
            let both: HashSet<&str> = before
                .iter()
                .chain(&succeeded)
                .map(String::as_str)
                .collect();
            check_complete_rows(&mut conn, stripe, f, t, &both, &mut report).await?;
        }
        previous = Some((rows_from, rows_to, succeeded));
        start = last + 1;
    }
    if let Some((f, t, last)) = previous {
        let seen: HashSet<&str> = last.iter().map(String::as_str).collect();
        check_complete_rows(&mut conn, stripe, f, t, &seen, &mut report).await?;
    }
    metrics::counter!("payments_reconcile_passes_total").increment(1);
    tracing::info!(?report, "reconciler pass done");
    Ok(report)
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Lists the intents created within `[from, to]` (Unix seconds, inclusive) page by page,
/// holds each succeeded one of ours against its row, and returns the succeeded intents' ids.
async fn check_intents(
    conn: &mut PgConn<'_>,
    stripe: &Stripe,
    from: i64,
    to: i64,
    report: &mut Report,
) -> anyhow::Result<HashSet<String>> {
    let mut succeeded = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = stripe
            .list(from, to, after.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("listing intents: {e}"))?;
        report.pages += 1;
        report.intents += page.len();
        after = page.last().map(|i| i.id.clone());
        let ours: Vec<(Uuid, IntentFacts)> = page
            .into_iter()
            .filter_map(|i| {
                let id = i
                    .transaction_id
                    .as_deref()
                    .and_then(|t| Uuid::parse_str(t).ok())?;
                Some((id, i))
            })
            .collect();
        report.ours += ours.len();
        let ids: Vec<Uuid> = ours.iter().map(|(id, _)| *id).collect();
        let rows: HashMap<Uuid, Transaction> = shared::transactions::find_many(conn, &ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        for (id, intent) in ours {
            if intent.status.as_deref() != Some("succeeded") {
                continue;
            }
            check_succeeded(conn, id, &intent, rows.get(&id), report).await?;
            succeeded.insert(intent.id);
        }
        if !more || after.is_none() {
            break;
        }
    }
    Ok(succeeded)
}

/// A succeeded intent of ours against its row: Stripe's word decides what it can.
async fn check_succeeded(
    conn: &mut PgConn<'_>,
    id: Uuid,
    intent: &IntentFacts,
    row: Option<&Transaction>,
    report: &mut Report,
) -> anyhow::Result<()> {
    match row {
        None => {
            let d = discrepancy(
                "unknown_transaction",
                Some(id),
                &intent.id,
                "a succeeded intent names a transaction we do not have",
            );
            report.discrepancies += usize::from(discrepancies::record(conn, &d).await?);
        }
        Some(row) if row.stripe_id.as_deref().is_some_and(|s| s != intent.id) => {
            let d = discrepancy(
                "other_succeeded_intent",
                Some(id),
                &intent.id,
                "a second succeeded intent for this payment: the customer may be charged twice",
            );
            report.discrepancies += usize::from(discrepancies::record(conn, &d).await?);
        }
        Some(row) if row.state != TxState::Complete => {
            let outcome = Outcome::Complete {
                stripe_id: intent.id.clone(),
            };
            let fix = Transition::FromStripe {
                outcome: &outcome,
                source: Source::Reconciler,
                stripe_event: None,
            };
            if change(conn, id, fix).await?.is_some_and(|c| c.applied) {
                report.fixed += 1;
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// `complete` payments created within `[from, to]` whose intent the list did not show
/// succeeded: asked for by id (a consistent read) before they are called a discrepancy.
async fn check_complete_rows(
    conn: &mut PgConn<'_>,
    stripe: &Stripe,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    succeeded: &HashSet<&str>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let complete = shared::transactions::complete_intents_between(conn, from, to).await?;
    report.complete_rows += complete.len();
    for (id, stripe_id) in complete {
        let Some(stripe_id) = stripe_id else {
            continue;
        };
        if succeeded.contains(stripe_id.as_str()) {
            continue;
        }
        let charged = match stripe
            .retrieve(&stripe_id, Priority::Background, None)
            .await
        {
            Ok(i) => i.status.as_deref() == Some("succeeded"),
            // Unknown is not absent: try again at the next pass.
            Err(_) => continue,
        };
        if !charged {
            let d = discrepancy(
                "complete_without_charge",
                Some(id),
                &stripe_id,
                "recorded complete, but Stripe does not show its intent succeeded",
            );
            report.discrepancies += usize::from(discrepancies::record(conn, &d).await?);
        }
    }
    Ok(())
}

fn discrepancy<'a>(
    kind: &'a str,
    transaction_id: Option<Uuid>,
    stripe_id: &'a str,
    detail: &'a str,
) -> NewDiscrepancy<'a> {
    NewDiscrepancy {
        kind,
        transaction_id,
        stripe_id: Some(stripe_id),
        related_transaction_id: None,
        detail,
        source: Source::Reconciler.as_str(),
    }
}

/// The periodic pass: every `interval`, over the last `window`, by one worker at a time.
pub struct Reconciler {
    pub db: PgPool,
    /// The worker's own Stripe client (its breaker and rate limit) and name.
    pub ctx: std::sync::Arc<crate::jobs::stripe_charge::ChargeContext>,
    pub redis: ConnectionManager,
    pub lock_key: String,
    pub interval: Duration,
    pub window: Duration,
}

impl Reconciler {
    pub async fn run(self, stop: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // not at start: the worker has charges to make first
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !crate::turn::take(&self.redis, &self.lock_key, &self.ctx.owner, self.interval).await
            {
                continue;
            }
            let to = Utc::now();
            let from = to - chrono::TimeDelta::from_std(self.window).unwrap_or_default();
            if let Err(e) = pass(&self.db, &self.ctx.stripe, from, to).await {
                tracing::warn!(error = %format!("{e:#}"), "reconciler pass failed; will try again");
            }
        }
    }
}
