//! The simulated 3-D Secure challenge: a browser page with Approve / Fail, and the
//! route its forms post to.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use crate::Sim;
use crate::params::parse_form;
use crate::state::ChallengeError;

/// Escapes text for HTML bodies and attribute values.
fn esc(s: &str) -> String {
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

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title></head>\n<body>\n<main>\n<h1>{title}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        title = esc(title),
    )
}

fn get_param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Only absolute http(s) URLs: anything else is ignored rather than redirected to.
fn safe_return_url(url: Option<String>) -> Option<String> {
    url.filter(|u| u.starts_with("http://") || u.starts_with("https://"))
}

pub async fn page(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = parse_form(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let return_url = safe_return_url(get_param(&params, "return_url"));
    let pi = sim
        .shared
        .lock()
        .get(&id)
        .map(|pi| (pi.status, pi.amount, pi.currency.clone()));
    let Some((status, amount, currency)) = pi else {
        let body = format!("<p role=\"alert\">No such payment: {}</p>", esc(&id));
        return (
            StatusCode::NOT_FOUND,
            Html(html_page("Simulated 3-D Secure", &body)),
        )
            .into_response();
    };
    if status != "requires_action" {
        let body = format!(
            "<p role=\"status\">Payment {} has status <code>{}</code>: there is nothing to \
             authenticate.</p>",
            esc(&id),
            esc(status)
        );
        return Html(html_page("Simulated 3-D Secure", &body)).into_response();
    }
    let action = format!("/sim/3ds/{}/complete", esc(&id));
    let hidden_return = return_url
        .map(|u| {
            format!(
                "<input type=\"hidden\" name=\"return_url\" value=\"{}\">",
                esc(&u)
            )
        })
        .unwrap_or_default();
    let form = |result: &str, label: &str, button_id: &str| {
        format!(
            "<form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"result\" value=\"{result}\">{hidden_return}\
             <button type=\"submit\" id=\"{button_id}\" aria-label=\"{label} authentication\">\
             {label}</button></form>"
        )
    };
    let body = format!(
        "<p>Your bank asks you to confirm the payment of <strong>{amount} {currency}</strong> \
         (smallest currency unit) for payment {id}.</p>\n\
         <p>This is a test page served by stripe-sim.</p>\n{approve}\n{fail}",
        currency = esc(&currency.to_uppercase()),
        id = esc(&id),
        approve = form("approve", "Approve", "sim-3ds-approve"),
        fail = form("fail", "Fail", "sim-3ds-fail"),
    );
    Html(html_page("Simulated 3-D Secure", &body)).into_response()
}

#[derive(Deserialize)]
struct CompleteJson {
    result: String,
    #[serde(default)]
    return_url: Option<String>,
}

pub async fn complete(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = parse_form(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let (result, body_return_url) = if is_json {
        match serde_json::from_slice::<CompleteJson>(&body) {
            Ok(c) => (Some(c.result), c.return_url),
            Err(_) => (None, None),
        }
    } else {
        let form = parse_form(&body).unwrap_or_default();
        (get_param(&form, "result"), get_param(&form, "return_url"))
    };
    let approve = match result.as_deref() {
        Some("approve") => true,
        Some("fail") => false,
        _ => {
            let msg = "Expected result=approve or result=fail.";
            return (
                StatusCode::BAD_REQUEST,
                Html(html_page("Simulated 3-D Secure", msg)),
            )
                .into_response();
        }
    };
    let outcome = sim.shared.lock().complete_challenge(&id, approve);
    match outcome {
        Ok(pi) => {
            tracing::info!(id = %pi.id, status = pi.status, approve, "3-D Secure completed");
            let return_url =
                safe_return_url(body_return_url.or_else(|| get_param(&query, "return_url")))
                    .or_else(|| safe_return_url(pi.return_url.clone()));
            if wants_json {
                return axum::Json(json!({ "id": pi.id, "status": pi.status })).into_response();
            }
            if let Some(url) = return_url {
                return Redirect::to(&url).into_response();
            }
            let body = "<p role=\"status\">Authentication complete, you can close this window.</p>";
            Html(html_page("Authentication complete", body)).into_response()
        }
        Err(e) => {
            let status = match e {
                ChallengeError::NotFound(_) => StatusCode::NOT_FOUND,
                ChallengeError::NotRequiringAction { .. } => StatusCode::BAD_REQUEST,
            };
            if wants_json {
                return (status, axum::Json(json!({ "error": e.to_string() }))).into_response();
            }
            let body = format!("<p role=\"alert\">{}</p>", esc(&e.to_string()));
            (status, Html(html_page("Simulated 3-D Secure", &body))).into_response()
        }
    }
}
