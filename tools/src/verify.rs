//! The promise, checked: every accepted payment is in Postgres, is final, agrees with what
//! stripe-sim's ledger says was charged, and was charged at most once.

use std::collections::HashMap;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::Deserialize;

use crate::load::Accepted;

#[derive(Debug, Deserialize)]
struct LedgerCharge {
    payment_intent: String,
    transaction_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Ledger {
    charges: Vec<LedgerCharge>,
}

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
    pub examples: Vec<String>,
}

impl Verdicts {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.stuck == 0 && self.double_charged == 0 && self.mismatched == 0
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
    let mut charges: HashMap<String, Vec<String>> = HashMap::new();
    for c in ledger.charges {
        if let Some(t) = c.transaction_id {
            charges.entry(t).or_default().push(c.payment_intent);
        }
    }
    let mut conn = AsyncPgConnection::establish(database_url).await?;
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
        match row.state.as_str() {
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
                    v.examples
                        .push(format!("{}: failed but charged {paid:?}", a.id));
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
    v.examples.truncate(20);
    Ok(v)
}

/// Unfinished transactions in the database right now.
pub async fn unfinished(database_url: &str) -> anyhow::Result<i64> {
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    let counts = shared::transactions::count_by_state(&mut conn).await?;
    Ok(counts
        .iter()
        .filter(|(s, _)| !matches!(s.as_str(), "complete" | "failed"))
        .map(|(_, n)| n)
        .sum())
}
