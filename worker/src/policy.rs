//! Exponential backoff with jitter, from the attempt count kept in Postgres.

use std::time::Duration;

use rand::Rng;
use shared::settings::RetrySettings;

/// Delay before attempt `attempts + 1`: `base * 2^(attempts-1)`, capped at `max`, then drawn
/// uniformly from its upper half, so workers that failed together do not retry together.
pub fn backoff(settings: &RetrySettings, attempts: i32) -> Duration {
    let exp = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let ceiling = settings
        .base_delay
        .saturating_mul(2u32.saturating_pow(exp))
        .min(settings.max_delay);
    let half = ceiling / 2;
    let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(&settings(), 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(101));
            let fourth = backoff(&settings(), 4);
            assert!(fourth >= Duration::from_millis(400) && fourth <= Duration::from_millis(801));
            let late = backoff(&settings(), 30);
            assert!(late >= Duration::from_secs(1) && late <= Duration::from_millis(2001));
        }
    }
}
