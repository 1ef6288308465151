//! A small Stripe-compatible HTTP server that stands in for Stripe in tests: PaymentIntents
//! with Stripe's test cards, idempotency keys, 3-D Secure, a ledger, and fault injection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = stripe_sim::Sim::spawn(stripe_sim::Config::default()).await?;
//! // Point async-stripe at sim.base_url(), with any `sk_test_...` key.
//! let charges = sim.sim.ledger().charges;
//! # drop(charges);
//! sim.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod challenge;
mod control;
mod errors;
mod faults;
mod idempotency;
mod intent;
mod middleware;
mod params;
mod payment_intents;
mod reads;
mod search;
mod server;
mod state;
mod transitions;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{CallCounts, FaultCounts, Faults, Stats};
pub use state::{Ledger, LedgerCharge, LedgerPaymentIntent};
pub use webhooks::{Delivery, DeliveryAttempt, DeliveryPlan, signature_header};

/// Stripe prunes idempotency keys after 24 hours.
const DEFAULT_IDEMPOTENCY_TTL_SECS: u64 = 24 * 60 * 60;

/// How the simulator starts.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Initial fault configuration (none by default).
    pub faults: Faults,
    /// Age after which an idempotency key may be reused; 0 means Stripe's 86400.
    pub idempotency_ttl_secs: u64,
    /// Where webhook events are POSTed; with `webhook_secret`, events are sent.
    pub webhook_url: Option<String>,
    /// The endpoint's signing secret (`whsec_...`); without it nothing is sent.
    pub webhook_secret: Option<String>,
}

/// A handle on one simulator's state. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Sim {
    pub(crate) shared: Arc<state::Shared>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl Sim {
    pub fn new(config: Config) -> Self {
        let ttl = match config.idempotency_ttl_secs {
            0 => DEFAULT_IDEMPOTENCY_TTL_SECS,
            secs => secs,
        };
        let endpoint = webhook_endpoint(config.webhook_url, config.webhook_secret);
        Self {
            shared: Arc::new(state::Shared::new(
                config.faults,
                Duration::from_secs(ttl),
                endpoint,
            )),
        }
    }

    /// Every route: `/v1/...` (Stripe API, bearer auth) and `/sim/...` (control, no auth).
    ///
    /// Served by something other than [`Sim::serve`], the `drop_after` fault cannot close
    /// the connection; it then waits `hang_ms` and answers instead.
    pub fn router(&self) -> Router {
        let v1 = Router::new()
            .route(
                "/payment_intents",
                post(payment_intents::create).get(reads::list),
            )
            .route("/payment_intents/search", get(reads::search))
            .route("/payment_intents/{id}", get(reads::retrieve))
            .route(
                "/payment_intents/{id}/confirm",
                post(payment_intents::confirm),
            )
            .route(
                "/payment_intents/{id}/cancel",
                post(payment_intents::cancel),
            )
            .fallback(reads::unknown_route)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                middleware::authenticate,
            ));
        let sim = Router::new()
            .route("/3ds/{id}", get(challenge::page))
            .route("/3ds/{id}/complete", post(challenge::complete))
            .route("/ledger", get(control::ledger))
            .route(
                "/faults",
                get(control::get_faults).post(control::set_faults),
            )
            .route("/stats", get(control::stats))
            .route("/webhooks", get(control::webhooks))
            .route(
                "/payment_intents/{id}/customer_confirm",
                post(control::customer_confirm),
            )
            .route("/charges/{id}/refund", post(control::refund))
            .route("/charges/{id}/dispute", post(control::dispute))
            .route("/reset", post(control::reset));
        Router::new()
            .nest("/v1", v1)
            .nest("/sim", sim)
            .layer(axum::middleware::from_fn(middleware::request_id))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then stops accepting, lets open
    /// connections finish their current request (for a few seconds at most) and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        server::serve(router, listener, shutdown, self).await
    }

    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn spawn(config: Config) -> std::io::Result<RunningSim> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let sim = Sim::new(config);
        let (tx, rx) = oneshot::channel::<()>();
        // Dropping the sender (with the RunningSim) resolves `rx` too: that stops the server.
        let task = tokio::spawn(sim.clone().serve(listener, async move {
            let _ = rx.await;
        }));
        Ok(RunningSim {
            sim,
            addr,
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// A snapshot of every PaymentIntent and successful charge.
    pub fn ledger(&self) -> Ledger {
        self.shared.lock().ledger()
    }

    /// Replaces the fault configuration and re-seeds the fault RNG from `faults.seed`.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().set_faults(faults);
    }

    /// The current fault configuration.
    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Request and injected-fault counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Clears the ledger, the idempotency keys and the counters (keeps the faults).
    pub fn reset(&self) {
        self.shared.lock().reset();
    }

    /// Sends webhook events to `url`, signed with `secret`, from now on; `None` stops them.
    pub fn set_webhook_endpoint(&self, endpoint: Option<(String, String)>) {
        let endpoint = endpoint.and_then(|(url, secret)| webhook_endpoint(Some(url), Some(secret)));
        self.shared.lock().webhooks.set_endpoint(endpoint);
    }

    /// Every webhook event emitted so far and each attempt to deliver it.
    pub fn webhook_deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().webhooks.deliveries()
    }

    /// Simulates a full refund of a charge (`ch_...`): emits `charge.refunded`.
    pub fn refund_charge(&self, charge_id: &str) -> Result<(), String> {
        self.shared.lock().after_charge(charge_id, false).map(drop)
    }

    /// Simulates a dispute of a charge (`ch_...`): emits `charge.dispute.created`.
    pub fn dispute_charge(&self, charge_id: &str) -> Result<(), String> {
        self.shared.lock().after_charge(charge_id, true).map(drop)
    }

    /// A customer confirms the intent after the fact from a browser (with `payment_method`, a
    /// working test card by default), as Stripe allows for any intent that is not `succeeded`
    /// or `canceled`: the way a payment recorded failed can still be charged.
    pub fn customer_confirm(
        &self,
        pi_id: &str,
        payment_method: Option<&str>,
    ) -> Result<String, String> {
        let mut inner = self.shared.lock();
        transitions::customer_confirm(&mut inner, pi_id, payment_method)
            .map(|pi| pi.status.to_owned())
    }

    /// How many requests that change an intent were sent with this idempotency key.
    pub fn requests_with_key(&self, key: &str) -> u64 {
        self.shared
            .lock()
            .requests_by_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Approves or fails the 3-D Secure challenge of a `requires_action` PaymentIntent,
    /// exactly like `POST /sim/3ds/{id}/complete`.
    pub fn complete_challenge(&self, pi_id: &str, approve: bool) -> Result<(), String> {
        let result = self.shared.lock().complete_challenge(pi_id, approve);
        result.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// Both a URL and a secret, or no endpoint at all.
fn webhook_endpoint(url: Option<String>, secret: Option<String>) -> Option<webhooks::Endpoint> {
    match (url, secret) {
        (Some(url), Some(secret)) if !url.is_empty() && !secret.is_empty() => {
            Some(webhooks::Endpoint { url, secret })
        }
        _ => None,
    }
}

/// A simulator serving in a background task. Dropping it stops the server.
#[derive(Debug)]
pub struct RunningSim {
    pub sim: Sim,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSim {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Ok(Err(e)) = task.await
        {
            tracing::warn!(error = %e, "stripe-sim server ended with an error");
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
