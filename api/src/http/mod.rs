//! What stands between the network and the handlers: the accept loop, the request deadline,
//! body limits, the JSON guard, CORS, the per-client rate limit and the HTTP metrics.
//!
//! - [`server`]: the accept loop with a header-read timeout against slow clients; each request
//!   carries its peer address.
//! - [`deadline`]: work a client cannot cancel (a payment's insert and push) and the request
//!   deadline that answers honestly about it.
//! - [`limits`]: the body limit of each route, and a body over it read off before the `413`, so
//!   the client sees it.
//! - [`json_guard`]: nesting and string limits, checked before serde parses a body.
//! - [`cors`]: configured origins only.
//! - [`client_ip`]: the client's address, behind `TRUSTED_PROXIES`.
//! - [`rate_limit`]: per client on `POST /transactions` and the 3-D Secure confirm, shared by
//!   every api process through Redis.
//! - [`metrics`]: requests by route and status, and the api's `/metrics`.

pub mod client_ip;
pub mod cors;
pub mod deadline;
pub mod json_guard;
pub mod limits;
pub mod metrics;
pub mod rate_limit;
pub mod server;
