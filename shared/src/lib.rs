//! Everything the api and the worker agree on, and nothing that speaks HTTP (but a health probe).
//!
//! - [`schema`]: the Diesel schema of the `transactions` table.
//! - [`models`]: the [`Transaction`](models::Transaction) row and the customer-facing error it
//!   carries.
//! - [`state_machine`]: [`TxState`](state_machine::TxState), the moves between states and the
//!   state sets the queries need.
//! - [`transactions`]: every query on that table; each takes `&mut AsyncPgConnection`, so a
//!   caller can pass a pooled connection or an open transaction. The statements every payment
//!   makes are fixed-text prepared statements (`prepared`), parsed once per connection.
//! - [`db`]: the async Postgres pool, connections over TLS, and the embedded migrations.
//! - [`checkout_sessions`]: one purchase to pay at its own URL; at most one attempt succeeds.
//! - [`cidr`]: address blocks (`TRUSTED_PROXIES`).
//! - [`ratelimit`]: rate limits shared by every process through Redis.
//! - [`events`]: the event log, written with every change: the audit trail and the merchant
//!   webhooks' outbox.
//! - [`discrepancies`]: where Stripe's word contradicted ours (corrections, double charges).
//! - [`intent`]: what a Stripe PaymentIntent's status means for a payment, and the messages
//!   customers are shown; used by the worker and the webhooks alike.
//! - [`queue`]: the `StripeCharge` job payload, the queue's name and its producer; the Redis key
//!   layout apalis-redis 1.0 keeps, and reading and steering it (tasks, scans, scripts).
//! - [`healthcheck`]: the one HTTP request here: `api healthcheck` / `worker healthcheck`.
//! - [`preflight`]: the start-up check that stops a service whose connections cannot work.
//! - [`signature`]: Stripe's webhook signature scheme, verified on Stripe's events and signed on
//!   ours.
//! - [`settings`]: configuration from the environment, shared by both binaries.
//! - [`merchant_data`]: the merchant's `reference` and `metadata`, with Stripe's limits.
//! - [`merchant_webhooks`]: the merchant's endpoints, one delivery row per event and endpoint,
//!   every attempt.
//! - [`money`]: currencies and the price list.
//! - [`ops`]: read-only queries for the ops page.
//! - [`metrics`]: the Prometheus recorder and the gauges computed at scrape time.
//! - [`secret`]: a string that never prints itself.
//! - [`stripe_events`]: the Stripe webhook events already processed, so a repeat changes
//!   nothing.
//! - [`telemetry`]: tracing set-up.
//! - [`tls`]: the TLS provider and CA files, for Postgres and Redis alike.
//! - `testing` (feature `testing`): a database and a Redis namespace per test.

pub mod checkout_sessions;
pub mod cidr;
pub mod db;
pub mod discrepancies;
pub mod events;
pub mod healthcheck;
pub mod intent;
pub mod merchant_data;
pub mod merchant_webhooks;
pub mod metrics;
pub mod models;
pub mod money;
pub mod ops;
pub mod preflight;
mod prepared;
pub mod queue;
pub mod ratelimit;
pub mod rounds;
pub mod schema;
pub mod secret;
pub mod settings;
pub mod signature;
pub mod state_machine;
pub mod stripe_events;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod transactions;
