//! Route handlers, one module per resource. Handlers are thin: parse, call `shared`, answer.

pub mod checkout;
pub mod events;
pub mod health;
pub mod sessions;
pub mod transactions;
pub mod webhooks;
