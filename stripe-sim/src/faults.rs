//! Fault injection: the configuration, the seeded draws, and the counters of faults injected.

use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

/// Which faults to inject and how often. Every probability is in `0.0..=1.0`.
///
/// Probabilities apply to the requests that change an intent (create, confirm, cancel);
/// latency applies to every `/v1` request. Draws come from an RNG seeded with `seed`, so a run that sends the
/// same requests in the same order sees the same faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed of the RNG the faults are drawn from (re-seeded whenever faults are set).
    pub seed: u64,
    /// Fixed latency added to every `/v1` request, in milliseconds.
    pub latency_ms: u64,
    /// Extra latency drawn uniformly from `0..=latency_jitter_ms`.
    pub latency_jitter_ms: u64,
    /// 500 `api_error` before anything executes; nothing is stored under the key.
    pub error_500_before: f64,
    /// The charge executes, then a 500 `api_error` is stored under the key and returned.
    pub error_500_after: f64,
    /// The charge executes and its response is stored, then the connection is closed
    /// without an answer.
    pub drop_after: f64,
    /// The charge executes and its response is stored, then the answer waits `hang_ms`.
    pub hang: f64,
    /// How long a `hang` lasts, in milliseconds (default 120000: past client timeouts).
    pub hang_ms: u64,
    /// 429 `rate_limit_error` with `Retry-After`; nothing executes or is stored.
    pub rate_limit_429: f64,
    /// Value of the `Retry-After` header on injected 429s (default 1).
    pub retry_after_secs: u64,
    /// 409 `idempotency_key_in_use` as if the same key were in flight; nothing stored.
    pub conflict_409: f64,
    /// How long a new PaymentIntent stays invisible to search, in milliseconds. Stripe's
    /// search is not for read-after-write: data is searchable "in under a minute" normally,
    /// later during an outage. Retrieve and list are consistent and never lag.
    pub search_lag_ms: u64,
    /// Every webhook event is sent this late (Stripe's deliveries can lag by minutes).
    pub webhook_delay_ms: u64,
    /// Probability that an event, once delivered, is delivered again (same event id), as
    /// Stripe may.
    pub webhook_repeat: f64,
    /// Which requests the probabilities above apply to: any of `create`, `confirm`,
    /// `cancel`. Empty: all three.
    pub apply_to: Vec<String>,
    /// Probability that a retrieve answers 500 (Stripe's reads failing in an outage).
    pub read_error_500: f64,
    /// Stripe's account rate limit: at most this many `/v1` requests in any one second (25 in
    /// test mode, 100 live); the rest get 429 `rate_limit_error` before anything executes, as
    /// Stripe's do. 0 (the default): no limit.
    pub rate_limit_per_second: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            error_500_before: 0.0,
            error_500_after: 0.0,
            drop_after: 0.0,
            hang: 0.0,
            hang_ms: 120_000,
            rate_limit_429: 0.0,
            retry_after_secs: 1,
            conflict_409: 0.0,
            search_lag_ms: 0,
            webhook_delay_ms: 0,
            webhook_repeat: 0.0,
            apply_to: Vec::new(),
            read_error_500: 0.0,
            rate_limit_per_second: 0,
        }
    }
}

impl Faults {
    /// Whether the fault probabilities apply to requests of `kind` (`create`, `confirm`,
    /// `cancel`).
    pub fn apply_to(&self, kind: &str) -> bool {
        self.apply_to.is_empty() || self.apply_to.iter().any(|k| k == kind)
    }

    /// Checks that every probability is a number in `0.0..=1.0`.
    pub fn validate(&self) -> Result<(), String> {
        let probabilities = [
            ("error_500_before", self.error_500_before),
            ("error_500_after", self.error_500_after),
            ("drop_after", self.drop_after),
            ("hang", self.hang),
            ("rate_limit_429", self.rate_limit_429),
            ("conflict_409", self.conflict_409),
            ("webhook_repeat", self.webhook_repeat),
            ("read_error_500", self.read_error_500),
        ];
        if let Some(bad) = self
            .apply_to
            .iter()
            .find(|k| !["create", "confirm", "cancel"].contains(&k.as_str()))
        {
            return Err(format!(
                "apply_to: `{bad}` is not one of create, confirm, cancel"
            ));
        }
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "{name} must be a probability between 0 and 1, got {p}"
                ));
            }
        }
        Ok(())
    }
}

