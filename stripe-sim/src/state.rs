//! The simulator's in-memory state (PaymentIntents, charges, idempotency keys, faults,
//! counters) behind one std mutex, and the ledger snapshot types.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::errors::ErrorObject;
use crate::faults::{Faults, Stats};
use crate::idempotency::IdempotencyStore;
use crate::intent::{Behavior, PaymentIntent};
use crate::webhooks::{
    DeliveryPlan, Endpoint, Outbox, charge_object, dispute_object, intent_event_type,
};

/// One PaymentIntent as the ledger shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerPaymentIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    /// `metadata[transaction_id]`, if the caller set it.
    pub transaction_id: Option<String>,
    /// The `Idempotency-Key` of the request that created it.
    pub idempotency_key: Option<String>,
    /// Unix seconds.
    pub created: i64,
}

/// One successful charge (a PaymentIntent that reached `succeeded`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCharge {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub currency: String,
    pub transaction_id: Option<String>,
}

/// A snapshot of everything the simulator created, in creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub payment_intents: Vec<LedgerPaymentIntent>,
    pub charges: Vec<LedgerCharge>,
}

impl Ledger {
    /// The successful charges carrying this `metadata[transaction_id]`: more than one
    /// means a customer was charged twice.
    pub fn charges_for(&self, transaction_id: &str) -> Vec<&LedgerCharge> {
        self.charges
            .iter()
            .filter(|c| c.transaction_id.as_deref() == Some(transaction_id))
            .collect()
    }

    /// The PaymentIntents carrying this `metadata[transaction_id]`.
    pub fn payment_intents_for(&self, transaction_id: &str) -> Vec<&LedgerPaymentIntent> {
        self.payment_intents
            .iter()
            .filter(|p| p.transaction_id.as_deref() == Some(transaction_id))
            .collect()
    }
}

/// Why a 3-D Secure challenge could not be completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChallengeError {
    NotFound(String),
    NotRequiringAction { id: String, status: &'static str },
}

impl std::fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(id) => write!(f, "No such payment_intent: '{id}'"),
            Self::NotRequiringAction { id, status } => write!(
                f,
                "PaymentIntent {id} has status {status}: only a PaymentIntent in \
                 requires_action can complete a 3-D Secure challenge"
            ),
        }
    }
}

pub(crate) struct Inner {
    pub faults: Faults,
    /// Fault draws; re-seeded from `faults.seed` whenever faults are set or reset.
    pub rng: StdRng,
    intents: Vec<PaymentIntent>,
    index: HashMap<String, usize>,
    charges: Vec<LedgerCharge>,
    pub idempotency: IdempotencyStore,
    pub stats: Stats,
    pub webhooks: Outbox,
    /// Requests that change an intent, by idempotency key: a test counts how often a key was
    /// sent (a second call for one payment shows as a second request under its key).
    pub requests_by_key: HashMap<String, u64>,
    /// When the `/v1` requests of the last second arrived (for `rate_limit_per_second`).
    recent: std::collections::VecDeque<std::time::Instant>,
}

