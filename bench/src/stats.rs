//! Latency samples and their summary: percentiles by the nearest-rank method, so a reported
//! p99 is a latency some request really had, never an interpolation between two.

use std::time::Duration;

/// p50, p99 and max of one run, with how many samples they come from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (any order; sorted in place).
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            count: samples.len(),
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// The nearest-rank `p`-th percentile of `sorted` (ascending): the smallest sample with at least
/// `p` % of the samples at or below it. Zero for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with a precision that suits the size: `0.42`, `3.1`, `250`.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    // Thresholds just below the next precision's boundary, so 9.97 prints "10", not "10.0".
    if v < 0.995 {
        format!("{v:.2}")
    } else if v < 9.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles_pick_real_samples() {
        let mut s = millis(&(1..=100).rev().collect::<Vec<_>>());
        let sum = Summary::of(&mut s);
        assert_eq!(sum.count, 100);
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.max, Duration::from_millis(100));
    }

    #[test]
    fn one_slow_request_in_a_hundred_is_the_p99_only_past_a_hundred() {
        let mut v = vec![1; 99];
        v.push(500);
        let mut s = millis(&v);
        assert_eq!(Summary::of(&mut s).p99, Duration::from_millis(1));
        v.push(500);
        let mut s = millis(&v);
        assert_eq!(Summary::of(&mut s).p99, Duration::from_millis(500));
    }

    #[test]
    fn empty_and_single_samples() {
        assert_eq!(Summary::of(&mut []), Summary::default());
        let mut s = millis(&[7]);
        let sum = Summary::of(&mut s);
        assert_eq!((sum.p50, sum.p99, sum.max), (s[0], s[0], s[0]));
    }

    #[test]
    fn milliseconds_are_printed_with_sensible_precision() {
        assert_eq!(ms(Duration::from_micros(420)), "0.42");
        assert_eq!(ms(Duration::from_micros(3_140)), "3.1");
        assert_eq!(ms(Duration::from_millis(250)), "250");
        assert_eq!(ms(Duration::from_micros(9_970)), "10");
        assert_eq!(ms(Duration::from_micros(998)), "1.0");
    }
}
