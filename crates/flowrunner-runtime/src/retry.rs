//! Delay between retry attempts: fixed or exponential backoff, capped, with optional jitter.

use std::time::Duration;

use flowrunner_dsl::{Backoff, RetryPolicy};

/// The delay to wait after failed attempt number `failed_attempt` (1-based) before the next.
///
/// `unit` is a random number in `[0, 1)` used for jitter: with jitter, the delay is scaled to
/// between 50% and 100% of its computed value. Never exceeds `max_delay`.
pub fn backoff_delay(policy: &RetryPolicy, failed_attempt: u32, unit: f64) -> Duration {
    let base = match policy.backoff {
        Backoff::Fixed => policy.initial_delay,
        Backoff::Exponential => {
            let exponent = failed_attempt.saturating_sub(1).min(63);
            let factor = 1u64 << exponent;
            let nanos = policy
                .initial_delay
                .as_nanos()
                .saturating_mul(u128::from(factor));
            duration_from_nanos(nanos)
        }
    };
    let capped = if policy.max_delay.is_zero() {
        base
    } else {
        base.min(policy.max_delay)
    };
    if policy.jitter {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // `try_` because a huge uncapped delay rounds above `Duration::MAX` as f64.
        Duration::try_from_secs_f64(capped.as_secs_f64() * (0.5 + unit * 0.5)).unwrap_or(capped)
    } else {
        capped
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = nanos / 1_000_000_000;
    match u64::try_from(secs) {
        Ok(secs) => Duration::new(secs, u32::try_from(nanos % 1_000_000_000).unwrap_or(0)),
        Err(_) => Duration::MAX,
    }
}

/// [`backoff_delay`] with a fresh random number.
pub(crate) fn backoff_delay_random(policy: &RetryPolicy, failed_attempt: u32) -> Duration {
    let unit = if policy.jitter {
        rand::random::<f64>()
    } else {
        0.0
    };
    backoff_delay(policy, failed_attempt, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            backoff,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            jitter,
        }
    }

    #[test]
    fn fixed_and_exponential_with_cap() {
        let fixed = policy(Backoff::Fixed, false);
        assert_eq!(backoff_delay(&fixed, 1, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&fixed, 5, 0.0), Duration::from_millis(100));
        let exp = policy(Backoff::Exponential, false);
        let got: Vec<u128> = (1..=6)
            .map(|n| backoff_delay(&exp, n, 0.0).as_millis())
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            backoff_delay(&exp, u32::MAX, 0.0),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let exp = policy(Backoff::Exponential, true);
        assert_eq!(backoff_delay(&exp, 2, 0.0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&exp, 2, 1.0), Duration::from_millis(200));
        assert_eq!(backoff_delay(&exp, 2, f64::NAN), Duration::from_millis(100));
        let uncapped = RetryPolicy {
            max_delay: Duration::ZERO,
            ..exp
        };
        assert!(backoff_delay(&uncapped, u32::MAX, 1.0) >= Duration::from_secs(365 * 86_400));
        let huge = RetryPolicy {
            initial_delay: Duration::MAX,
            ..uncapped
        };
        assert!(backoff_delay(&huge, 3, 1.0) >= Duration::from_secs(u64::MAX / 2));
        for _ in 0..100 {
            let d = backoff_delay_random(&exp, 3);
            assert!(
                d >= Duration::from_millis(200) && d <= Duration::from_millis(400),
                "{d:?}"
            );
        }
    }
}
