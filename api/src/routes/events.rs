//! `GET /transactions/{id}/events`: the transaction as Server-Sent Events, so a checkout page
//! learns of each change without polling.
//!
//! The stream sends `event: state` with the same JSON as `GET /transactions/{id}` at once, then
//! whenever the state or `updated_at` changes; it ends after a final state, after
//! [`MAX_STREAM`], or when the server stops. Each check borrows a pooled connection for one
//! SELECT and gives it back: a hundred open pages must not pin a hundred connections.

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
use crate::state::AppState;
use crate::views::{TransactionView, parse_id};

/// How often Postgres is asked; the worker moves a payment on within a few hundred ms.
pub const CHECK_EVERY: Duration = Duration::from_millis(300);
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
    // Looked up before the stream starts, so an unknown id is a plain 404, not an empty stream.
    let first = load(&state, id)
        .await?
        .ok_or(ApiError::NotFound("transaction"))?;
    let watch = Watch {
        deadline: Instant::now() + MAX_STREAM,
        state,
        id,
        next: Some(first),
        last: None,
        done: false,
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
    deadline: Instant,
    /// A row read but not yet compared (the one read before the stream started).
    next: Option<Transaction>,
    /// What was last sent, to send only changes.
    last: Option<(TxState, DateTime<Utc>)>,
    /// A final state was sent: end the stream.
    done: bool,
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
                tokio::select! {
                    () = tokio::time::sleep(CHECK_EVERY) => {}
                    () = shutdown.wait() => return None,
                }
                if Instant::now() >= w.deadline {
                    return None;
                }
                match load(&w.state, w.id).await {
                    Ok(Some(row)) => row,
                    Ok(None) => return None,
                    // Postgres away for a moment: keep the stream, ask again next tick.
                    Err(e) => {
                        tracing::warn!(error = ?e, "event stream could not read the transaction");
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
