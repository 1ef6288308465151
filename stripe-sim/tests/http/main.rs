//! End-to-end tests of the simulator over real HTTP (reqwest), one module per area.

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod faults;
mod idempotency;
mod lifecycle;
mod payments;
mod three_ds;
mod webhooks;
