//! The merchant's webhooks, as Postgres holds them: the endpoints (`MERCHANT_WEBHOOK_URL`), one
//! delivery row per (event, endpoint), created with the event in the same statement
//! (`crate::events`), and every attempt. The delivery rows are what drives sending, never a
//! "last id sent" cursor: event ids are taken in insert order but committed in any order, so a
//! cursor would skip an event that commits late; a row is due from the moment it is visible.
//!
//! A sender claims due rows by pushing their `next_attempt_at` past the attempt's timeout, so a
//! sender that dies mid-attempt leaves them due again soon after: at least once, never lost,
//! whatever Redis does (none of this is in Redis). The worker sends (`worker::merchant_webhooks`);
//! payctl and `/ops` read and redeliver through here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Interval, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::db::{DbResult, interval};
use crate::events::PaymentEvent;

/// Makes the enabled endpoints exactly `urls` (others are kept, disabled, with their history).
/// Every service does this at start, so configure every process alike.
pub async fn sync_endpoints(conn: &mut AsyncPgConnection, urls: &[String]) -> DbResult<()> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        diesel::sql_query(
            "INSERT INTO webhook_endpoints (url, enabled) SELECT u, true FROM unnest($1::text[]) u
             ON CONFLICT (url) DO UPDATE SET enabled = true WHERE NOT webhook_endpoints.enabled",
        )
        .bind::<Array<Text>, _>(urls)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "UPDATE webhook_endpoints SET enabled = false WHERE enabled AND NOT (url = ANY($1))",
        )
        .bind::<Array<Text>, _>(urls)
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

/// `url` fit for logs and metric labels: without credentials (`user:pass@`) or a query string,
/// where a merchant may have put a token.
pub fn redacted(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_owned(),
    }
}

/// [`sync_endpoints`] at start, before the first request: the api does it so the events it
/// writes get their deliveries even before any worker runs. If Postgres does not answer within
/// a few seconds, it goes on trying every second on a task of its own.
pub async fn sync_at_start(db: crate::db::PgPool, urls: Vec<String>) {
    let attempt = |db: crate::db::PgPool, urls: Vec<String>| async move {
        let mut conn = db.get().await?;
        anyhow::Ok(sync_endpoints(&mut conn, &urls).await?)
    };
    let first =
        tokio::time::timeout(Duration::from_secs(5), attempt(db.clone(), urls.clone())).await;
    if matches!(first, Ok(Ok(()))) {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match attempt(db.clone(), urls.clone()).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "webhook endpoints not registered yet"),
            }
        }
    });
}

#[derive(Clone, Debug, QueryableByName, Serialize)]
pub struct Endpoint {
    #[diesel(sql_type = Integer)]
    pub id: i32,
    #[diesel(sql_type = Text)]
    pub url: String,
}

pub async fn enabled_endpoints(conn: &mut AsyncPgConnection) -> DbResult<Vec<Endpoint>> {
    diesel::sql_query("SELECT id, url FROM webhook_endpoints WHERE enabled ORDER BY id")
        .load(conn)
        .await
}

/// A delivery claimed for one attempt, with its event.
#[derive(Debug, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = BigInt)]
    pub delivery_id: i64,
    /// This attempt's number (1 for the first).
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub delivery_created_at: DateTime<Utc>,
    #[diesel(embed)]
    pub event: PaymentEvent,
}

