//! Body limits: each route's limit, and refusing a body that declares more bytes than its route
//! accepts so that the client reads the `413`.
//!
//! Without this, the JSON extractor stops reading at the limit and answers `413`, and the
//! connection is closed with the rest of the body unread: the kernel then resets it, and a client
//! still writing its body gets "broken pipe" and may never see the answer. Here the body is read
//! and discarded first, up to [`DRAIN_CAP`] bytes within [`DRAIN_TIME`]; beyond either, the
//! answer is sent at once and the connection closed (a client sending that much to a payment
//! form is not one to wait for).

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::error::ApiError;

/// Request bodies are small JSON documents; anything bigger is refused before it is read.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Stripe's events are bigger than our own requests (a PaymentIntent runs to a few KiB).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// The most a refused body is read for, to answer it cleanly.
pub const DRAIN_CAP: u64 = 1024 * 1024;
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The body limit of the route `path` is served by (the same limits `DefaultBodyLimit` applies).
pub fn limit_for(path: &str) -> usize {
    if path == "/webhooks/stripe" {
        MAX_WEBHOOK_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub async fn refuse_declared_oversize(req: Request, next: Next) -> Response {
    let limit = limit_for(req.uri().path()) as u64;
    match declared_length(&req) {
        Some(n) if n > limit => {
            if n <= DRAIN_CAP {
                drain(req.into_body()).await;
            }
            ApiError::PayloadTooLarge.into_response()
        }
        _ => next.run(req).await,
    }
}

async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut read: u64 = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DRAIN_CAP {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_keeps_its_own_limit() {
        assert_eq!(limit_for("/transactions"), MAX_BODY_BYTES);
        assert_eq!(limit_for("/webhooks/stripe"), MAX_WEBHOOK_BYTES);
        assert!(DRAIN_CAP as usize > MAX_WEBHOOK_BYTES);
    }
}
