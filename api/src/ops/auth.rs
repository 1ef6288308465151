//! Who may see `/ops` and `/metrics`: whoever presents `ADMIN_TOKEN`, as a Bearer token (for
//! Prometheus and scripts) or as the password of HTTP Basic auth (so a browser can open the
//! ops page: it prompts once and then sends it with every request to the same origin).
//! Compared in constant time; a missing or wrong token gets the same 401, with no hint.

use axum::http::{HeaderMap, header};
use base64::Engine;

use crate::error::ApiError;
use crate::state::AppState;

/// The token presented in `Authorization`, whichever scheme carried it.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Some(token.to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    // `user:password`; the user name is ignored.
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// `Err(ApiError::AdminRequired)` (a 401 with `WWW-Authenticate`) unless the token is right.
pub fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match (&state.settings.admin_token, presented(headers)) {
        (Some(token), Some(given)) if token.matches(&given) => Ok(()),
        _ => Err(ApiError::AdminRequired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn reads_bearer_and_basic() {
        assert_eq!(presented(&headers("Bearer abc")).as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:s3cret:with:colons");
        assert_eq!(
            presented(&headers(&format!("Basic {basic}"))).as_deref(),
            Some("s3cret:with:colons")
        );
        assert_eq!(presented(&headers("Basic !!!")), None);
        assert_eq!(presented(&headers("Token abc")), None);
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
