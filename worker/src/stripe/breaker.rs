//! A circuit breaker around Stripe, per worker process. When Stripe is down, every job failing
//! on its own would burn its attempts and hammer a service that is already failing; instead,
//! after `threshold` consecutive outage-like failures the breaker opens, jobs are put back
//! without calling Stripe or spending an attempt, and after `cooldown` one probe call is let
//! through. Its success closes the breaker; its failure opens it again.
//!
//! The probe slot is held by a [`Permit`]. A job that takes it but makes no Stripe call (its
//! claim found the row leased or finished, Postgres failed, it panicked or was cancelled)
//! gives it back when the permit is dropped, and a probe that never reports is presumed lost
//! after `probe_timeout` (one Stripe timeout), so the breaker can never stay half-open.

use std::sync::{Arc, Mutex};
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
    /// The probe in flight: its number and when it was handed out.
    probe: Option<(u64, Instant)>,
    /// Numbers the probes, so a late permit cannot release a newer probe's slot.
    probes_issued: u64,
}

#[derive(Debug)]
pub struct Breaker {
    inner: Arc<Mutex<Inner>>,
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
}

/// Leave to call Stripe. Dropping it releases the probe slot it may hold, whatever path the
/// job took; a recorded success or failure has already released it.
#[derive(Debug)]
#[must_use = "the permit must be held while the Stripe call runs"]
pub struct Permit {
    probe: Option<(u64, Arc<Mutex<Inner>>)>,
}

impl Permit {
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((n, inner)) = self.probe.take() {
            let mut s = lock(&inner);
            if s.probe.is_some_and(|(current, _)| current == n) {
                s.probe = None;
            }
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A poisoned lock only means a panic elsewhere while holding it; the counters are still
    // meaningful, so keep going rather than take the worker down.
    inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Breaker {
    /// `probe_timeout`: how long a probe may stay unanswered before another job may probe
    /// (the Stripe request timeout: by then the probe's call has ended one way or another).
    pub fn new(threshold: u32, cooldown: Duration, probe_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                failures: 0,
                open_until: None,
                probe: None,
                probes_issued: 0,
            })),
            threshold: threshold.max(1),
            cooldown,
            probe_timeout,
        }
    }

    /// `Ok(permit)` when a call may go out now; `Err(wait)` when the breaker is open or its one
    /// probe is in flight.
    pub fn allow(&self) -> Result<Permit, Duration> {
        let mut s = lock(&self.inner);
        let now = Instant::now();
        match s.open_until {
            None => return Ok(Permit { probe: None }),
            Some(until) if now < until => return Err(until - now),
            Some(_) => {}
        }
        if let Some((_, since)) = s.probe
            && now < since + self.probe_timeout
        {
            return Err((self.cooldown / 4).min(since + self.probe_timeout - now));
        }
        s.probes_issued += 1;
        let n = s.probes_issued;
        s.probe = Some((n, now));
        Ok(Permit {
            probe: Some((n, self.inner.clone())),
        })
    }

    pub fn record_success(&self) {
        let mut s = lock(&self.inner);
        if s.open_until.is_some() {
            tracing::info!("stripe answers again: circuit closed");
        }
        s.failures = 0;
        s.open_until = None;
        s.probe = None;
    }

    /// An outage-like failure: timeout, connection error, 5xx, unreadable answer, or an alarm
    /// about our own configuration (a refused key).
    pub fn record_failure(&self) {
        let mut s = lock(&self.inner);
        s.failures = s.failures.saturating_add(1);
        if s.probe.is_some() || (s.open_until.is_none() && s.failures >= self.threshold) {
            tracing::warn!(failures = s.failures, cooldown = ?self.cooldown, "stripe failing: circuit open");
            s.open_until = Some(Instant::now() + self.cooldown);
            s.probe = None;
        }
    }

    pub fn state(&self) -> BreakerState {
        let s = lock(&self.inner);
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

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_successful_probe() {
        let b = Breaker::new(3, Duration::from_millis(20), LONG);
        for _ in 0..2 {
            b.record_failure();
            assert!(b.allow().is_ok());
        }
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allow().is_err());
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.allow().expect("one probe after the cooldown");
        assert!(probe.is_probe());
        assert!(b.allow().is_err(), "only one probe at a time");
        b.record_success();
        drop(probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.allow().expect("closed").is_probe());
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let b = Breaker::new(1, Duration::from_millis(10), LONG);
        b.record_failure();
        std::thread::sleep(Duration::from_millis(15));
        let _probe = b.allow().expect("probe");
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.allow().is_err());
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, LONG, LONG);
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// The job holding the probe found nothing to do (row leased, finished, Postgres down): it
    /// never calls Stripe, and the next job must still be able to probe.
    #[test]
    fn a_probe_that_makes_no_call_gives_its_slot_back() {
        let b = Breaker::new(1, Duration::from_millis(10), LONG);
        b.record_failure();
        std::thread::sleep(Duration::from_millis(15));
        let probe = b.allow().expect("probe after the cooldown");
        assert!(
            b.allow().is_err(),
            "the slot is taken while the probe is held"
        );
        drop(probe); // no Stripe call, nothing recorded
        let next = b.allow().expect("the next job may probe");
        assert!(next.is_probe());
    }

    /// A probe lost without its permit being dropped (a task stuck somewhere) holds the slot
    /// for one Stripe timeout at most.
    #[test]
    fn a_lost_probe_is_presumed_dead_after_one_stripe_timeout() {
        let b = Breaker::new(1, Duration::from_millis(10), Duration::from_millis(40));
        b.record_failure();
        std::thread::sleep(Duration::from_millis(15));
        let lost = b.allow().expect("probe");
        let started = Instant::now();
        let next = loop {
            match b.allow() {
                Ok(p) => break p,
                Err(wait) => {
                    assert!(wait <= Duration::from_millis(40), "wait {wait:?}");
                    std::thread::sleep(wait);
                }
            }
        };
        assert!(next.is_probe());
        assert!(started.elapsed() < Duration::from_millis(200));
        // The stale permit, dropped late, must not release the newer probe's slot.
        drop(lost);
        assert!(b.allow().is_err(), "the new probe still holds the slot");
    }

    #[test]
    fn a_permit_dropped_while_unwinding_releases_the_slot() {
        let b = Arc::new(Breaker::new(1, Duration::from_millis(10), LONG));
        b.record_failure();
        std::thread::sleep(Duration::from_millis(15));
        let b2 = b.clone();
        let panicked = std::thread::spawn(move || {
            let _probe = b2.allow().expect("probe");
            panic!("job panicked mid-attempt");
        })
        .join();
        assert!(panicked.is_err());
        assert!(b.allow().is_ok_and(|p| p.is_probe()));
    }
}