/// Counters of the faults actually injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Requests delayed by `latency_ms`/`latency_jitter_ms` (only when the delay was > 0).
    pub latency: u64,
    pub error_500_before: u64,
    pub error_500_after: u64,
    pub drop_after: u64,
    pub hang: u64,
    pub rate_limit_429: u64,
    pub conflict_409: u64,
    #[serde(default)]
    pub read_error_500: u64,
}

/// What `GET /sim/stats` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of `/v1` requests received (including rejected ones).
    pub requests: u64,
    /// TCP connections accepted (any route): with keep-alive clients this stays far below
    /// `requests`, which is what the benchmark checks.
    #[serde(default)]
    pub connections: u64,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// `/v1` requests by call.
    #[serde(default)]
    pub calls: CallCounts,
    /// `/v1` requests refused with 429 for going over `rate_limit_per_second`.
    #[serde(default)]
    pub rate_limited: u64,
}

/// `/v1` requests by what they asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallCounts {
    pub create: u64,
    pub confirm: u64,
    pub cancel: u64,
    pub retrieve: u64,
    pub search: u64,
    pub list: u64,
}

/// A fault that answers before anything executes (and is never stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EarlyFault {
    RateLimit,
    Conflict,
    Error500,
}

/// A fault applied once the charge has executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterFault {
    Error500,
    Drop,
}

/// The faults drawn for one `POST /v1/payment_intents`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FaultPlan {
    pub latency: Duration,
    pub early: Option<EarlyFault>,
    pub after: Option<AfterFault>,
    pub hang: Option<Duration>,
}

/// Draws the latency for one `/v1` request.
pub(crate) fn draw_latency(faults: &Faults, rng: &mut StdRng) -> Duration {
    let jitter = if faults.latency_jitter_ms > 0 {
        rng.random_range(0..=faults.latency_jitter_ms)
    } else {
        0
    };
    Duration::from_millis(faults.latency_ms.saturating_add(jitter))
}

/// Draws every fault for one create request.
///
/// All six probabilities are drawn every time, whatever the configuration, so the
/// sequence of draws (and so a seeded run) does not depend on which ones are zero.
pub(crate) fn draw_plan(faults: &Faults, rng: &mut StdRng) -> FaultPlan {
    let latency = draw_latency(faults, rng);
    let mut hit = |p: f64| rng.random::<f64>() < p;
    let rate_limit = hit(faults.rate_limit_429);
    let conflict = hit(faults.conflict_409);
    let error_before = hit(faults.error_500_before);
    let hang = hit(faults.hang);
    let error_after = hit(faults.error_500_after);
    let drop = hit(faults.drop_after);

    let early = if rate_limit {
        Some(EarlyFault::RateLimit)
    } else if conflict {
        Some(EarlyFault::Conflict)
    } else if error_before {
        Some(EarlyFault::Error500)
    } else {
        None
    };
    // A dropped connection wins over a stored 500: both execute the charge.
    let after = if drop {
        Some(AfterFault::Drop)
    } else if error_after {
        Some(AfterFault::Error500)
    } else {
        None
    };
    FaultPlan {
        latency,
        early,
        after,
        hang: hang.then(|| Duration::from_millis(faults.hang_ms)),
    }
}

#[cfg(test)]
// Test code: a failed unwrap is a failed test.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn defaults_and_partial_json() {
        let f: Faults = serde_json::from_str(r#"{"drop_after":0.5}"#).unwrap();
        assert_eq!(f.drop_after, 0.5);
        assert_eq!(f.hang_ms, 120_000);
        assert_eq!(f.retry_after_secs, 1);
        assert!(serde_json::from_str::<Faults>(r#"{"dropafter":0.5}"#).is_err());
        assert!(
            Faults {
                hang: 1.5,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            Faults {
                hang: f64::NAN,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn same_seed_same_plans() {
        let faults = Faults {
            seed: 7,
            error_500_before: 0.3,
            drop_after: 0.3,
            latency_jitter_ms: 50,
            ..Faults::default()
        };
        let run = || {
            let mut rng = StdRng::seed_from_u64(faults.seed);
            (0..50)
                .map(|_| {
                    let p = draw_plan(&faults, &mut rng);
                    (p.latency, p.early, p.after)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
