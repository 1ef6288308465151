//! The payments api: records a payment in Postgres and hands the charge to the worker through
//! Redis, then lets the browser follow it.
//!
//! - [`startup`]: [`Application`](startup::Application) binds, builds the state and serves
//!   until the caller's shutdown signal; [`router`](startup::router) for tests.
//! - [`state`]: the one cloneable [`AppState`](state::AppState).
//! - [`error`]: [`ApiError`](error::ApiError), the only error a handler returns, and the
//!   `AppJson` extractor that puts rejected JSON into the same shape.
//! - [`routes`]: thin handlers, one module per resource; `events` streams a transaction's
//!   changes to the checkout page (Server-Sent Events).
//! - [`pages`]: the checkout page, its static files and the security headers on HTML.
//! - [`validate`]: the checks on a new payment request.
//! - [`deadline`]: work a client cannot cancel (a payment's insert and push) and the request
//!   deadline that answers honestly about it.
//! - [`webhooks`]: Stripe's events, verified and applied (`POST /webhooks/stripe`).
//! - Hostile input: [`json_guard`] (nesting and string limits), [`rate_limit`] (per client on
//!   `POST /transactions`), [`cors`] (configured origins only), [`server`] (the accept loop
//!   with a header-read timeout against slow clients), [`oversize`] (a body over its route's
//!   limit is read off before the `413`, so the client sees it); [`openapi`] describes it all.

pub mod admin;
pub mod cors;
pub mod deadline;
pub mod error;
pub mod http_metrics;
pub mod json_guard;
pub mod openapi;
pub mod ops_queue;
pub mod oversize;
pub mod pages;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;
pub mod validate;
pub mod webhooks;
