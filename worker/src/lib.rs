//! The charge worker: takes `StripeCharge` jobs off Redis and charges through Stripe.
//!
//! - [`startup`]: builds the apalis worker (fresh name per process start, short heartbeats so
//!   a killed worker's jobs come back in seconds) and the sweeper, and runs them until the
//!   caller's shutdown signal.
//! - [`jobs::stripe_charge`]: one job = claim the row in Postgres, one Stripe call with the
//!   transaction's own idempotency key, record the outcome, schedule the retry if any.
//! - [`stripe`]: the async-stripe calls and the classification of their answers.
//! - [`lease`]: the attempt's lease, renewed so no Stripe call outlives it.
//! - [`metrics`]: the worker's `/metrics` endpoint.
//! - [`policy`]: what each Stripe answer means for a payment, and the backoff.
//! - [`sweeper`]: re-enqueues payments whose job was lost.
//! - [`reconcile`]: Postgres held against Stripe's consistent list; fixes what Stripe's word
//!   decides, records the rest as discrepancies.
//! - [`merchant_webhooks`]: sends the event log to the merchant's endpoints, signed, at least
//!   once.
//! - [`retention`]: deletes finished jobs from Redis after `DONE_JOB_RETENTION_MS`.
//! - [`statistics`]: analyzes the payments' tables as they grow, so no connection keeps plans
//!   made for an empty table.
//! - [`turn`]: which worker does a periodic task this interval (a Redis lock).

pub mod batch;
pub mod jobs;
pub mod lease;
pub mod merchant_webhooks;
pub mod metrics;
pub mod policy;
pub mod reconcile;
pub mod retention;
pub mod startup;
pub mod statistics;
pub mod stripe;
pub mod sweeper;
pub mod turn;
