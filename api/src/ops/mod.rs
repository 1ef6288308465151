//! Operations: the `/ops` page and its JSON, behind `ADMIN_TOKEN`.
//!
//! - [`auth`]: who may see `/ops` and `/metrics`.
//! - [`page`]: the page, the summary it polls, the dead-job retry button.
//! - [`queue`]: the page's view of dead jobs and their retry.

pub mod auth;
pub mod page;
pub mod queue;
