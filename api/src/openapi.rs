//! The OpenAPI 3 description of the api, generated from the handlers' annotations and the
//! request and response types themselves (utoipa), served at `GET /openapi.json`. A test
//! checks that every route the router has is described here, so the two cannot drift.
//!
//! Routes behind `ADMIN_TOKEN` (`/metrics`, `/ops`) are operations, not the public API, and
//! are left out on purpose; the test names them.

use std::sync::LazyLock;

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::validate::CreateTransaction;
use crate::views::{MerchantTransactionView, TransactionView, TxErrorDoc, TxStateDoc};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payments api",
        description = "Takes card payments, charges them through Stripe in the background, \
                       and lets the browser follow them. Errors are always \
                       `{\"error\": {\"code\", \"message\"[, \"field\"]}}`."
    ),
    paths(
        crate::routes::checkout::index,
        crate::routes::checkout::page,
        crate::routes::checkout::asset,
        crate::routes::transactions::create,
        crate::routes::transactions::list,
        crate::routes::transactions::show,
        crate::routes::transactions::history,
        crate::routes::events::stream,
        crate::routes::transactions::confirm,
        crate::routes::sessions::create,
        crate::routes::sessions::show,
        crate::routes::sessions::pay,
        crate::routes::webhooks::receive,
        crate::routes::health::healthz,
        crate::routes::health::readyz,
        serve,
    ),
    components(schemas(
        TransactionView,
        MerchantTransactionView,
        crate::routes::transactions::HistoryDoc,
        crate::routes::transactions::ListDoc,
        CreateTransaction,
        crate::validate::CreateSession,
        crate::validate::PayInSession,
        crate::views::SessionView,
        ErrorBody,
        ErrorDetail,
        TxStateDoc,
        TxErrorDoc
    )),
    modifiers(&MerchantKey),
    tags(
        (name = "transactions", description = "Payments and their state"),
        (name = "checkout sessions", description = "One purchase to pay at its own page"),
        (name = "webhooks", description = "Stripe's events"),
        (name = "checkout", description = "The checkout page (HTML)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// `Authorization: Bearer $MERCHANT_API_KEY`, optional on `POST /transactions`.
struct MerchantKey;

impl Modify for MerchantKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "merchant_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Built once: the document never changes while the process runs.
static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_link_keys(&mut doc);
    doc
});

/// utoipa 5.5 writes a Link's `operationId`/`operationRef` in snake case, which no OpenAPI
/// tool reads; renamed here (a no-op once utoipa writes camel case itself).
fn fix_link_keys(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|ops| ops.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|r| r.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_owned(), v);
                }
            }
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI description of this api", body = Object)))]
pub async fn serve() -> impl IntoResponse {
    Json(&*DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::state_machine::TxState;

    #[test]
    fn the_state_schema_lists_every_state() {
        let listed = &DOCUMENT["components"]["schemas"]["TxState"]["enum"];
        let names: Vec<&str> = TxState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(listed, &serde_json::json!(names), "{listed}");
    }

    #[test]
    fn a_new_transaction_links_to_the_operations_on_it() {
        let links = &DOCUMENT["paths"]["/transactions"]["post"]["responses"]["202"]["links"];
        for (name, op) in [
            ("show", "show_transaction"),
            ("events", "transaction_events"),
            ("confirm", "confirm_transaction"),
        ] {
            assert_eq!(links[name]["operationId"], op, "{links}");
            assert_eq!(
                links[name]["parameters"]["id"], "$response.body#/id",
                "{links}"
            );
        }
    }
}
