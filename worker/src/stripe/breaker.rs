//! A circuit breaker around Stripe, per worker process. When Stripe is down, every job failing
//! on its own would burn its attempts and hammer a service that is already failing; instead,
//! after `threshold` consecutive outage-like failures the breaker opens, jobs are put back
//! without calling Stripe or spending an attempt, and after `cooldown` one probe call is let
//! through. Its success closes the breaker; its failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    cooldown: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probing: false,
            }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere while holding it; the counters are
        // still meaningful, so keep going rather than take the worker down.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Ok` when a call may go out now; `Err(wait)` when the breaker is open.
    pub fn allow(&self) -> Result<(), Duration> {
        let mut s = self.lock();
        match s.open_until {
            None => Ok(()),
            Some(until) if Instant::now() < until => Err(until - Instant::now()),
            Some(_) if s.probing => Err(self.cooldown / 4),
            Some(_) => {
                s.probing = true;
                Ok(())
            }
        }
    }

    pub fn record_success(&self) {
        let mut s = self.lock();
        if s.open_until.is_some() {
            tracing::info!("stripe answers again: circuit closed");
        }
        *s = Inner {
            failures: 0,
            open_until: None,
            probing: false,
        };
    }

    /// An outage-like failure: timeout, connection error, 5xx, unreadable answer.
    pub fn record_failure(&self) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.probing || (s.open_until.is_none() && s.failures >= self.threshold) {
            tracing::warn!(failures = s.failures, cooldown = ?self.cooldown, "stripe failing: circuit open");
            s.open_until = Some(Instant::now() + self.cooldown);
            s.probing = false;
        }
    }

    pub fn state(&self) -> BreakerState {
        let s = self.lock();
        match s.open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_successful_probe() {
        let b = Breaker::new(3, Duration::from_millis(20));
        for _ in 0..2 {
            b.record_failure();
            assert!(b.allow().is_ok());
        }
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allow().is_err());
        std::thread::sleep(Duration::from_millis(25));
        assert!(b.allow().is_ok(), "one probe after the cooldown");
        assert!(b.allow().is_err(), "only one probe at a time");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow().is_ok());
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = Breaker::new(1, Duration::from_millis(10));
        b.record_failure();
        std::thread::sleep(Duration::from_millis(15));
        assert!(b.allow().is_ok());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
