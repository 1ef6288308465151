//! Who may see `/ops` and `/metrics`: whoever presents `ADMIN_TOKEN`, as a Bearer token (for
//! Prometheus and scripts) or as the password of HTTP Basic auth (so a browser can open the
//! ops page: it prompts once and then sends it with every request to the same origin).
//! Compared in constant time; a missing or wrong token gets the same 401, with no hint.
//!
//! A browser sends those Basic credentials with *any* request to our origin, a form another
//! site posts included. So every state-changing ops request must also come from our own pages
//! ([`refuse_cross_site`]), or it gets a 403 before the credentials are even looked at.

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// The middleware over every ops route: a request that can change something (anything but
/// GET, HEAD, OPTIONS) passes [`refuse_cross_site`] first.
pub async fn same_site_only(req: Request, next: Next) -> Response {
    if !req.method().is_safe()
        && let Err(e) = refuse_cross_site(req.headers())
    {
        tracing::warn!(path = %req.uri().path(), "cross-site ops request refused");
        return e.into_response();
    }
    next.run(req).await
}

/// `Err(ApiError::CrossSite)` (403) for a request a browser sent on another site's behalf.
/// Browsers say where a request comes from: `Sec-Fetch-Site` (every current browser), else
/// `Origin`, which must name the host we were asked for (`Host`, or `X-Forwarded-Host` from a
/// proxy). A request with neither is not a browser's (curl, payctl, Prometheus) and has no
/// ambient credentials to abuse.
pub fn refuse_cross_site(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(ApiError::CrossSite),
        };
    }
    let Some(origin) = text("origin") else {
        return Ok(());
    };
    let origin_host = origin.split_once("://").map(|(_, host)| host);
    let asked = [text("host"), text("x-forwarded-host")];
    match origin_host {
        Some(o) if asked.iter().flatten().any(|h| h.eq_ignore_ascii_case(o)) => Ok(()),
        _ => Err(ApiError::CrossSite),
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

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_our_own_pages_may_change_anything() {
        let ok = [
            with(&[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://evil.example"),
            ]),
            with(&[("origin", "https://pay.example"), ("host", "pay.example")]),
            with(&[
                ("origin", "https://pay.example"),
                ("host", "10.0.0.5:8080"),
                ("x-forwarded-host", "pay.example"),
            ]),
            with(&[("host", "pay.example")]),
        ];
        for h in ok {
            assert!(refuse_cross_site(&h).is_ok(), "{h:?}");
        }
        let refused = [
            with(&[("sec-fetch-site", "cross-site"), ("host", "pay.example")]),
            with(&[("sec-fetch-site", "same-site"), ("host", "pay.example")]),
            with(&[("origin", "https://evil.example"), ("host", "pay.example")]),
            with(&[("origin", "null"), ("host", "pay.example")]),
        ];
        for h in refused {
            assert!(
                matches!(refuse_cross_site(&h), Err(ApiError::CrossSite)),
                "{h:?}"
            );
        }
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
