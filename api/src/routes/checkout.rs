//! `GET /` (to the default price), `GET /checkout?price=..[&txn=..]` (the checkout page) and
//! `GET /static/{file}` (its CSS and JavaScript). Rendering lives in [`crate::pages`].

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::ApiError;
use crate::pages::checkout::{CheckoutPage, render};
use crate::pages::{assets, checkout_csp, html, not_found_page};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct CheckoutQuery {
    price: Option<String>,
    /// Set by the page itself (and by the 3-D Secure return) to resume following a payment.
    txn: Option<String>,
}

fn checkout_url(price: &str) -> String {
    let query = serde_urlencoded::to_string([("price", price)]).unwrap_or_default();
    format!("/checkout?{query}")
}

#[utoipa::path(get, path = "/", tag = "checkout",
    responses(
        (status = 303, description = "To the checkout page of the first price"),
        (status = 404, description = "No prices configured", content_type = "text/html", body = String),
    ))]
pub async fn index(State(state): State<AppState>) -> Response {
    match state.settings.prices.default_name() {
        Some(name) => Redirect::to(&checkout_url(name)).into_response(),
        None => not_found_page("There is nothing to buy here yet."),
    }
}

#[utoipa::path(get, path = "/checkout", tag = "checkout",
    params(
        ("price" = Option<String>, Query, description = "A name from PRICES"),
        ("txn" = Option<String>, Query, description = "A payment to resume following"),
    ),
    responses(
        (status = 200, description = "The checkout page", content_type = "text/html", body = String),
        (status = 303, description = "No price given: to the default one"),
        (status = 404, description = "Unknown price", content_type = "text/html", body = String),
    ))]
pub async fn page(
    State(state): State<AppState>,
    query: Result<Query<CheckoutQuery>, QueryRejection>,
) -> Response {
    // A mangled query string is treated like none at all: the default product.
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let Some(name) = query.price else {
        return index(State(state)).await;
    };
    let Some(price) = state.settings.prices.get(&name) else {
        return not_found_page(&format!("There is no product called “{name}”."));
    };
    let stripe = &state.settings.stripe;
    let body = render(&CheckoutPage {
        product: crate::pages::checkout::product_name(&name),
        price_name: Some(&name),
        amount: price.amount,
        currency: &price.currency,
        publishable_key: stripe.publishable_key.as_deref(),
        sim_base: stripe.browser_sim_base(),
        resuming: query
            .txn
            .as_deref()
            .is_some_and(|t| Uuid::parse_str(t).is_ok()),
        resume: None,
        session: None,
    });
    html(StatusCode::OK, body, &checkout_csp(stripe))
}

#[derive(Debug, Deserialize)]
pub struct AssetQuery {
    v: Option<String>,
}

/// A URL with the current `?v=` never changes, so it is cached for a year; any other is
/// revalidated against the version as its ETag.
#[utoipa::path(get, path = "/static/{file}", tag = "checkout",
    params(
        ("file" = String, Path, description = "`checkout.js`, `checkout.css`, ...",
         example = "checkout.css"),
        ("v" = Option<String>, Query, description = "The assets' version, for caching"),
    ),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/css"),
            (String = "text/javascript"),
        )),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such file", body = crate::error::ErrorBody),
    ))]
pub async fn asset(
    Path(file): Path<String>,
    query: Result<Query<AssetQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A mangled query string only costs the caller the long cache lifetime.
    let query = query.map_or(AssetQuery { v: None }, |Query(q)| q);
    let asset = assets::find(&file).ok_or(ApiError::NotFound("file"))?;
    let etag = format!("\"{}\"", assets::version());
    let cache = if query.v.as_deref() == Some(assets::version()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}
