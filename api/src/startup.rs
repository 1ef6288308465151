//! Builds the application from [`Settings`] and serves it until the caller says stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use shared::queue::keys::Keys;
use shared::queue::{ChargeQueue, redis_connection};
use shared::settings::Settings;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::http::limits::{MAX_BODY_BYTES, MAX_WEBHOOK_BYTES};
use crate::routes::{checkout, events, health, sessions, transactions, webhooks};
use crate::state::{AppState, Shutdown};

pub struct Application {
    listener: TcpListener,
    router: Router,
    /// Tells open event streams to end when the server stops.
    stopping: watch::Sender<bool>,
    /// A client slower than this to send its request headers is disconnected.
    header_read_timeout: Duration,
}

impl Application {
    /// Binds `settings.api_addr` (port 0 picks a free port, which tests use) and connects
    /// lazily: the api starts even while Postgres or Redis is down, and `/readyz` says so.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.api_addr).await?;
        let header_read_timeout = settings.http.header_read_timeout;
        let (stopping, shutdown) = Shutdown::new();
        let state = build_state(settings, shutdown)?;
        let urls = state.settings.merchant_webhooks.urls.clone();
        shared::merchant_webhooks::sync_at_start(state.db.clone(), urls).await;
        Ok(Self {
            listener,
            router: router(state),
            stopping,
            header_read_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stopping;
        // Not axum::serve: it has no header-read timeout (see crate::server).
        crate::http::server::serve(
            self.listener,
            self.router,
            self.header_read_timeout,
            async move {
                shutdown.await;
                // Event streams end now, so the graceful shutdown does not wait minutes for them.
                let _ = stopping.send(true);
            },
        )
        .await
    }
}

pub fn build_state(settings: Settings, shutdown: Shutdown) -> anyhow::Result<AppState> {
    shared::metrics::handle();
    // `DATABASE_POOL_SIZE` connections in all: one for each round of inserts that may run at
    // once (`API_INSERT_PARALLEL`, at most half), the rest for everything else (reads,
    // sessions, webhooks, ops).
    let pool_size = settings.database_pool_size.unwrap_or(16);
    let for_inserts = (settings.http.insert_parallel as u32).clamp(1, (pool_size / 2).max(1));
    let db = shared::db::pool(&settings.database_url, (pool_size - for_inserts).max(1))?;
    let inserts = crate::inserts::Inserts::start(
        shared::db::pool_with_session(
            &settings.database_url,
            for_inserts,
            std::time::Duration::from_secs(3),
            &[shared::rounds::SESSION],
        )?,
        settings.http.insert_batch_max,
        for_inserts as usize,
    );
    let redis = redis_connection(&settings.redis_url, settings.redis_ca_file.as_deref())?;
    let live = crate::live::Hub::new();
    crate::live::spawn_listener(
        &live,
        settings.database_direct_url.clone(),
        shutdown.clone(),
    );
    Ok(AppState {
        live,
        db,
        inserts,
        queue: ChargeQueue::new(redis.clone(), &settings.queue_namespace),
        keys: Arc::new(Keys::new(&settings.queue_namespace)),
        redis,
        settings: Arc::new(settings),
        shutdown,
    })
}

pub fn router(state: AppState) -> Router {
    use crate::http::rate_limit::{RateLimiter, enforce};
    let http = &state.settings.http;
    let limiter = |scope: &str, per_minute: u32| {
        RateLimiter::new(
            scope,
            per_minute,
            state.settings.merchant_api_key.clone(),
            state.redis.clone(),
            &state.settings.queue_namespace,
        )
    };
    let create_limit = limiter("transactions", http.rate_limit_per_minute);
    let confirm_limit = limiter("confirm", http.confirm_rate_limit_per_minute);
    let trusted_proxies: Arc<[shared::cidr::Cidr]> = http.trusted_proxies.clone().into();
    let cors = crate::http::cors::layer(&http.cors_allowed_origins);
    Router::new()
        .route("/", get(checkout::index))
        .route("/checkout", get(checkout::page))
        .route("/static/{file}", get(checkout::asset))
        .route("/checkout/sessions", post(sessions::create))
        .route("/checkout/sessions/{id}", get(sessions::show))
        .route(
            "/checkout/sessions/{id}/pay",
            post(sessions::pay).route_layer(axum::middleware::from_fn_with_state(
                create_limit.clone(),
                enforce,
            )),
        )
        .route(
            "/transactions",
            post(transactions::create)
                .route_layer(axum::middleware::from_fn_with_state(create_limit, enforce))
                // Added after the layer: the merchant's list is not counted against the limit.
                .get(transactions::list),
        )
        .route("/transactions/{id}", get(transactions::show))
        .route("/transactions/{id}/history", get(transactions::history))
        .route("/transactions/{id}/events", get(events::stream))
        .route(
            "/transactions/{id}/confirm",
            post(transactions::confirm)
                .route_layer(axum::middleware::from_fn_with_state(confirm_limit, enforce)),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/webhooks/stripe",
            post(webhooks::receive).layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES)),
        )
        .route("/openapi.json", get(crate::openapi::serve))
        .route("/metrics", get(crate::http::metrics::metrics))
        .merge(crate::ops::router())
        // After routing, so the route pattern is known; unmatched requests are not labelled.
        .route_layer(axum::middleware::from_fn(crate::http::metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(
            crate::http::limits::refuse_declared_oversize,
        ))
        // A client that trickles its request in is cut off rather than pinning a connection;
        // work already handed off is not (crate::http::deadline).
        .layer(axum::middleware::from_fn_with_state(
            state.settings.http.request_timeout,
            crate::http::deadline::enforce,
        ))
        // Who the client is, before anything that counts per client.
        .layer(axum::middleware::from_fn_with_state(
            trusted_proxies,
            crate::http::client_ip::resolve,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                // Path and method only: headers carry the merchant key and must never be logged.
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        // Outermost, so a preflight is answered before routing (and only for listed origins).
        .layer(tower::util::option_layer(cors))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    tracing::debug!(path = %uri.path(), "no route");
    ApiError::NotFound("route")
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method)
}
