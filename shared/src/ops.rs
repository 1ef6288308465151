//! Read-only queries for operators: recent failures and throughput per minute.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use crate::models::Transaction;
use crate::schema::transactions::dsl;
use crate::state_machine::TxState;
use crate::transactions::DbResult;

#[derive(Debug, Serialize)]
pub struct Failure {
    pub id: Uuid,
    pub amount: i64,
    pub currency: String,
    pub error_code: Option<String>,
    pub decline_code: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The most recent failed payments, newest first.
pub async fn recent_failures(conn: &mut AsyncPgConnection, limit: i64) -> DbResult<Vec<Failure>> {
    let rows: Vec<Transaction> = dsl::transactions
        .filter(dsl::state.eq(TxState::Failed))
        .order(dsl::updated_at.desc())
        .limit(limit)
        .select(Transaction::as_select())
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|t| Failure {
            id: t.id,
            amount: t.amount,
            currency: t.currency,
            error_code: t.error_code,
            decline_code: t.error_decline_code,
            updated_at: t.updated_at,
        })
        .collect())
}

#[derive(Debug, Serialize, QueryableByName, PartialEq, Eq)]
pub struct MinuteCount {
    #[diesel(sql_type = Timestamptz)]
    pub minute: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Payments that reached `complete` or `failed`, per minute, over the last `minutes` minutes.
pub async fn finished_per_minute(
    conn: &mut AsyncPgConnection,
    minutes: i32,
) -> DbResult<Vec<MinuteCount>> {
    diesel::sql_query(
        "SELECT date_trunc('minute', updated_at) AS minute, state, count(*) AS count
         FROM transactions
         WHERE state = ANY($2)
           AND updated_at > now() - make_interval(mins => $1)
         GROUP BY 1, 2
         ORDER BY 1",
    )
    .bind::<Integer, _>(minutes)
    .bind::<Array<Text>, _>(&TxState::FINAL[..])
    .load(conn)
    .await
}