/// Claims up to `limit` due deliveries to `endpoint_id`, oldest due first, for one attempt each
/// (held for `hold`: a sender that dies leaves them due again after it).
pub async fn claim_due(
    conn: &mut AsyncPgConnection,
    endpoint_id: i32,
    limit: i64,
    hold: Duration,
) -> DbResult<Vec<Due>> {
    diesel::sql_query(
        "WITH c AS (
             UPDATE webhook_deliveries d
             SET next_attempt_at = now() + $3, attempts = d.attempts + 1
             WHERE d.id IN (SELECT id FROM webhook_deliveries
                            WHERE endpoint_id = $1 AND state = 'pending' AND next_attempt_at <= now()
                            ORDER BY next_attempt_at, id LIMIT $2
                            FOR UPDATE SKIP LOCKED)
             RETURNING d.id AS delivery_id, d.event_id, d.attempts,
                       d.created_at AS delivery_created_at)
         SELECT c.delivery_id, c.attempts, c.delivery_created_at,
                e.id, e.transaction_id, e.type AS kind, e.previous_state, e.new_state, e.attempt,
                e.snapshot, e.cause, e.created_at
         FROM c JOIN payment_events e ON e.id = c.event_id
         ORDER BY e.id",
    )
    .bind::<Integer, _>(endpoint_id)
    .bind::<BigInt, _>(limit)
    .bind::<Interval, _>(interval(hold))
    .load(conn)
    .await
}

/// What one attempt came to.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Why it did not count: a non-2xx status, a timeout, a connection error.
    pub error: Option<String>,
    pub latency: Duration,
}

impl Attempt {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// What to do with the delivery after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    RetryIn(Duration),
    GiveUp,
}

/// Records `attempt` (and the delivery's new state) in one statement.
pub async fn record_attempt(
    conn: &mut AsyncPgConnection,
    delivery_id: i64,
    attempt: &Attempt,
    next: Next,
) -> DbResult<()> {
    let (state, retry_ms) = match (attempt.delivered(), next) {
        (true, _) => ("delivered", None),
        (false, Next::RetryIn(d)) => ("pending", Some(d.as_millis().min(i64::MAX as u128) as i64)),
        (false, Next::GiveUp) => ("failed", None),
    };
    let latency_ms = attempt.latency.as_millis().min(i32::MAX as u128) as i32;
    let status = attempt.status.map(i32::from);
    diesel::sql_query(
        "WITH a AS (INSERT INTO webhook_attempts (delivery_id, status, error, latency_ms)
                    VALUES ($1, $2, $3, $4))
         UPDATE webhook_deliveries SET
             state = $5,
             next_attempt_at = CASE WHEN $6::bigint IS NULL THEN next_attempt_at
                                    ELSE now() + $6::bigint * interval '1 millisecond' END,
             last_status = $2, last_error = $3, last_latency_ms = $4,
             delivered_at = CASE WHEN $5 = 'delivered' THEN now() ELSE delivered_at END
         WHERE id = $1",
    )
    .bind::<BigInt, _>(delivery_id)
    .bind::<Nullable<Integer>, _>(status)
    .bind::<Nullable<Text>, _>(attempt.error.as_deref())
    .bind::<Integer, _>(latency_ms)
    .bind::<Text, _>(state)
    .bind::<Nullable<BigInt>, _>(retry_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Sends event `event_id` again to every enabled endpoint, delivered before or not (and to an
/// endpoint added since). Returns the deliveries made due.
pub async fn redeliver_event(conn: &mut AsyncPgConnection, event_id: i64) -> DbResult<usize> {
    diesel::sql_query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id)
         SELECT e.id, ep.id FROM payment_events e CROSS JOIN webhook_endpoints ep
         WHERE e.id = $1 AND ep.enabled
         ON CONFLICT (event_id, endpoint_id)
         DO UPDATE SET state = 'pending', next_attempt_at = now()",
    )
    .bind::<BigInt, _>(event_id)
    .execute(conn)
    .await
}

/// Makes due now every delivery created since `since` that gave up, or whose last attempt
/// failed. Returns how many.
pub async fn redeliver_failed(
    conn: &mut AsyncPgConnection,
    since: DateTime<Utc>,
) -> DbResult<usize> {
    diesel::sql_query(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now()
         WHERE created_at >= $1
           AND (state = 'failed' OR (state = 'pending' AND last_error IS NOT NULL))",
    )
    .bind::<Timestamptz, _>(since)
    .execute(conn)
    .await
}