impl Inner {
    fn new(faults: Faults, ttl: Duration, endpoint: Option<Endpoint>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(faults.seed),
            faults,
            intents: Vec::new(),
            index: HashMap::new(),
            charges: Vec::new(),
            idempotency: IdempotencyStore::new(ttl),
            stats: Stats::default(),
            webhooks: Outbox::new(endpoint),
            requests_by_key: HashMap::new(),
            recent: std::collections::VecDeque::new(),
        }
    }

    /// Whether one more `/v1` request fits the account's rate limit now (and counts it if so).
    pub fn within_rate_limit(&mut self) -> bool {
        let limit = self.faults.rate_limit_per_second;
        if limit == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u64 >= limit {
            self.stats.rate_limited += 1;
            return false;
        }
        self.recent.push_back(now);
        true
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.faults = faults;
    }

    /// Forgets every object, key and counter; keeps the fault configuration.
    pub fn reset(&mut self) {
        self.intents.clear();
        self.index.clear();
        self.charges.clear();
        self.idempotency.clear();
        self.stats = Stats::default();
        self.requests_by_key.clear();
        self.recent.clear();
        self.webhooks.clear();
        self.rng = StdRng::seed_from_u64(self.faults.seed);
    }

    /// Stores a new PaymentIntent, recording its charge if it already succeeded, and
    /// announces its status to the webhook endpoint.
    pub fn insert(&mut self, pi: PaymentIntent) {
        if pi.status == "succeeded" {
            self.record_charge(&pi);
        }
        self.announce(&pi);
        self.index.insert(pi.id.clone(), self.intents.len());
        self.intents.push(pi);
    }

    /// Changes the intent `id` with `f`; a change that charged it records the charge, and the
    /// new status is announced. `None` when there is no such intent.
    pub fn modify<R>(&mut self, id: &str, f: impl FnOnce(&mut PaymentIntent) -> R) -> Option<R> {
        let i = *self.index.get(id)?;
        let pi = self.intents.get_mut(i)?;
        let before = pi.status;
        let result = f(pi);
        let pi = pi.clone();
        if pi.status != before {
            if pi.status == "succeeded" {
                self.record_charge(&pi);
            }
            self.announce(&pi);
        } else if pi.status == "requires_payment_method" && pi.last_payment_error.is_some() {
            // Declined again: `payment_intent.payment_failed` once more.
            self.announce(&pi);
        }
        Some(result)
    }

    pub fn get(&self, id: &str) -> Option<&PaymentIntent> {
        self.index.get(id).and_then(|&i| self.intents.get(i))
    }

    /// All PaymentIntents, oldest first.
    pub fn intents(&self) -> &[PaymentIntent] {
        &self.intents
    }

    fn record_charge(&mut self, pi: &PaymentIntent) {
        if let Some(charge) = &pi.latest_charge {
            self.charges.push(LedgerCharge {
                id: charge.clone(),
                payment_intent: pi.id.clone(),
                amount: pi.amount,
                currency: pi.currency.clone(),
                transaction_id: pi.transaction_id().map(str::to_owned),
            });
        }
    }

    /// Approves or fails the 3-D Secure challenge of a `requires_action` PaymentIntent.
    pub fn complete_challenge(
        &mut self,
        id: &str,
        approve: bool,
    ) -> Result<PaymentIntent, ChallengeError> {
        let i = *self
            .index
            .get(id)
            .ok_or_else(|| ChallengeError::NotFound(id.to_owned()))?;
        let pi = self
            .intents
            .get_mut(i)
            .ok_or_else(|| ChallengeError::NotFound(id.to_owned()))?;
        if pi.status != "requires_action" {
            return Err(ChallengeError::NotRequiringAction {
                id: id.to_owned(),
                status: pi.status,
            });
        }
        let then_decline = match pi.behavior {
            Some(Behavior::ThreeDs { then_decline }) => then_decline,
            _ => None,
        };
        match (approve, then_decline) {
            (true, None) => {
                pi.succeed();
            }
            (true, Some(decline)) => {
                let error = decline.error(&crate::intent::new_id("ch_"));
                pi.fail(error);
            }
            (false, _) => pi.fail(ErrorObject::new(
                "invalid_request_error",
                Some("payment_intent_authentication_failure"),
                "We are unable to authenticate your payment method. Please choose a different \
                 payment method and try again.",
            )),
        }
        let pi = pi.clone();
        if pi.status == "succeeded" {
            self.record_charge(&pi);
        }
        self.announce(&pi);
        Ok(pi)
    }

    fn announce(&self, pi: &PaymentIntent) {
        if let Some(event_type) = intent_event_type(pi) {
            self.webhooks
                .emit(event_type, pi.to_json(), self.delivery_plan());
        }
    }

    /// How late, and whether twice, the next event is delivered (`Faults::webhook_*`).
    pub fn delivery_plan(&self) -> DeliveryPlan {
        use rand::RngExt;
        DeliveryPlan {
            delay: Duration::from_millis(self.faults.webhook_delay_ms),
            repeat: rand::rng().random::<f64>() < self.faults.webhook_repeat,
        }
    }

    /// Refunds a charge in full or opens a dispute on it: only the webhook
    /// (`charge.refunded`, `charge.dispute.created`) is simulated.
    pub fn after_charge(&self, charge_id: &str, dispute: bool) -> Result<String, String> {
        let charge = self
            .charges
            .iter()
            .find(|c| c.id == charge_id)
            .ok_or_else(|| format!("No such charge: '{charge_id}'"))?;
        let pi = self
            .get(&charge.payment_intent)
            .ok_or_else(|| format!("No such payment_intent: '{}'", charge.payment_intent))?;
        let (event_type, object) = if dispute {
            ("charge.dispute.created", dispute_object(pi, charge_id))
        } else {
            ("charge.refunded", charge_object(pi, charge_id, true))
        };
        self.webhooks.emit(event_type, object, self.delivery_plan());
        Ok(event_type.to_owned())
    }

    pub fn ledger(&self) -> Ledger {
        Ledger {
            payment_intents: self
                .intents
                .iter()
                .map(|pi| LedgerPaymentIntent {
                    id: pi.id.clone(),
                    amount: pi.amount,
                    currency: pi.currency.clone(),
                    status: pi.status.to_owned(),
                    transaction_id: pi.transaction_id().map(str::to_owned),
                    idempotency_key: pi.idempotency_key.clone(),
                    created: pi.created,
                })
                .collect(),
            charges: self.charges.clone(),
        }
    }
}

/// The shared state: one mutex, never held across an `.await`.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(faults: Faults, ttl: Duration, endpoint: Option<Endpoint>) -> Self {
        Self {
            inner: Mutex::new(Inner::new(faults, ttl, endpoint)),
        }
    }

    /// Locks the state. A panic while locked cannot leave it half-updated in a way that
    /// matters to a test double, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
