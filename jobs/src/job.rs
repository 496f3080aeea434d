//! What a job type declares, and what its handler returns.
//!
//! A job type is a serde payload plus constants (`NAME`, options); its handler is a thin struct
//! over domain services implementing [`JobHandler`]. Failures are typed: [`JobError::Retryable`]
//! goes to the retry schedule, [`JobError::Fatal`] straight to the dead set,
//! [`JobError::Snooze`] runs it again later without burning an attempt.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::dedup::Dedup;
use super::retry::RetrySchedule;

/// Per-job-type behaviour.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Attempts in all, the first run included (Sidekiq: 25).
    pub max_attempts: u32,
    pub retry: RetrySchedule,
    pub dedup: Dedup,
    /// A run that takes longer fails (retryable).
    pub timeout: Duration,
    /// How long a delivery is leased before another worker may take it; heartbeats renew it
    /// every third of this while the job runs.
    pub lease: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            max_attempts: 25,
            retry: RetrySchedule::Sidekiq,
            dedup: Dedup::default(),
            timeout: Duration::from_secs(300),
            lease: Duration::from_secs(30),
        }
    }
}

/// A typed job payload.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The queue name: one queue per job type.
    const NAME: &'static str;

    fn options() -> JobOptions {
        JobOptions::default()
    }

    /// The dedup key; by default a digest of the payload (Sidekiq's "same class, same args").
    fn dedup_key(&self) -> Option<String> {
        None
    }
}

/// What the handler sees of the delivery.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: String,
    pub queue: String,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    pub enqueued_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Try again later, per the retry schedule; dead after the last attempt.
    #[error("retryable: {0}")]
    Retryable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Retrying cannot help: straight to the dead set.
    #[error("fatal: {0}")]
    Fatal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Not now (e.g. storage circuit open): run again after this long, no attempt burnt.
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
}

impl JobError {
    pub fn retryable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        JobError::Retryable(e.into())
    }

    pub fn fatal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        JobError::Fatal(e.into())
    }
}

/// Runs one job type. Must be idempotent: a job can run more than once (at-least-once).
pub trait JobHandler: Send + Sync + 'static {
    type Job: Job;

    fn perform(
        &self,
        job: Self::Job,
        ctx: JobContext,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
}
