//! The broker seam: everything the job workers need from a queue store.
//!
//! Duties of every implementation (checked by `tests/job_broker_conformance.rs`, run against each):
//! 1. `enqueue` stores jobs durably, ready now or scheduled at `run_at_ms`, applying dedup.
//! 2. `fetch` leases at most `max` due jobs of one queue, never more than the queue's global
//!    concurrency limit minus the jobs already leased by *any* process, and counts the delivery
//!    as an attempt (so a job that crashes its worker every time still runs out of attempts).
//! 3. `ack` settles deliveries: complete, retry later, snooze (no attempt burnt), dead, or release
//!    (hand back on shutdown, no attempt burnt). An ack for a delivery whose lease was already
//!    reaped and re-delivered is ignored: the newer delivery owns the job.
//! 4. `reap_expired` re-delivers jobs whose lease ran out (the worker died), or buries them when
//!    they have used all their attempts.
//! 5. Work per job is O(1) in the backlog size; batches are bounded.
//!
//! Time is passed in by the caller (`now_ms` comes from the worker's [`Clock`](super::Clock)), so
//! tests can drive schedules without sleeping.

use std::time::Duration;

use async_trait::async_trait;

use super::envelope::Envelope;

/// A job to store.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub envelope: Envelope,
    /// When it becomes due; `None` means now.
    pub run_at_ms: Option<i64>,
    /// How long the dedup key is held at most (ignored without a dedup key).
    pub dedup_ttl: Duration,
}

/// What happened to one enqueued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// Stored as a new job.
    Enqueued,
    /// A job with the same dedup key is already held; nothing stored.
    Duplicate,
    /// A job with the same dedup key is running and the strategy is `reschedule_once`:
    /// it will run once more after it finishes (at most once, however many duplicates arrive).
    RescheduledOnce,
}

/// One leased job handed to a worker.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The job as this delivery runs it (`attempt` counts this run).
    pub envelope: Envelope,
    /// Identifies this delivery when it is acked or its lease renewed.
    pub lease: Lease,
    /// Lease deadline (ms since the epoch); heartbeats move it.
    pub lease_until_ms: i64,
}

/// A delivery's identity. An ack or renewal for a delivery whose lease was reaped (and maybe
/// re-delivered as a later attempt) is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    /// The attempt this delivery runs (1 on the first run).
    pub attempt: u32,
    /// The broker's own handle on the delivery (for Redis: the stored record, so an ack is one
    /// `ZREM` with no lookup); opaque to the workers.
    pub token: String,
}

/// How a delivery is settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Complete {
        lease: Lease,
    },
    /// Failed; run again at `run_at_ms` (the attempt stays counted).
    Retry {
        lease: Lease,
        run_at_ms: i64,
        error: String,
    },
    /// Not now; run again at `run_at_ms` without burning an attempt.
    Snooze {
        lease: Lease,
        run_at_ms: i64,
    },
    /// Failed for good: move to the dead set.
    Dead {
        lease: Lease,
        error: String,
    },
    /// Hand back unfinished (shutdown): ready again at once, first in line, attempt not burnt.
    Release {
        lease: Lease,
    },
}

impl Ack {
    pub fn lease(&self) -> &Lease {
        match self {
            Ack::Complete { lease }
            | Ack::Retry { lease, .. }
            | Ack::Snooze { lease, .. }
            | Ack::Dead { lease, .. }
            | Ack::Release { lease } => lease,
        }
    }
}

/// What `reap_expired` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReapReport {
    pub redelivered: u64,
    pub dead: u64,
}

/// A queue's figures, for `buildlogs status`, the dashboard and the metrics gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    /// Due and waiting for a worker.
    pub ready: u64,
    /// Waiting for their time: scheduled jobs, retries and snoozes.
    pub scheduled: u64,
    /// Leased by a worker (including leases not yet reaped).
    pub running: u64,
    pub dead: u64,
    /// Global concurrency limit, if any.
    pub limit: Option<u32>,
    /// Age of the oldest ready job, ms (0 when none).
    pub latency_ms: i64,
    /// Lifetime counters.
    pub processed: u64,
    pub failed: u64,
}

/// A job in the dead set.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadJob {
    pub envelope: Envelope,
    pub died_at_ms: i64,
    pub error: String,
}

/// A job waiting for its time (a retry, a snooze, or a job enqueued for later).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledJob {
    pub envelope: Envelope,
    pub run_at_ms: i64,
    /// The error of its last failed run, while it waits to run again (`None`: it has not
    /// failed, e.g. a snoozed job or one enqueued for later).
    pub last_error: Option<String>,
}

/// Bounds of the dead set (Sidekiq's defaults: 10,000 jobs, 180 days).
#[derive(Debug, Clone, Copy)]
pub struct DeadSetBounds {
    pub max_jobs: u64,
    pub max_age: Duration,
}

