//! When a call is sent again: exponential backoff with full jitter, on `UNAVAILABLE` only.

use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// How a [`Client`](crate::Client) retries a call whose repetition is safe (each call's documentation says
/// why it is) after an `UNAVAILABLE` answer or a connection that failed. The pause before attempt `n + 1` is
/// drawn uniformly from zero to `min(max_backoff, initial_backoff × multiplier^(n-1))` ("full jitter", so
/// that many clients cut off together do not come back together). The call's deadline bounds every attempt
/// and pause together: no attempt starts past it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How many times a call is sent at most, the first included; 1 never retries.
    pub max_attempts: u32,
    /// The ceiling of the first pause.
    pub initial_backoff: Duration,
    /// The ceiling no pause exceeds.
    pub max_backoff: Duration,
    /// How much the ceiling grows after each attempt.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// 5 attempts, pauses of at most 50 ms, 100 ms, 200 ms, 400 ms: a service restarting behind a load
    /// balancer is waited for about a second before the call gives up.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// Never retries.
    pub const NEVER: Self =
        Self { max_attempts: 1, initial_backoff: Duration::ZERO, max_backoff: Duration::ZERO, multiplier: 1.0 };

    /// The pause after the `attempt`-th failed attempt (1-based): a random share of its ceiling.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(random_fraction())
    }

    /// The longest pause after the `attempt`-th failed attempt.
    fn ceiling(&self, attempt: u32) -> Duration {
        let growth = self.multiplier.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        let ceiling = self.initial_backoff.as_secs_f64() * growth;
        Duration::try_from_secs_f64(ceiling).unwrap_or(Duration::MAX).min(self.max_backoff)
    }
}

/// A number in `[0, 1)`, different on every call: jitter needs no more than the standard library's randomly
/// seeded hasher.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::UNIX_EPOCH.elapsed().map(|d| d.as_nanos()).unwrap_or(0));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_grow_to_the_maximum() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u128> = (1..=8).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(policy.ceiling(u32::MAX), policy.max_backoff);
        let huge = RetryPolicy { multiplier: f64::MAX, ..policy };
        assert_eq!(huge.ceiling(10), policy.max_backoff);
    }

    #[test]
    fn pauses_are_jittered_below_their_ceiling() {
        let policy = RetryPolicy::default();
        let pauses: Vec<Duration> = (0..64).map(|_| policy.backoff(3)).collect();
        assert!(pauses.iter().all(|p| *p < Duration::from_millis(200)), "{pauses:?}");
        let distinct: std::collections::HashSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 32, "jitter draws the same pause again and again: {pauses:?}");
    }
}
