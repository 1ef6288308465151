//! Unfinished payments older than a threshold, each with the reason it is not moving, decided
//! from the row (state, lease, schedule) and the jobs that name it: `payctl stuck`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;
use uuid::Uuid;

use crate::models::Transaction;
use crate::queue::RedisConn;
use crate::queue::keys::Keys;
use crate::queue::scan;
use crate::queue::task::{JobState, Place};
use crate::queue::workers::Worker;
use crate::state_machine::TxState;

/// A time in a reason, as payctl prints times: `2026-11-29 16:20:05` (UTC), or `-`.
fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    WaitingForCustomer,
    OutcomeUnknown,
    InFlight,
    LeaseHeldByGoneWorker,
    WaitingForRetry,
    JobQueued,
    JobDead,
    NoJob,
}

#[derive(Debug, Serialize)]
pub struct StuckReport {
    pub older_than_secs: u64,
    pub transactions: Vec<Stuck>,
}

#[derive(Debug, Serialize)]
pub struct Stuck {
    pub transaction_id: Uuid,
    pub state: String,
    pub age_secs: i64,
    pub attempts: i32,
    pub reason_code: Reason,
    pub reason: String,
    pub jobs: Vec<JobRef>,
    pub next_attempt_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct JobRef {
    pub task_id: String,
    pub state: JobState,
    pub worker: Option<String>,
}

/// Unfinished transactions created more than `older_than` ago (at most `limit`, oldest first),
/// each with the reason it is not moving; `workers` are the registered workers.
pub async fn stuck(
    conn: &mut impl RedisConn,
    pg: &mut AsyncPgConnection,
    keys: &Keys,
    workers: Vec<Worker>,
    older_than: Duration,
    limit: i64,
) -> anyhow::Result<StuckReport> {
    let rows = crate::transactions::unfinished_older_than(pg, older_than, limit)
        .await
        .context("reading unfinished transactions")?;
    let registered: Vec<String> = workers.iter().map(|w| w.name.clone()).collect();
    let live: Vec<String> = workers
        .into_iter()
        .filter(|w| !w.presumed_dead)
        .map(|w| w.name)
        .collect();
    let mut jobs = if rows.is_empty() {
        HashMap::new()
    } else {
        scan::open_jobs_by_transaction(conn, keys, &registered).await?
    };
    let now = Utc::now();
    let transactions = rows
        .into_iter()
        .map(|t| {
            let places = jobs.remove(&t.id).unwrap_or_default();
            diagnose(t, places, &live, now)
        })
        .collect();
    Ok(StuckReport {
        older_than_secs: older_than.as_secs(),
        transactions,
    })
}

fn diagnose(t: Transaction, places: Vec<Place>, live: &[String], now: DateTime<Utc>) -> Stuck {
    let row = Row {
        state: t.state,
        outcome_unknown_since: t.outcome_unknown_since,
        lease_owner: t.lease_owner.as_deref(),
        lease_expires_at: t.lease_expires_at,
        next_attempt_at: t.next_attempt_at,
    };
    let (reason_code, reason) = classify(&row, &places, live, now);
    let jobs = places
        .into_iter()
        .map(|p| JobRef {
            task_id: p.task_id,
            state: p.state,
            worker: p.worker,
        })
        .collect();
    Stuck {
        transaction_id: t.id,
        state: t.state.as_str().to_owned(),
        age_secs: (now - t.created_at).num_seconds(),
        attempts: t.attempts,
        reason_code,
        reason,
        jobs,
        next_attempt_at: t.next_attempt_at,
        lease_owner: t.lease_owner,
        lease_expires_at: t.lease_expires_at,
        last_error: t.last_error,
        created_at: t.created_at,
    }
}

/// The worker leases rows under its process name and registers with apalis under that name
/// plus a suffix (`-{restart}`, `-g{generation}-{restart}`): a live registration that is the
/// name, or starts with `{name}-`, means the lease holder is alive. Names end in random hex,
/// so one never prefixes another's.
fn is_live(owner: &str, live: &[String]) -> bool {
    live.iter().any(|w| {
        w == owner
            || w.strip_prefix(owner)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// A lease left on the row: its holder is still calling Stripe, or it died mid-attempt (an
/// expired lease is taken over by the next delivery of a job, if there is one).
fn lease_reason(
    owner: &str,
    until: Option<DateTime<Utc>>,
    live: &[String],
    now: DateTime<Utc>,
) -> (Reason, String) {
    let expired = until.is_none_or(|u| u <= now);
    if !expired && is_live(owner, live) {
        let why = format!("in flight at worker {owner} (lease until {})", time(until));
        return (Reason::InFlight, why);
    }
    let how = if expired { "expired" } else { "until" };
    let why = format!(
        "lease held by a worker that is gone: {owner} ({how} {})",
        time(until)
    );
    (Reason::LeaseHeldByGoneWorker, why)
}

/// Why `t` is not moving, most telling first: the customer, a lease, the retry schedule,
/// then the jobs that name it.
/// What of a transaction row decides its reason.
pub struct Row<'a> {
    pub state: TxState,
    /// A confirm was sent and its answer lost, since then.
    pub outcome_unknown_since: Option<DateTime<Utc>>,
    pub lease_owner: Option<&'a str>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub next_attempt_at: DateTime<Utc>,
}

pub fn classify(
    t: &Row<'_>,
    jobs: &[Place],
    live: &[String],
    now: DateTime<Utc>,
) -> (Reason, String) {
    if t.state == TxState::RequiresAction {
        return (
            Reason::WaitingForCustomer,
            "waiting for the customer (3-D Secure)".into(),
        );
    }
    if let Some(since) = t.outcome_unknown_since {
        return (
            Reason::OutcomeUnknown,
            format!(
                "outcome unknown since {}: a confirm went unanswered; resolving against Stripe",
                time(Some(since))
            ),
        );
    }
    if let Some(owner) = t.lease_owner {
        return lease_reason(owner, t.lease_expires_at, live, now);
    }
    if t.next_attempt_at > now {
        return (
            Reason::WaitingForRetry,
            format!("waiting for retry at {}", time(Some(t.next_attempt_at))),
        );
    }
    let open = |s: &JobState| {
        matches!(
            s,
            JobState::Scheduled | JobState::Active | JobState::Inflight
        )
    };
    if let Some(j) = jobs.iter().find(|j| open(&j.state)) {
        let what = match (&j.state, &j.worker) {
            (JobState::Inflight, Some(w)) => format!("job in flight at {w}"),
            (JobState::Scheduled, _) => "job scheduled".to_owned(),
            _ => "job queued".to_owned(),
        };
        return (Reason::JobQueued, what);
    }
    if let Some(j) = jobs.iter().find(|j| j.state == JobState::Dead) {
        return (
            Reason::JobDead,
            format!("job dead: payctl retry {}", j.task_id),
        );
    }
    (Reason::NoJob, "no job".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str) -> Row<'static> {
        Row {
            state: TxState::parse(state).unwrap(),
            outcome_unknown_since: None,
            lease_owner: None,
            lease_expires_at: None,
            next_attempt_at: Utc::now(),
        }
    }

    fn reason(t: &Row<'_>, jobs: &[Place], live: &[&str]) -> Reason {
        let live: Vec<String> = live.iter().map(|s| (*s).to_owned()).collect();
        classify(t, jobs, &live, Utc::now()).0
    }

    #[test]
    fn the_customer_comes_first_then_the_lease_then_the_schedule_then_the_jobs() {
        let scheduled = [Place::new("t1", JobState::Scheduled)];
        let dead = [Place::new("t2", JobState::Dead)];
        assert_eq!(
            reason(&row("requires_action"), &scheduled, &[]),
            Reason::WaitingForCustomer
        );

        let mut leased = row("processing");
        leased.lease_owner = Some("w1");
        leased.lease_expires_at = Some(Utc::now() + chrono::TimeDelta::minutes(1));
        assert_eq!(reason(&leased, &scheduled, &["w1"]), Reason::InFlight);
        assert_eq!(reason(&leased, &scheduled, &["w1-0"]), Reason::InFlight);
        assert_eq!(reason(&leased, &scheduled, &["w1-g2-0"]), Reason::InFlight);
        assert_eq!(
            reason(&leased, &scheduled, &["w2", "w10-0"]),
            Reason::LeaseHeldByGoneWorker
        );
        leased.lease_expires_at = Some(Utc::now() - chrono::TimeDelta::minutes(1));
        assert_eq!(
            reason(&leased, &scheduled, &["w1"]),
            Reason::LeaseHeldByGoneWorker
        );

        let mut later = row("processing");
        later.next_attempt_at = Utc::now() + chrono::TimeDelta::minutes(5);
        assert_eq!(reason(&later, &[], &[]), Reason::WaitingForRetry);

        let pending = row("pending");
        assert_eq!(reason(&pending, &scheduled, &[]), Reason::JobQueued);
        let both = [dead[0].clone(), scheduled[0].clone()];
        assert_eq!(reason(&pending, &both, &[]), Reason::JobQueued);
        assert_eq!(reason(&pending, &dead, &[]), Reason::JobDead);
        assert_eq!(reason(&pending, &[], &[]), Reason::NoJob);

        let mut unknown = row("processing");
        unknown.outcome_unknown_since = Some(Utc::now());
        unknown.lease_owner = Some("w1");
        assert_eq!(
            reason(&unknown, &scheduled, &["w1"]),
            Reason::OutcomeUnknown
        );
    }
}
