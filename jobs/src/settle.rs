//! The settle policy: how the result of one run becomes the [`Ack`] the broker stores.
//!
//! - success: `Complete`;
//! - `Snooze(d)`: run again after `d`, no attempt burnt;
//! - fatal: the dead set at once;
//! - retryable: the job's retry schedule (or the delay the error asked for), or the dead set
//!   after the last attempt.
//!
//! Every outcome is counted in the job metrics and failures are logged here, so no caller
//! re-implements any of it. (Hand-back on shutdown is not a run's result: it is
//! [`Ack::Release`], sent by whoever hands the job back.)

use std::time::Duration;

use super::broker::{Ack, Lease};
use super::job::{JobContext, JobError};
use super::metrics;
use super::retry::RetrySchedule;

/// What a failed run asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Run again after this delay (the job's schedule when `None`); dead after the last attempt.
    Retry(Option<Duration>),
    /// Run again after this long without burning an attempt.
    Snooze(Duration),
    /// Never again: the dead set.
    Dead,
}

/// A failed run: what it asks for and the error kept with the job.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub verdict: Verdict,
    pub error: String,
}

impl From<&JobError> for Failure {
    fn from(e: &JobError) -> Self {
        match e {
            JobError::Retryable(inner) => Failure {
                verdict: Verdict::Retry(None),
                error: inner.to_string(),
            },
            JobError::Fatal(inner) => Failure {
                verdict: Verdict::Dead,
                error: inner.to_string(),
            },
            JobError::Snooze(d) => Failure {
                verdict: Verdict::Snooze(*d),
                error: e.to_string(),
            },
        }
    }
}

/// Settles one run of `ctx` (queue `queue`, retried on `retry`) that ended with `result`.
pub fn settle(
    queue: &'static str,
    retry: &RetrySchedule,
    ctx: &JobContext,
    lease: Lease,
    result: Result<(), Failure>,
    now_ms: i64,
) -> Ack {
    let (id, attempt, max) = (&ctx.id, ctx.attempt, ctx.max_attempts);
    let Failure { verdict, error } = match result {
        Ok(()) => {
            metrics::record_outcome(queue, metrics::Outcome::Processed);
            return Ack::Complete { lease };
        }
        Err(failure) => failure,
    };
    match verdict {
        Verdict::Snooze(d) => {
            metrics::record_outcome(queue, metrics::Outcome::Snoozed);
            Ack::Snooze {
                lease,
                run_at_ms: now_ms.saturating_add(millis(d)),
            }
        }
        Verdict::Dead => {
            tracing::error!(queue, job_id = %id, attempt, error, "job failed fatally; moved to the dead set");
            metrics::record_outcome(queue, metrics::Outcome::Dead);
            Ack::Dead { lease, error }
        }
        Verdict::Retry(_) if attempt >= max => {
            tracing::error!(queue, job_id = %id, attempt, error, "job failed its last attempt; moved to the dead set");
            metrics::record_outcome(queue, metrics::Outcome::Dead);
            Ack::Dead { lease, error }
        }
        Verdict::Retry(delay) => {
            let delay = delay.unwrap_or_else(|| retry.delay_after(attempt));
            tracing::warn!(queue, job_id = %id, attempt, max, retry_in_s = delay.as_secs_f64(), error, "job failed; retry scheduled");
            metrics::record_outcome(queue, metrics::Outcome::Retried);
            Ack::Retry {
                lease,
                run_at_ms: now_ms.saturating_add(millis(delay)),
                error,
            }
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(attempt: u32) -> JobContext {
        JobContext {
            id: "j".into(),
            queue: "q".into(),
            attempt,
            max_attempts: 3,
            enqueued_at_ms: 0,
        }
    }

    fn lease() -> Lease {
        Lease {
            id: "j".into(),
            attempt: 1,
            token: String::new(),
        }
    }

    fn fail(e: JobError) -> Result<(), Failure> {
        Err(Failure::from(&e))
    }

    #[test]
    fn each_result_settles_as_the_policy_says() {
        let fixed = RetrySchedule::Fixed(Duration::from_secs(2));
        let ack = |attempt, result| settle("q", &fixed, &ctx(attempt), lease(), result, 1_000);
        assert_eq!(ack(1, Ok(())), Ack::Complete { lease: lease() });
        assert_eq!(
            ack(1, fail(JobError::retryable("boom"))),
            Ack::Retry {
                lease: lease(),
                run_at_ms: 3_000,
                error: "boom".into()
            }
        );
        assert_eq!(
            ack(3, fail(JobError::retryable("boom"))),
            Ack::Dead {
                lease: lease(),
                error: "boom".into()
            },
            "the last attempt dies"
        );
        assert_eq!(
            ack(1, fail(JobError::fatal("no"))),
            Ack::Dead {
                lease: lease(),
                error: "no".into()
            }
        );
        assert_eq!(
            ack(3, fail(JobError::Snooze(Duration::from_millis(500)))),
            Ack::Snooze {
                lease: lease(),
                run_at_ms: 1_500
            },
            "a snooze burns no attempt, even on the last one"
        );
        let asked = Err(Failure {
            verdict: Verdict::Retry(Some(Duration::from_millis(10))),
            error: "later".into(),
        });
        assert!(matches!(
            ack(1, asked),
            Ack::Retry {
                run_at_ms: 1_010,
                ..
            }
        ));
    }

    #[test]
    fn a_huge_delay_saturates_instead_of_overflowing() {
        let far = RetrySchedule::Fixed(Duration::MAX);
        let ack = settle(
            "q",
            &far,
            &ctx(1),
            lease(),
            fail(JobError::retryable("x")),
            i64::MAX - 5,
        );
        assert!(matches!(
            ack,
            Ack::Retry {
                run_at_ms: i64::MAX,
                ..
            }
        ));
    }
}
