//! Every time Stripe's word contradicted ours, or looked like money taken twice
//! (`discrepancies`): written by the correction itself (`state_machine`), by the reconciler,
//! and read by `/ops`, `payctl discrepancies` and the metrics.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::db::DbResult;
use crate::schema::discrepancies::{self, dsl};

/// The kinds, as the table's CHECK lists them.
pub const KINDS: [&str; 5] = [
    "corrected_to_complete",
    "other_succeeded_intent",
    "complete_without_charge",
    "unknown_transaction",
    "likely_duplicate",
];

#[derive(Clone, Debug, Insertable)]
#[diesel(table_name = discrepancies)]
pub struct NewDiscrepancy<'a> {
    pub kind: &'a str,
    pub transaction_id: Option<Uuid>,
    pub stripe_id: Option<&'a str>,
    pub related_transaction_id: Option<Uuid>,
    pub detail: &'a str,
    pub source: &'a str,
}

#[derive(Clone, Debug, Queryable, Selectable, Serialize)]
#[diesel(table_name = discrepancies)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct Discrepancy {
    pub id: i64,
    pub kind: String,
    pub transaction_id: Option<Uuid>,
    pub stripe_id: Option<String>,
    pub related_transaction_id: Option<Uuid>,
    pub detail: String,
    pub source: String,
    pub found_at: DateTime<Utc>,
}

/// Records `d` unless the same kind was recorded for the same transaction and intent before;
/// `true` when it is new (then logged at warn, counted, and, for one of our payments, written
/// to its event log as `payment.discrepancy` in the same transaction).
pub async fn record(conn: &mut AsyncPgConnection, d: &NewDiscrepancy<'_>) -> DbResult<bool> {
    use diesel_async::AsyncConnection;
    let n = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let n = diesel::insert_into(dsl::discrepancies)
                .values(d)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if let (1, Some(id)) = (n, d.transaction_id) {
                crate::events::record_without_change(conn, id, "payment.discrepancy", d.source)
                    .await?;
            }
            Ok(n)
        })
        .await?;
    if n == 1 {
        tracing::warn!(kind = d.kind, transaction_id = ?d.transaction_id, stripe_id = d.stripe_id,
            detail = d.detail, source = d.source, "discrepancy with Stripe");
        metrics::counter!("payments_discrepancies_found_total", "kind" => d.kind.to_owned())
            .increment(1);
    }
    Ok(n == 1)
}

/// Found since `since`, newest first.
pub async fn since(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
    limit: i64,
) -> DbResult<Vec<Discrepancy>> {
    dsl::discrepancies
        .filter(dsl::found_at.ge(since))
        .order(dsl::found_at.desc())
        .limit(limit)
        .select(Discrepancy::as_select())
        .load(conn)
        .await
}

/// How many of each kind were ever found, every kind listed.
pub async fn count_by_kind(conn: &mut AsyncPgConnection) -> DbResult<Vec<(&'static str, i64)>> {
    let counted: Vec<(String, i64)> = dsl::discrepancies
        .group_by(dsl::kind)
        .select((dsl::kind, diesel::dsl::count_star()))
        .load(conn)
        .await?;
    Ok(KINDS
        .iter()
        .map(|k| {
            (
                *k,
                counted.iter().find(|(c, _)| c == k).map_or(0, |(_, n)| *n),
            )
        })
        .collect())
}
