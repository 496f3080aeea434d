//! Stale-trace recovery (shared/DESIGN.md §6): finds finished builds whose log was never
//! archived (an archive job lost with the queue, or one that gave up) and enqueues their
//! archives, in bounded batches and only while the archive queue has room. The seed incident's
//! cron walked all 26,811 stale traces in one run that hardly ever finished; this one never
//! holds more than a batch in memory and never lets the archive queue grow past its capacity
//! plus one batch.
//!
//! How a walk goes:
//! 1. A cron tick (or "run now") runs [`TraceRecovery::start`]: between walks (the cursor,
//!    `cursors.trace_recovery`, at 0) it takes the walk's first step; then it hands the walk to
//!    the limited-capacity worker [`StaleTraceWalk`] (`perform_with_capacity`), which keeps one
//!    [`WalkStaleTraces`] copy queued or running while the walk goes on (`remaining_work`: the
//!    cursor is past 0 and the store is up). A walk left half-way by a restart resumes at the
//!    cursor on the next tick.
//! 2. A step ([`TraceRecovery::step`]): while the archive queue's ready + running jobs are
//!    below its capacity (its global limit, or `default_capacity`), take the next batch of
//!    stale build ids above the cursor (an index range scan over unarchived builds only),
//!    enqueue an archive for each (deduplicated against archives already queued) and move the
//!    cursor. A copy whose step finds the queue full waits for room, up to
//!    [`RecoveryConfig::wait`], then leaves the step to its successor.
//! 3. A short batch is the end of the walk: the cursor goes back to 0, `remaining_work` is 0,
//!    and the next tick starts a new walk.
//! 4. While the object store is down (its circuit breaker's shared row says open), enqueue
//!    nothing and stop walking: an archive enqueued then could only snooze, and a snoozing job
//!    is scheduled, not ready or running, so it would not count against the capacity and the
//!    walk would move the whole backlog into the queue (then released all at once when the
//!    store is back). The next cron tick resumes at the cursor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::OBJECT_STORE_BREAKER;
use super::jobs::{ArchiveTrace, WalkStaleTraces};
use super::metadata::{
    BreakerStore, CursorStore, MetadataError, MetadataStore, TraceMetadataStore,
};
use crate::jobs::broker::{BrokerError, EnqueueOutcome};
use crate::jobs::limited_capacity::{LimitedCapacityWork, perform_with_capacity};
use crate::jobs::{Clock, Job, JobClient, JobError};

/// The recovery cursor's row in `cursors`.
pub const RECOVERY_CURSOR: &str = "trace_recovery";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("job queue: {0}")]
    Broker(#[from] BrokerError),
    #[error("starting the walk: {0}")]
    Walk(String),
}

#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// A finished build's log is stale once it is this old and not archived.
    pub stale_after: Duration,
    /// Build ids read and archives enqueued at a time.
    pub batch: u32,
    /// The archive queue's capacity when it has no global limit (its limit wins otherwise).
    pub default_capacity: u32,
    /// How long one walk step waits for room in a full archive queue before it leaves the
    /// step to its successor (keep it well below [`WalkStaleTraces`]' timeout).
    pub wait: Duration,
    /// How long to wait for the archive queue to drain before looking again.
    pub poll: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(3600),
            batch: 1_000,
            default_capacity: 32,
            wait: Duration::from_secs(30),
            poll: Duration::from_millis(100),
        }
    }
}

/// What one batch step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Enqueued a batch: `enqueued` new archive jobs, `duplicates` already queued; a short
    /// batch is the end of the walk (the cursor starts over from 0).
    Batch {
        enqueued: u64,
        duplicates: u64,
        end_of_walk: bool,
    },
    /// The archive queue is at capacity; nothing read.
    QueueFull { backlog: u64, capacity: u32 },
    /// The object store's circuit breaker is open: archives could only wait; nothing read.
    StorageDown,
    /// Nothing stale above the cursor; it starts over from 0.
    Done,
}

