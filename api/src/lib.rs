//! The payments api: records a payment in Postgres and hands the charge to the worker through
//! Redis, then lets the browser follow it.
//!
//! - [`startup`]: [`Application`](startup::Application) binds, builds the state and serves
//!   until the caller's shutdown signal; [`router`](startup::router) for tests.
//! - [`state`]: the one cloneable [`AppState`](state::AppState).
//! - [`error`]: [`ApiError`](error::ApiError), the only error a handler returns, and the
//!   `AppJson` extractor that puts rejected JSON into the same shape.
//! - [`routes`]: thin handlers, one module per resource; `events` streams a transaction's
//!   changes to the checkout page (Server-Sent Events), `sessions` serves checkout sessions.
//! - [`live`]: which payments changed, from Postgres `LISTEN/NOTIFY`, fanned out to the
//!   event streams.
//! - [`pages`]: the checkout page, its static files and the security headers on HTML.
//! - [`payments`]: the core of `POST /transactions` apart from HTTP: the caller, and a
//!   validated payment recorded under its request key with its charge queued.
//! - [`idempotency`]: request keys, their scope and the request's fingerprint.
//! - [`views`]: the JSON views and path-id parsing the routes share.
//! - [`validate`]: the checks on a new payment request.
//! - [`webhooks`]: Stripe's events, verified and applied (`POST /webhooks/stripe`).
//! - [`http`]: what stands between the network and the handlers (accept loop, request deadline,
//!   body limits, JSON guard, CORS, rate limit, HTTP metrics); [`openapi`] describes it all.
//! - [`ops`]: the operators' page behind `ADMIN_TOKEN`.

pub mod error;
pub mod http;
pub mod idempotency;
pub mod inserts;
pub mod live;
pub mod openapi;
pub mod ops;
pub mod pages;
pub mod payments;
pub mod routes;
pub mod startup;
pub mod state;
pub mod validate;
pub mod views;
pub mod webhooks;
