//! `GET /transactions/{id}/events`: the transaction as Server-Sent Events, so a checkout page
//! learns of each change without polling.
//!
//! The stream sends `event: state` with the same JSON as `GET /transactions/{id}` at once, then
//! whenever the state or `updated_at` changes; it ends after a final state, after
//! [`MAX_STREAM`], or when the server stops. It waits on [`crate::live`] (Postgres
//! `LISTEN/NOTIFY`), not on a timer: an open page costs no query while nothing changes, and one
//! SELECT, on a connection borrowed for just that long, when something does.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::Stream;
use shared::models::Transaction;
use shared::state_machine::TxState;
use shared::transactions as txq;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::ApiError;
use crate::live::Subscription;
use crate::state::AppState;
use crate::views::{TransactionView, parse_id};

/// After a failed read, the next one this much later.
const RETRY_READ: Duration = Duration::from_secs(1);
/// A page left open ends its stream; EventSource's reconnect (or the page's polling) resumes.
pub const MAX_STREAM: Duration = Duration::from_secs(300);
/// Comment lines keep proxies from closing a quiet connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[utoipa::path(
    get,
    path = "/transactions/{id}/events",
    operation_id = "transaction_events",
    tag = "transactions",
    params(("id" = String, Path, description = "The transaction id (a UUID)")),
    responses(
        (status = 200, description = "`event: state` with the transaction, on connect and on \
                                      every change; ends after a final state",
         content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown or malformed id", body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody),
    ),
)]
#[tracing::instrument(skip_all, fields(transaction_id = %id))]
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Subscribed before the first read: a change committed in between still wakes the stream.
    let changes = state.live.subscribe(id);
    // Looked up before the stream starts, so an unknown id is a plain 404, not an empty stream.
    let first = load(&state, id)
        .await?
        .ok_or(ApiError::NotFound("transaction"))?;
    let watch = Watch {
        deadline: Instant::now() + MAX_STREAM,
        state,
        id,
        changes,
        next: Some(first),
        last: None,
        done: false,
        retry: false,
    };
    let mut response = Sse::new(events(watch))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // nginx and friends buffer responses unless told not to, which would delay every event.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One SELECT on a connection borrowed for just that long.
async fn load(state: &AppState, id: Uuid) -> Result<Option<Transaction>, ApiError> {
    let mut conn = state.db.get().await?;
    Ok(txq::find(&mut conn, id).await?)
}

struct Watch {
    state: AppState,
    id: Uuid,
    changes: Subscription,
    deadline: Instant,
    /// A row read but not yet compared (the one read before the stream started).
    next: Option<Transaction>,
    /// What was last sent, to send only changes.
    last: Option<(TxState, DateTime<Utc>)>,
    /// A final state was sent: end the stream.
    done: bool,
    /// The last read failed.
    retry: bool,
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn events(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(watch, |mut w| async move {
        let event = next_event(&mut w).await?;
        Some((Ok(event), w))
    })
}

/// Waits for the next change and turns it into an event; `None` ends the stream.
async fn next_event(w: &mut Watch) -> Option<Event> {
    if w.done {
        return None;
    }
    loop {
        let row = match w.next.take() {
            Some(row) => row,
            None => {
                let mut shutdown = w.state.shutdown.clone();
                // After a failed read, read again shortly, whether or not anything is notified.
                let retry = w.retry.then(|| Instant::now() + RETRY_READ);
                tokio::select! {
                    changed = w.changes.changed() => if !changed { return None },
                    () = sleep_until_some(retry) => {}
                    () = tokio::time::sleep_until(w.deadline) => return None,
                    () = shutdown.wait() => return None,
                }
                w.retry = false;
                match load(&w.state, w.id).await {
                    Ok(Some(row)) => row,
                    Ok(None) => return None,
                    // Postgres away for a moment: keep the stream and read again soon.
                    Err(e) => {
                        tracing::warn!(error = ?e, "event stream could not read the transaction");
                        w.retry = true;
                        continue;
                    }
                }
            }
        };
        let seen = (row.state, row.updated_at);
        if w.last == Some(seen) {
            continue;
        }
        w.last = Some(seen);
        w.done = seen.0.is_final();
        match Event::default()
            .event("state")
            .json_data(TransactionView::from(row))
        {
            Ok(event) => return Some(event),
            Err(e) => {
                tracing::error!(error = %e, "could not serialize a transaction event");
                return None;
            }
        }
    }
}
