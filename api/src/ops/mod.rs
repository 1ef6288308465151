//! Operations: the `/ops` page and its JSON, behind `ADMIN_TOKEN`.
//!
//! - [`auth`]: who may see `/ops` and `/metrics`.
//! - [`page`]: the page, the summary it polls, the dead-job retry button.
//! - [`queue`]: the page's view of dead jobs and their retry.

pub mod auth;
pub mod page;
pub mod queue;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

/// The ops routes. Every one that changes something refuses cross-site requests
/// ([`auth::same_site_only`]), whatever its handler does.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops", get(page::page))
        .route("/ops/api/summary", get(page::summary))
        .route("/ops/api/dead/{task_id}/retry", post(page::retry_dead))
        .route_layer(axum::middleware::from_fn(auth::same_site_only))
}