/// The metadata recovery uses: the stale traces, its walk's cursor, and the object store's
/// breaker (a walk waits while the store is down). One `Arc<dyn MetadataStore>` serves as all
/// three ([`RecoveryMetadata::from_one`]).
#[derive(Clone)]
pub struct RecoveryMetadata {
    pub traces: Arc<dyn TraceMetadataStore>,
    pub cursors: Arc<dyn CursorStore>,
    pub breakers: Arc<dyn BreakerStore>,
}

impl RecoveryMetadata {
    pub fn from_one(meta: &Arc<dyn MetadataStore>) -> Self {
        Self {
            traces: meta.clone(),
            cursors: meta.clone(),
            breakers: meta.clone(),
        }
    }
}

pub struct TraceRecovery {
    meta: RecoveryMetadata,
    jobs: JobClient,
    clock: Arc<dyn Clock>,
    config: RecoveryConfig,
}

impl TraceRecovery {
    pub fn new(
        meta: RecoveryMetadata,
        jobs: JobClient,
        clock: Arc<dyn Clock>,
        config: RecoveryConfig,
    ) -> Self {
        Self {
            meta,
            jobs,
            clock,
            config,
        }
    }

    pub fn config(&self) -> &RecoveryConfig {
        &self.config
    }

    /// Where the walk stands: 0 between walks.
    async fn cursor(&self) -> Result<i64, RecoveryError> {
        Ok(self
            .meta
            .cursors
            .cursor(RECOVERY_CURSOR)
            .await?
            .unwrap_or(0))
    }

    fn stale_before(&self) -> i64 {
        self.clock.now_ms() - self.config.stale_after.as_millis() as i64
    }

    /// The archive queue's capacity and its backlog (ready + running).
    pub async fn archive_queue(&self) -> Result<(u32, u64), RecoveryError> {
        let stats = self
            .jobs
            .broker()
            .stats(ArchiveTrace::NAME, self.clock.now_ms())
            .await?;
        let capacity = stats.limit.unwrap_or(self.config.default_capacity);
        Ok((capacity, stats.ready + stats.running))
    }

    /// One step: a batch if the archive queue has room.
    pub async fn step(&self) -> Result<(Step, u64), RecoveryError> {
        let (capacity, backlog) = self.archive_queue().await?;
        if backlog >= u64::from(capacity) {
            return Ok((Step::QueueFull { backlog, capacity }, backlog));
        }
        if self.storage_down().await? {
            return Ok((Step::StorageDown, backlog));
        }
        let cursor = self.cursor().await?;
        let ids = self
            .meta
            .traces
            .stale_traces(
                cursor,
                self.stale_before(),
                ArchiveTrace::options().max_attempts,
                self.config.batch,
            )
            .await?;
        let now = self.clock.now_ms();
        let Some(&last) = ids.last() else {
            self.meta
                .cursors
                .set_cursor(RECOVERY_CURSOR, 0, now)
                .await?;
            metrics::gauge!("buildlogs_recovery_cursor").set(0.0);
            return Ok((Step::Done, backlog));
        };
        let archives: Vec<ArchiveTrace> = ids
            .iter()
            .map(|&build_id| ArchiveTrace { build_id })
            .collect();
        let outcomes = self.jobs.enqueue_bulk(&archives).await?;
        let enqueued = outcomes
            .iter()
            .filter(|o| **o == EnqueueOutcome::Enqueued)
            .count() as u64;
        let duplicates = ids.len() as u64 - enqueued;
        // A short batch is the end of the walk: the next one starts over.
        let next = if ids.len() < self.config.batch as usize {
            0
        } else {
            last
        };
        self.meta
            .cursors
            .set_cursor(RECOVERY_CURSOR, next, now)
            .await?;
        metrics::counter!("buildlogs_recovery_enqueued_total").increment(enqueued);
        metrics::gauge!("buildlogs_recovery_cursor").set(next as f64);
        tracing::info!(
            enqueued,
            duplicates,
            from = ids[0],
            to = last,
            backlog,
            "stale traces: archives enqueued"
        );
        Ok((
            Step::Batch {
                enqueued,
                duplicates,
                end_of_walk: next == 0,
            },
            backlog,
        ))
    }

