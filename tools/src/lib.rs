//! Tools that drive the real binaries as separate processes, the way production runs them.
//!
//! - [`stack`]: starts stripe-sim, the api and N workers on free ports with their own database
//!   and Redis namespace; kills and restarts workers; empties Redis; tears everything down.
//! - [`load`]: submits payments over HTTP like a careful client (an `Idempotency-Key` per
//!   payment, retried with the same key on 5xx and connection errors).
//! - [`verify`]: compares every transaction in Postgres with stripe-sim's ledger.
//!
//! Binary: `chaos` (`make chaos`; a smaller run is part of `make test`). The benchmark, which
//! drives the same stack, is its own crate (`bench/`).

pub mod chaos;
pub mod load;
pub mod stack;
pub mod verify;
