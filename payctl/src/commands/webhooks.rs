//! `payctl webhooks list|show|redeliver`: the merchant's webhooks as Postgres holds them
//! (`shared::merchant_webhooks`): each endpoint's health, the deliveries, one event's
//! deliveries and attempts, and sending again.

use std::fmt::Write;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use shared::events::{self, PaymentEvent};
use shared::merchant_webhooks::{self as hooks, AttemptRow, Delivery, EndpointHealth};

use crate::ctx::{Ctx, Report};
use crate::table::{Table, opt, time, time_rel};

#[derive(Debug, Serialize)]
pub struct ListReport {
    pub endpoints: Vec<EndpointHealth>,
    pub deliveries: Vec<Delivery>,
}

pub async fn list(ctx: &mut Ctx, state: Option<&str>, limit: i64) -> anyhow::Result<ListReport> {
    let conn = ctx.pg().await?;
    Ok(ListReport {
        endpoints: hooks::health(conn)
            .await
            .context("reading webhook endpoints")?,
        deliveries: hooks::list(conn, state, limit)
            .await
            .context("reading webhook deliveries")?,
    })
}

fn deliveries_table(deliveries: &[Delivery]) -> String {
    let now = Utc::now();
    let mut t = Table::new(&[
        "EVENT",
        "TYPE",
        "TRANSACTION",
        "URL",
        "STATE",
        "ATTEMPTS",
        "NEXT",
        "LAST",
        "ERROR",
    ]);
    for d in deliveries {
        t.row(vec![
            events::public_id(d.event_id),
            d.event_type.clone(),
            d.transaction_id.to_string(),
            d.url.clone(),
            d.state.clone(),
            d.attempts.to_string(),
            if d.state == "pending" {
                time_rel(Some(d.next_attempt_at), now)
            } else {
                "-".into()
            },
            opt(d.last_status),
            opt(d.last_error.as_ref()),
        ]);
    }
    t.render()
}

impl Report for ListReport {
    fn human(&self) -> String {
        let mut out = String::new();
        if self.endpoints.is_empty() {
            out.push_str("no webhook endpoints (MERCHANT_WEBHOOK_URL is not set)\n");
        } else {
            let mut t = Table::new(&[
                "ENDPOINT",
                "ENABLED",
                "PENDING",
                "FAILING",
                "GAVE UP",
                "DELIVERED",
                "OLDEST",
                "LAST ERROR",
            ]);
            for e in &self.endpoints {
                t.row(vec![
                    e.url.clone(),
                    e.enabled.to_string(),
                    e.pending.to_string(),
                    e.failing.to_string(),
                    e.failed.to_string(),
                    e.delivered.to_string(),
                    time(e.oldest_pending),
                    opt(e.last_error.as_ref()),
                ]);
            }
            out.push_str(&t.render());
        }
        let _ = writeln!(out, "\ndeliveries: {}", self.deliveries.len());
        if !self.deliveries.is_empty() {
            out.push_str(&deliveries_table(&self.deliveries));
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct ShowReport {
    pub event: PaymentEvent,
    /// The body the merchant's endpoints receive.
    pub body: serde_json::Value,
    pub deliveries: Vec<Delivery>,
    pub attempts: Vec<AttemptRow>,
}

pub async fn show(ctx: &mut Ctx, event_id: &str) -> anyhow::Result<ShowReport> {
    let id = parse_event_id(event_id)?;
    let conn = ctx.pg().await?;
    let event = events::find(conn, id)
        .await?
        .with_context(|| format!("no event {event_id}"))?;
    Ok(ShowReport {
        body: event.to_json(),
        deliveries: hooks::for_event(conn, id).await?,
        attempts: hooks::attempts_for_event(conn, id).await?,
        event,
    })
}

impl Report for ShowReport {
    fn human(&self) -> String {
        let e = &self.event;
        let mut out = format!(
            "{} {} of transaction {} at {} ({} -> {}, cause: {})\n",
            e.public_id(),
            e.kind,
            e.transaction_id,
            time(Some(e.created_at)),
            opt(e.previous_state.as_ref()),
            e.new_state,
            e.cause
        );
        let _ = writeln!(
            out,
            "\nbody:\n{}",
            serde_json::to_string_pretty(&self.body).unwrap_or_default()
        );
        let _ = writeln!(out, "\ndeliveries: {}", self.deliveries.len());
        if !self.deliveries.is_empty() {
            out.push_str(&deliveries_table(&self.deliveries));
        }
        let _ = writeln!(out, "\nattempts: {}", self.attempts.len());
        if !self.attempts.is_empty() {
            let mut t = Table::new(&["DELIVERY", "AT", "STATUS", "LATENCY", "ERROR"]);
            for a in &self.attempts {
                t.row(vec![
                    a.delivery_id.to_string(),
                    time(Some(a.attempted_at)),
                    opt(a.status),
                    format!("{} ms", a.latency_ms),
                    opt(a.error.as_ref()),
                ]);
            }
            out.push_str(&t.render());
        }
        out
    }
}

#[derive(Debug, Serialize)]
pub struct RedeliverReport {
    /// The event, or `None` for `--failed`.
    pub event: Option<String>,
    pub since_secs: Option<u64>,
    /// Deliveries made due now.
    pub due_now: usize,
}

pub async fn redeliver(ctx: &mut Ctx, event_id: &str) -> anyhow::Result<RedeliverReport> {
    let id = parse_event_id(event_id)?;
    let conn = ctx.pg().await?;
    if events::find(conn, id).await?.is_none() {
        anyhow::bail!("no event {event_id}");
    }
    Ok(RedeliverReport {
        event: Some(events::public_id(id)),
        since_secs: None,
        due_now: hooks::redeliver_event(conn, id).await?,
    })
}

pub async fn redeliver_failed(ctx: &mut Ctx, since: Duration) -> anyhow::Result<RedeliverReport> {
    let from = Utc::now() - chrono::TimeDelta::from_std(since).unwrap_or_default();
    let conn = ctx.pg().await?;
    Ok(RedeliverReport {
        event: None,
        since_secs: Some(since.as_secs()),
        due_now: hooks::redeliver_failed(conn, from).await?,
    })
}

impl Report for RedeliverReport {
    fn human(&self) -> String {
        match &self.event {
            Some(e) => format!("{e}: {} deliveries due now\n", self.due_now),
            None => format!("{} failed deliveries due now\n", self.due_now),
        }
    }
}

fn parse_event_id(id: &str) -> anyhow::Result<i64> {
    events::parse_public_id(id.trim())
        .with_context(|| format!("`{}` is not an event id (evt_123)", id.escape_debug()))
}
