//! The per-job PATCH rate limit (DESIGN §5: "Rate limited: 429").
//!
//! Duties:
//! 1. Keep one token bucket per job in this web process: `burst` PATCHes at once, refilled at
//!    `per_second`. A PATCH past it is answered `429` with `Retry-After` (whole seconds until
//!    the bucket holds a token again), before its body is read; nothing is written.
//! 2. Stay bounded: at most [`MAX_BUCKETS`] buckets; past that, buckets that are full again
//!    (their job has been quiet long enough to refill) are dropped, and if that frees nothing
//!    the map starts over (every job gets a full bucket: more generous, never stricter).
//!
//! Guarantees: per process, not global: with N web processes behind a balancer a job may get
//! up to N times the rate. That is the price of no extra round trip on the append path (one
//! Redis script per PATCH stays one). Only PATCHes with the job's valid token count, so a
//! stranger cannot spend a job's bucket.
//!
//! Why these defaults: GitLab Runner PATCHes every 3 s while a log is tailed, 60 s otherwise,
//! and resends at once after a 416; 10 a second sustained and 100 at once is over 30 times the
//! busiest runner, and still stops a runaway client hammering one job.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default sustained PATCHes per second per job.
pub const DEFAULT_PATCH_RATE: f64 = 10.0;

/// Default PATCHes a job may send at once before the rate applies.
pub const DEFAULT_PATCH_BURST: u32 = 100;

/// Buckets kept at most: one per job PATCHing in the last `burst / per_second` seconds (10 s
/// with the defaults); far above what one web process serves.
const MAX_BUCKETS: usize = 100_000;

/// The limit's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchRate {
    /// Sustained PATCHes per second per job; 0 (or less) turns the limit off.
    pub per_second: f64,
    /// PATCHes at once (at least 1).
    pub burst: u32,
}

impl Default for PatchRate {
    fn default() -> Self {
        Self {
            per_second: DEFAULT_PATCH_RATE,
            burst: DEFAULT_PATCH_BURST,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per job, shared by the handlers of one web process.
#[derive(Debug, Default)]
pub struct PatchRateLimit {
    rate: PatchRate,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

impl PatchRateLimit {
    pub fn new(rate: PatchRate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `build_id`'s bucket at `now`: `Ok`, or `Err(seconds)` to wait.
    pub fn check(&self, build_id: i64, now: Instant) -> Result<(), u64> {
        let per_second = self.rate.per_second;
        if per_second <= 0.0 || !per_second.is_finite() {
            return Ok(());
        }
        let burst = f64::from(self.rate.burst.max(1));
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere; never refuse a runner because of it.
            return Ok(());
        };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&build_id) {
            let refill = Duration::from_secs_f64(burst / per_second);
            buckets.retain(|_, b| now.saturating_duration_since(b.at) < refill);
            if buckets.len() >= MAX_BUCKETS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(build_id).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PatchRate, PatchRateLimit};
    use std::time::{Duration, Instant};

    #[test]
    fn a_job_gets_its_burst_then_waits_for_the_refill_and_others_are_unaffected() {
        let limit = PatchRateLimit::new(PatchRate {
            per_second: 0.5,
            burst: 3,
        });
        let t0 = Instant::now();
        assert_eq!(
            (0..4).map(|_| limit.check(1, t0)).collect::<Vec<_>>(),
            [Ok(()), Ok(()), Ok(()), Err(2)]
        );
        assert_eq!(limit.check(2, t0), Ok(()), "another job has its own bucket");
        assert_eq!(limit.check(1, t0 + Duration::from_secs(1)), Err(1));
        assert_eq!(limit.check(1, t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(limit.check(1, t0 + Duration::from_secs(2)), Err(2));
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let limit = PatchRateLimit::new(PatchRate {
            per_second: 0.0,
            burst: 1,
        });
        let t0 = Instant::now();
        assert!((0..1000).all(|_| limit.check(1, t0).is_ok()));
    }
}