    /// One step, waiting while the archive queue is full (up to [`RecoveryConfig::wait`]).
    pub async fn step_when_room(&self) -> Result<Step, RecoveryError> {
        let started = Instant::now();
        loop {
            let (step, _) = self.step().await?;
            if step == Step::StorageDown {
                tracing::info!("object store down: stale-trace recovery waits for it");
            }
            if !matches!(step, Step::QueueFull { .. }) || started.elapsed() >= self.config.wait {
                return Ok(step);
            }
            tokio::time::sleep(self.config.poll).await;
        }
    }

    /// Whether the walk goes on: it is under way (the cursor is past 0) and the object store
    /// is up. Two point reads.
    pub async fn walk_goes_on(&self) -> Result<bool, RecoveryError> {
        let under_way = self.cursor().await? > 0;
        Ok(under_way && !self.storage_down().await?)
    }

    async fn storage_down(&self) -> Result<bool, RecoveryError> {
        Ok(self
            .meta
            .breakers
            .breaker(OBJECT_STORE_BREAKER)
            .await?
            .is_some_and(|b| b.open))
    }

    /// A cron tick: between walks, takes the first step of a new one; then hands the walk to
    /// its limited-capacity worker (a no-op while a walker is queued or running, or when the
    /// walk has ended already). Returns the first step taken, if any, and how many walkers it
    /// enqueued (0 or 1).
    pub async fn start(self: &Arc<Self>) -> Result<(Option<Step>, u64), RecoveryError> {
        let between_walks = self.cursor().await? == 0;
        let first = if between_walks {
            Some(self.step_when_room().await?)
        } else {
            if self.storage_down().await? {
                tracing::info!("object store down: stale-trace recovery waits for it");
            }
            None
        };
        let walk = StaleTraceWalk {
            recovery: self.clone(),
        };
        let walkers = perform_with_capacity(&self.jobs, &walk)
            .await
            .map_err(|e| RecoveryError::Walk(e.to_string()))?;
        metrics::counter!("buildlogs_recovery_runs_total").increment(1);
        Ok((first, walkers))
    }

    /// What a run would enqueue now, without enqueuing or moving the cursor: the stale build
    /// ids from the cursor on, at most `max`, read batch by batch.
    pub async fn dry_run(&self, max: u64) -> Result<Vec<i64>, RecoveryError> {
        let mut cursor = self.cursor().await?;
        let before = self.stale_before();
        let mut ids = Vec::new();
        while (ids.len() as u64) < max {
            let want = (max - ids.len() as u64).min(u64::from(self.config.batch)) as u32;
            let batch = self
                .meta
                .traces
                .stale_traces(cursor, before, ArchiveTrace::options().max_attempts, want)
                .await?;
            let Some(&last) = batch.last() else { break };
            cursor = last;
            let short = batch.len() < want as usize;
            ids.extend(batch);
            if short {
                break;
            }
        }
        Ok(ids)
    }
}

/// Stale-trace recovery's walk as a limited-capacity worker (GitLab's `LimitedCapacity::Worker`)
/// of width 1: the walk has one cursor, so one step at a time. Its queue's global limit starts
/// at 1 (an operator who widens it gets concurrent steps: duplicate enqueues, which dedup
/// drops, no harm).
pub struct StaleTraceWalk {
    pub recovery: Arc<TraceRecovery>,
}

impl LimitedCapacityWork for StaleTraceWalk {
    type Job = WalkStaleTraces;

    fn max_running(&self) -> u32 {
        1
    }

    /// 1 while the walk goes on, 0 once it ended or the store is down (a bounded stand-in for
    /// a count: the walk's length is unknown until it is walked).
    async fn remaining_work(&self) -> Result<u64, JobError> {
        let goes_on = self
            .recovery
            .walk_goes_on()
            .await
            .map_err(JobError::retryable)?;
        Ok(u64::from(goes_on))
    }

    async fn perform_work(&self) -> Result<(), JobError> {
        let step = self
            .recovery
            .step_when_room()
            .await
            .map_err(JobError::retryable)?;
        tracing::debug!(?step, "stale-trace recovery: walk step");
        Ok(())
    }
}