/// A delivery as payctl and `/ops` show it.
#[derive(Clone, Debug, QueryableByName, Serialize)]
pub struct Delivery {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub event_id: i64,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub transaction_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub next_attempt_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub last_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub last_latency_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, e.type AS event_type, e.transaction_id, ep.url,
     d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.last_latency_ms,
     d.delivered_at, d.created_at
     FROM webhook_deliveries d
     JOIN payment_events e ON e.id = d.event_id
     JOIN webhook_endpoints ep ON ep.id = d.endpoint_id";

/// The newest deliveries in `state` (all states: `None`), up to `limit`.
pub async fn list(
    conn: &mut AsyncPgConnection,
    state: Option<&str>,
    limit: i64,
) -> DbResult<Vec<Delivery>> {
    diesel::sql_query(format!(
        "SELECT {DELIVERY_COLUMNS} WHERE ($1::text IS NULL OR d.state = $1)
         ORDER BY d.id DESC LIMIT $2"
    ))
    .bind::<Nullable<Text>, _>(state)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}

/// Event `event_id`'s deliveries.
pub async fn for_event(conn: &mut AsyncPgConnection, event_id: i64) -> DbResult<Vec<Delivery>> {
    diesel::sql_query(format!(
        "SELECT {DELIVERY_COLUMNS} WHERE d.event_id = $1 ORDER BY d.id"
    ))
    .bind::<BigInt, _>(event_id)
    .load(conn)
    .await
}

#[derive(Clone, Debug, QueryableByName, Serialize)]
pub struct AttemptRow {
    #[diesel(sql_type = BigInt)]
    pub delivery_id: i64,
    #[diesel(sql_type = Timestamptz)]
    pub attempted_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Integer)]
    pub latency_ms: i32,
}

/// Every attempt at event `event_id`'s deliveries, oldest first.
pub async fn attempts_for_event(
    conn: &mut AsyncPgConnection,
    event_id: i64,
) -> DbResult<Vec<AttemptRow>> {
    diesel::sql_query(
        "SELECT a.delivery_id, a.attempted_at, a.status, a.error, a.latency_ms
         FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
         WHERE d.event_id = $1 ORDER BY a.id",
    )
    .bind::<BigInt, _>(event_id)
    .load(conn)
    .await
}

/// One endpoint's health, for `/ops`, payctl and the metrics.
#[derive(Clone, Debug, QueryableByName, Serialize)]
pub struct EndpointHealth {
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub enabled: bool,
    /// Not delivered yet, still being tried.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    /// Of those, the ones whose last attempt failed.
    #[diesel(sql_type = BigInt)]
    pub failing: i64,
    /// Given up (past `MERCHANT_WEBHOOK_MAX_AGE`).
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub delivered: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest_pending: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

pub async fn health(conn: &mut AsyncPgConnection) -> DbResult<Vec<EndpointHealth>> {
    diesel::sql_query(
        "SELECT ep.url, ep.enabled,
                count(*) FILTER (WHERE d.state = 'pending') AS pending,
                count(*) FILTER (WHERE d.state = 'pending' AND d.last_error IS NOT NULL) AS failing,
                count(*) FILTER (WHERE d.state = 'failed') AS failed,
                count(*) FILTER (WHERE d.state = 'delivered') AS delivered,
                min(d.created_at) FILTER (WHERE d.state = 'pending') AS oldest_pending,
                (SELECT d2.last_error FROM webhook_deliveries d2
                 WHERE d2.endpoint_id = ep.id AND d2.last_error IS NOT NULL
                 ORDER BY d2.next_attempt_at DESC LIMIT 1) AS last_error
         FROM webhook_endpoints ep LEFT JOIN webhook_deliveries d ON d.endpoint_id = ep.id
         GROUP BY ep.id ORDER BY ep.id",
    )
    .load(conn)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_and_queries_stay_out_of_logs() {
        assert_eq!(
            super::redacted("https://user:s3cret@shop.example/hooks?token=abc#x"),
            "https://shop.example/hooks"
        );
        assert_eq!(
            super::redacted("http://localhost:3000"),
            "http://localhost:3000"
        );
    }
}
