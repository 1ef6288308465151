//! Request-wide layers: `Request-Id` on every response, and bearer-key authentication
//! (plus request counting) on `/v1`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Sim;
use crate::errors::ApiError;
use crate::intent::new_id;

/// The `Request-Id` given to this request (`req_...`).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The secret key the request authenticated with; idempotency keys are scoped by it.
/// Never logged.
#[derive(Clone)]
pub struct ApiKey(pub String);

pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = new_id("req_");
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("request-id", value);
    }
    resp
}

/// The secret key from `Bearer KEY`, or from `Basic base64(KEY:)` as `curl -u KEY:` sends
/// (Stripe accepts both).
fn key_from_header(value: &str) -> Option<String> {
    if let Some(key) = value.strip_prefix("Bearer ") {
        return Some(key.trim().to_owned());
    }
    let decoded = base64_decode(value.strip_prefix("Basic ")?.trim())?;
    let decoded = String::from_utf8(decoded).ok()?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Some(user.to_owned())
}

/// Standard base64 with optional padding; small enough not to need a crate.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// Shows enough of a key to recognise it, like Stripe: `sk_test_****abcd`.
fn redact(key: &str) -> String {
    // Too short to show any of it without giving most of it away.
    if key.chars().count() < 16 {
        return "****".to_owned();
    }
    let prefix: String = key.chars().take(8).collect();
    let tail: Vec<char> = key.chars().rev().take(4).collect();
    let tail: String = tail.into_iter().rev().collect();
    format!("{prefix}****{tail}")
}

pub async fn authenticate(State(sim): State<Sim>, mut req: Request, next: Next) -> Response {
    sim.shared.lock().stats.requests += 1;
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let key = match header {
        None => {
            return ApiError::unauthorized(
                "You did not provide an API key. You need to provide your API key in the \
                 Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
                 YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, \
                 or we can help at https://support.stripe.com/.",
            )
            .into_response();
        }
        Some(value) => key_from_header(value).unwrap_or_default(),
    };
    let key = key.as_str();
    let is_test_key = ["sk_test_", "rk_test_"]
        .iter()
        .any(|p| key.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if !is_test_key {
        let message = if key.is_empty() {
            "Invalid API Key provided. Use 'Authorization: Bearer sk_test_...'.".to_owned()
        } else {
            format!(
                "Invalid API Key provided: {}. The simulator accepts test mode secret keys \
                 (sk_test_...).",
                redact(key)
            )
        };
        return ApiError::unauthorized(message).into_response();
    }
    // Stripe counts its limit per account, after authentication.
    if !sim.shared.lock().within_rate_limit() {
        return ApiError::rate_limited(1).into_response();
    }
    let key = key.to_owned();
    req.extensions_mut().insert(ApiKey(key));
    next.run(req).await
}

#[cfg(test)]
// Test code: a failed unwrap is a failed test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn redacts_keys() {
        assert_eq!(redact("sk_live_1234567890abcd"), "sk_live_****abcd");
        assert_eq!(redact("sk_test_abc"), "****");
    }

    #[test]
    fn reads_bearer_and_basic() {
        assert_eq!(
            key_from_header("Bearer sk_test_1").as_deref(),
            Some("sk_test_1")
        );
        // base64("sk_test_123:")
        assert_eq!(
            key_from_header("Basic c2tfdGVzdF8xMjM6").as_deref(),
            Some("sk_test_123")
        );
        assert_eq!(key_from_header("Basic !!!"), None);
        assert_eq!(key_from_header("Token x"), None);
    }
}
