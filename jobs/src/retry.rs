//! Retry schedules: how long a failed job waits before its next attempt.
//!
//! Delays are computed with `backon` (the maintained replacement for the `backoff` crate, which
//! is unmaintained: RUSTSEC-2025-0012). The default is Sidekiq's: `count⁴ + 15 + rand(10·(count+1))`
//! seconds, where `count` is the number of retries so far: 25 attempts span about 20 days, long
//! enough to outlast any storage outage.

use std::time::Duration;

use backon::{Backoff, BackoffBuilder, ExponentialBuilder};
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RetrySchedule {
    /// Sidekiq's polynomial schedule with jitter.
    #[default]
    Sidekiq,
    /// `min · factor^count`, capped at `max`, with up to 100% random jitter added.
    Exponential {
        min: Duration,
        factor: f32,
        max: Duration,
        jitter: bool,
    },
    /// Always the same delay (tests, probes).
    Fixed(Duration),
}

/// backon builder for Sidekiq's schedule, so every schedule is a `backon::Backoff`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SidekiqBuilder;

#[derive(Debug, Clone, Copy, Default)]
pub struct SidekiqBackoff {
    count: u32,
}

impl BackoffBuilder for SidekiqBuilder {
    type Backoff = SidekiqBackoff;

    fn build(self) -> Self::Backoff {
        SidekiqBackoff::default()
    }
}

impl Iterator for SidekiqBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let count = u64::from(self.count);
        self.count = self.count.saturating_add(1);
        let jitter = rand::rng().random_range(0..10 * (count + 1));
        Some(Duration::from_secs(
            count
                .saturating_pow(4)
                .saturating_add(15)
                .saturating_add(jitter),
        ))
    }
}

impl RetrySchedule {
    /// The delay before the next attempt, after `attempt` (1-based) attempts have failed.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let skip = attempt.saturating_sub(1) as usize;
        let delay = match *self {
            RetrySchedule::Sidekiq => SidekiqBuilder.build().nth(skip),
            RetrySchedule::Exponential {
                min,
                factor,
                max,
                jitter,
            } => {
                let mut builder = ExponentialBuilder::default()
                    .with_min_delay(min)
                    .with_factor(factor)
                    .with_max_delay(max)
                    .with_max_times(skip + 1);
                if jitter {
                    builder = builder.with_jitter();
                }
                let mut backoff = builder.build();
                nth(&mut backoff, skip)
            }
            RetrySchedule::Fixed(d) => Some(d),
        };
        delay.unwrap_or(Duration::ZERO)
    }
}

fn nth(backoff: &mut impl Backoff, n: usize) -> Option<Duration> {
    backoff.nth(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidekiq_schedule_grows_polynomially_with_bounded_jitter() {
        for attempt in 1..=25u32 {
            let count = u64::from(attempt - 1);
            let base = count.pow(4) + 15;
            let d = RetrySchedule::Sidekiq.delay_after(attempt).as_secs();
            assert!(
                d >= base && d < base + 10 * (count + 1),
                "attempt {attempt}: {d}s not in [{base}, +jitter)"
            );
        }
    }

    #[test]
    fn sidekiq_schedule_spans_about_twenty_days_over_25_attempts() {
        let total: u64 = (1..25u32)
            .map(|a| RetrySchedule::Sidekiq.delay_after(a).as_secs())
            .sum();
        let days = total as f64 / 86_400.0;
        assert!((16.0..22.0).contains(&days), "{days} days");
    }

    #[test]
    fn exponential_schedule_doubles_and_caps() {
        let s = RetrySchedule::Exponential {
            min: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
            jitter: false,
        };
        let delays: Vec<u64> = (1..=8).map(|a| s.delay_after(a).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
