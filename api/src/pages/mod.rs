//! The HTML the api serves to browsers: the checkout page, its 404 page and its static files.
//!
//! - [`checkout`]: renders the checkout page from a price and the Stripe settings.
//! - [`assets`]: the embedded CSS and JavaScript, with a content hash for cache busting.
//! - [`format`]: amounts in minor units as people read them (`$10.00`, `¥1,000`).
//!
//! Every HTML response goes through [`html`], which adds the security headers; scripts and
//! styles are files from `/static`, never inline, so the Content-Security-Policy can forbid
//! inline code outright.

pub mod assets;
pub mod checkout;
pub mod format;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::settings::StripeSettings;

/// Where Stripe.js lives; its Payment Element runs in frames served from here too.
const STRIPE_JS: &str = "https://js.stripe.com https://*.js.stripe.com";
/// 3-D Secure challenges with Stripe.js are framed from here.
const STRIPE_FRAMES: &str =
    "https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com";
const STRIPE_API: &str = "https://api.stripe.com";

/// An HTML response with the headers every page gets: its CSP, no sniffing, no referrer (the
/// checkout URL can carry a transaction id), no framing, and no caching of per-view pages.
pub fn html(status: StatusCode, body: String, csp: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The CSP is built from settings checked by `origin_of`; should it still not be a valid
    // header, the strictest policy is sent rather than none.
    let csp = HeaderValue::from_str(csp).unwrap_or(HeaderValue::from_static(STRICT_CSP));
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// For pages with no script and no form: the 404 and other message pages.
pub const STRICT_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The checkout page's policy: only our own script and styles, plus Stripe's origins when
/// Stripe.js is in use, or the simulator's origin (its 3-D Secure page) when it is not.
pub fn checkout_csp(stripe: &StripeSettings) -> String {
    csp_for(stripe.publishable_key.is_some(), stripe.browser_sim_base())
}

fn csp_for(uses_stripe_js: bool, api_base: &str) -> String {
    let (script, connect) = if uses_stripe_js {
        (
            format!("'self' {STRIPE_JS}"),
            format!("'self' {STRIPE_API}"),
        )
    } else {
        ("'self'".to_owned(), "'self'".to_owned())
    };
    let frames = if uses_stripe_js {
        format!(" frame-src {STRIPE_FRAMES};")
    } else {
        String::new()
    };
    let mut form_action = "'self'".to_owned();
    if !uses_stripe_js && let Some(origin) = origin_of(api_base) {
        form_action = format!("'self' {origin}");
    }
    format!(
        "default-src 'none'; script-src {script}; style-src 'self'; img-src 'self' data:; \
         connect-src {connect};{frames} form-action {form_action}; base-uri 'none'; \
         frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an http(s) URL, or `None` when it holds anything that could not
/// stand in a CSP source list (spaces, `;`, credentials).
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let safe = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    if host.is_empty() || !host.chars().all(safe) {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// Escapes text for HTML bodies and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces each `{{name}}` in `template` with its value, in one pass, so a value can never
/// introduce a placeholder of its own. Values are inserted as given: escape them first.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            rest = &rest[start..];
            break;
        };
        let name = &after[..end];
        match values.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The 404 page for an unknown product (or any page a browser asked for that is not there).
pub fn not_found_page(message: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        message,
        Some(("/", "Go to the checkout")),
    )
}

/// A page with a title, a sentence and at most one way on (`(href, text)`).
pub fn message_page(
    status: StatusCode,
    title: &str,
    message: &str,
    link: Option<(&str, &str)>,
) -> Response {
    let link = link.map_or_else(String::new, |(href, text)| {
        format!(
            "<p><a class=\"button secondary\" href=\"{}\">{}</a></p>",
            escape(href),
            escape(text)
        )
    });
    let body = fill(
        include_str!("../../static/message.html"),
        &[
            ("title", &escape(title)),
            ("message", &escape(message)),
            ("link", &link),
            ("version", assets::version()),
        ],
    );
    html(status, body, STRICT_CSP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_publishable_key_the_policy_names_only_us_and_the_simulator() {
        let csp = csp_for(false, "http://127.0.0.1:12111/");
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self';"),
            "{csp}"
        );
        assert!(
            csp.contains("form-action 'self' http://127.0.0.1:12111;"),
            "{csp}"
        );
        assert!(!csp.contains("stripe.com"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn with_a_publishable_key_stripe_js_may_load_frame_and_call_stripe() {
        let csp = csp_for(true, "https://api.stripe.com");
        assert!(
            csp.contains("script-src 'self' https://js.stripe.com"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' https://api.stripe.com;"),
            "{csp}"
        );
        assert!(csp.contains("frame-src https://js.stripe.com"), "{csp}");
        assert!(csp.contains("form-action 'self';"), "{csp}");
    }

    #[test]
    fn origins_are_cut_from_urls_and_odd_ones_refused() {
        assert_eq!(
            origin_of("http://localhost:1/v1?x").as_deref(),
            Some("http://localhost:1")
        );
        assert_eq!(origin_of("ftp://x"), None);
        assert_eq!(origin_of("http://a b"), None);
        assert_eq!(origin_of("http://user@host"), None);
        assert_eq!(origin_of("http://x;script-src *"), None);
    }

    #[test]
    fn placeholders_are_filled_once_and_unknown_ones_kept() {
        let out = fill("a {{x}} b {{y}} {{x", &[("x", "{{y}}"), ("y", "2")]);
        assert_eq!(out, "a {{y}} b 2 {{x");
        assert_eq!(fill("{{nope}}", &[]), "{{nope}}");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
