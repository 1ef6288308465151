//! The promise, checked: every accepted payment is in Postgres, is final, agrees with what
//! stripe-sim's ledger says was charged, and was charged at most once.

use std::collections::HashMap;

use serde::Deserialize;

use crate::load::Accepted;

#[derive(Debug, Deserialize)]
struct LedgerCharge {
    payment_intent: String,
    transaction_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LedgerIntent {
    id: String,
    status: String,
}

#[derive(Debug, Deserialize)]
struct Ledger {
    charges: Vec<LedgerCharge>,
    payment_intents: Vec<LedgerIntent>,
}

/// What Stripe allows to be confirmed again: a failed payment's intent must not be left so.
const CONFIRMABLE: [&str; 3] = [
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
];

#[derive(Debug, Default)]
pub struct Verdicts {
    pub payments: usize,
    pub complete: usize,
    pub failed: usize,
    /// Accepted (202) but not in the database.
    pub lost: usize,
    /// Not in a final state.
    pub stuck: usize,
    /// More than one successful charge for one transaction.
    pub double_charged: usize,
    /// Database state disagreeing with the ledger (complete without a charge, failed with one,
    /// or a different PaymentIntent id).
    pub mismatched: usize,
    /// A success card that failed, or a decline card that completed: allowed only when the
    /// ledger agrees (counted for information).
    pub unexpected_outcome: usize,
    /// Recorded failed although Stripe charged the card (part of `mismatched`).
    pub charged_but_failed: usize,
    /// Failed, with an intent that could still be confirmed (a cancel not made).
    pub failed_confirmable: usize,
    /// 3-D Secure payments nobody completed, ended failed.
    pub abandoned: usize,
    /// Discrepancies recorded, and of them corrections to complete.
    pub discrepancies: i64,
    pub corrected: i64,
    pub examples: Vec<String>,
}

impl Verdicts {
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.stuck == 0
            && self.double_charged == 0
            && self.mismatched == 0
            && self.failed_confirmable == 0
    }
}

pub async fn check(
    database_url: &str,
    sim_url: &str,
    accepted: &[Accepted],
) -> anyhow::Result<Verdicts> {
    let ledger: Ledger = reqwest::get(format!("{sim_url}/sim/ledger"))
        .await?
        .json()
        .await?;
    let status: HashMap<&str, &str> = ledger
        .payment_intents
        .iter()
        .map(|p| (p.id.as_str(), p.status.as_str()))
        .collect();
    let mut charges: HashMap<String, Vec<String>> = HashMap::new();
    for c in ledger.charges {
        if let Some(t) = c.transaction_id {
            charges.entry(t).or_default().push(c.payment_intent);
        }
    }
    let mut conn = shared::db::connect(database_url).await?;
    let mut v = Verdicts {
        payments: accepted.len(),
        ..Default::default()
    };
    for a in accepted {
        let row = shared::transactions::find(&mut conn, a.id).await?;
        let Some(row) = row else {
            v.lost += 1;
            v.examples
                .push(format!("{}: accepted but not in the database", a.id));
            continue;
        };
        let paid = charges
            .get(&a.id.to_string())
            .map_or(&[][..], Vec::as_slice);
        if paid.len() > 1 {
            v.double_charged += 1;
            v.examples
                .push(format!("{}: charged {} times", a.id, paid.len()));
        }
        let state = row.state.as_str();
        match state {
            "complete" => {
                v.complete += 1;
                if paid.len() != 1 || row.stripe_id.as_deref() != paid.first().map(String::as_str) {
                    v.mismatched += 1;
                    v.examples
                        .push(format!("{}: complete but ledger has {paid:?}", a.id));
                }
            }
            "failed" => {
                v.failed += 1;
                if !paid.is_empty() {
                    v.mismatched += 1;
                    v.charged_but_failed += 1;
                    v.examples
                        .push(format!("{}: failed but charged {paid:?}", a.id));
                }
                let left = row.stripe_id.as_deref().and_then(|pi| status.get(pi));
                if left.is_some_and(|s| CONFIRMABLE.contains(s)) {
                    v.failed_confirmable += 1;
                    v.examples
                        .push(format!("{}: failed, its intent still {left:?}", a.id));
                }
                if row.error_code.as_deref() == Some("authentication_not_completed") {
                    v.abandoned += 1;
                }
            }
            other => {
                v.stuck += 1;
                v.examples
                    .push(format!("{}: stuck in {other} ({:?})", a.id, row.last_error));
            }
        }
        let expected_success = a.payment_method == "pm_card_visa";
        if row.state.is_final() && expected_success != (row.state == "complete") {
            v.unexpected_outcome += 1;
        }
    }
    let counts = shared::discrepancies::count_by_kind(&mut conn).await?;
    v.discrepancies = counts.iter().map(|(_, n)| n).sum();
    v.corrected = counts
        .iter()
        .find(|(k, _)| *k == "corrected_to_complete")
        .map_or(0, |(_, n)| *n);
    v.examples.truncate(20);
    Ok(v)
}

/// [`check`], again and again for up to `settle` while a correction or a cancel is still on
/// its way (a payment charged after it was recorded failed, an intent not canceled yet).
pub async fn check_settled(
    database_url: &str,
    sim_url: &str,
    accepted: &[Accepted],
    settle: std::time::Duration,
) -> anyhow::Result<Verdicts> {
    let deadline = std::time::Instant::now() + settle;
    loop {
        let v = check(database_url, sim_url, accepted).await?;
        let settled = v.charged_but_failed == 0 && v.failed_confirmable == 0;
        if settled || std::time::Instant::now() >= deadline {
            return Ok(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Failed payments that hold an intent: (transaction, intent), for the late confirms.
pub async fn failed_with_intent(database_url: &str) -> anyhow::Result<Vec<(uuid::Uuid, String)>> {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use shared::schema::transactions::dsl;
    let mut conn = shared::db::connect(database_url).await?;
    let rows: Vec<(uuid::Uuid, Option<String>)> = dsl::transactions
        .filter(dsl::state.eq(shared::state_machine::TxState::Failed))
        .filter(dsl::stripe_id.is_not_null())
        .select((dsl::id, dsl::stripe_id))
        .load(&mut conn)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, pi)| Some((id, pi?)))
        .collect())
}

/// Unfinished transactions in the database right now.
pub async fn unfinished(database_url: &str) -> anyhow::Result<i64> {
    let mut conn = shared::db::connect(database_url).await?;
    let counts = shared::transactions::count_by_state(&mut conn).await?;
    Ok(counts
        .iter()
        .filter(|(s, _)| !s.is_final())
        .map(|(_, n)| n)
        .sum())
}