impl Default for DeadSetBounds {
    fn default() -> Self {
        Self {
            max_jobs: 10_000,
            max_age: Duration::from_secs(180 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt job record in queue {queue}: {detail}")]
    Corrupt { queue: String, detail: String },
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

/// Cron schedule names share the envelope header's rule: no `|`.
pub fn validate_schedule_name(schedule: &str) -> Result<(), BrokerError> {
    if schedule.is_empty() || schedule.contains('|') {
        return Err(BrokerError::Invalid {
            field: "cron schedule name",
            detail: format!("{schedule:?} is empty or contains '|'"),
        });
    }
    Ok(())
}

/// The queue store. One implementation per backend: Redis (production) and SQLite (embedded).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Stores jobs (bulk); outcome per job, in order.
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now_ms: i64,
    ) -> Result<Vec<EnqueueOutcome>, BrokerError>;

    /// Leases up to `max` due jobs of `queue` (within the global limit), promoting due scheduled
    /// jobs first in a bounded batch.
    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError>;

    /// Settles deliveries (batched).
    async fn ack(&self, queue: &str, acks: Vec<Ack>, now_ms: i64) -> Result<(), BrokerError>;

    /// Settles `acks`, then leases up to `max` jobs: the worker's steady state in one call.
    /// The acks are applied even when no job is fetched.
    ///
    /// `ahead`: up to that many more jobs for the worker to start as its slots free (it runs
    /// short jobs faster than round trips bring them), leased only when the queue has no global
    /// limit: a job waiting in a worker would hold a slot of the limit that another worker could
    /// run. With a limit, at most `max` within it, as [`fetch`](Self::fetch). The default
    /// acks, then fetches, and leases nothing ahead (a broker may always hand out fewer).
    async fn ack_and_fetch(
        &self,
        queue: &str,
        acks: Vec<Ack>,
        max: usize,
        ahead: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let _ = ahead;
        if !acks.is_empty() {
            self.ack(queue, acks, now_ms).await?;
        }
        self.fetch(queue, max, lease, now_ms).await
    }

    /// Moves the lease deadline of live deliveries.
    async fn extend_leases(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: Duration,
        now_ms: i64,
    ) -> Result<(), BrokerError>;

    /// Re-delivers (or buries) up to `limit` jobs whose lease expired before `now_ms`.
    async fn reap_expired(
        &self,
        queue: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<ReapReport, BrokerError>;

    /// Sets (or with `None`, removes) the global concurrency limit of a queue; takes effect on
    /// the next fetch of every process.
    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<(), BrokerError>;

    /// Every queue that ever had a job or a limit.
    async fn queues(&self) -> Result<Vec<String>, BrokerError>;

    async fn stats(&self, queue: &str, now_ms: i64) -> Result<QueueStats, BrokerError>;

    /// Newest first, at most `limit`.
    async fn dead_list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, BrokerError>;

    /// Scheduled jobs of `queue` (retries, snoozes, jobs for later), next to run first, at
    /// most `limit`, each with the error of its last failed run. Costs the `limit` entries
    /// read, however many jobs wait.
    async fn scheduled_list(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<ScheduledJob>, BrokerError>;

    /// Puts a dead job back to ready with a fresh attempt count; false if it is not there.
    async fn dead_retry(&self, queue: &str, id: &str, now_ms: i64) -> Result<bool, BrokerError>;

    /// Deletes a dead job; false if it is not there.
    async fn dead_discard(&self, queue: &str, id: &str) -> Result<bool, BrokerError>;

    /// Makes up to `max` scheduled jobs of `queue` due at `now_ms`, earliest first: retries
    /// waiting out their backoff, snoozed jobs, jobs enqueued for later. What a circuit breaker
    /// does when the store its jobs wait for is back. Returns how many; call again while it
    /// returns `max`.
    async fn release_scheduled(
        &self,
        queue: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<u64, BrokerError>;

    /// Drops dead jobs beyond the bounds (oldest first).
    async fn dead_trim(
        &self,
        queue: &str,
        bounds: DeadSetBounds,
        now_ms: i64,
    ) -> Result<u64, BrokerError>;

    /// Fires cron `schedule`'s tick `tick_ms` by enqueueing `job`, atomically and at most once
    /// per tick across every scheduler: true if this call fired it. Ticks at or before the last
    /// fired one are refused, so a late scheduler never replays the past.
    async fn cron_fire(
        &self,
        schedule: &str,
        tick_ms: i64,
        job: NewJob,
        now_ms: i64,
    ) -> Result<bool, BrokerError>;

    /// The last tick fired for `schedule` (and the queue it enqueues into), if any.
    async fn cron_last(&self, schedule: &str, queue: &str) -> Result<Option<i64>, BrokerError>;
}
