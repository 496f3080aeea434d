//! Stale-trace recovery (shared/DESIGN.md §6): finds finished builds whose log was never
//! archived (an archive job lost with the queue, or one that gave up) and enqueues their
//! archives, in bounded batches and only while the archive queue has room. The seed incident's
//! cron walked all 26,811 stale traces in one run that hardly ever finished; this one never
//! holds more than a batch in memory and never lets the archive queue grow past its capacity
//! plus one batch.
//!
//! How a run goes ([`TraceRecovery::run`]):
//! 1. Read the cursor (`cursors.trace_recovery`, a build id), so a run resumes where the last
//!    one stopped, across restarts.
//! 2. While the archive queue's ready + running jobs are below its capacity (its global limit,
//!    the limited-capacity worker's `max_running`), take the next batch of stale build ids
//!    above the cursor (an index range scan over unarchived builds only), enqueue an archive
//!    for each (deduplicated against archives already queued) and move the cursor.
//! 3. When the queue is full, wait for it to drain; when the walk reaches the end, start over
//!    from 0 next time (`remaining_work` is 0); stop at the time budget in any case.
//! 4. While the object store is down (its circuit breaker's shared row says open), enqueue
//!    nothing and end the run: an archive enqueued then could only snooze, and a snoozing job
//!    is scheduled, not ready or running, so it would not count against the capacity and the
//!    walk would move the whole backlog into the queue (then released all at once when the
//!    store is back). The next cron tick looks again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::OBJECT_STORE_BREAKER;
use super::jobs::ArchiveTrace;
use super::metadata::{MetadataError, MetadataStore};
use crate::jobs::broker::{BrokerError, EnqueueOutcome};
use crate::jobs::{Clock, Job, JobClient};

/// The recovery cursor's row in `cursors`.
pub const RECOVERY_CURSOR: &str = "trace_recovery";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("job queue: {0}")]
    Broker(#[from] BrokerError),
}

#[derive(Debug, Clone)]
pub struct RecoveryConfig {
    /// A finished build's log is stale once it is this old and not archived.
    pub stale_after: Duration,
    /// Build ids read and archives enqueued at a time.
    pub batch: u32,
    /// The archive queue's capacity when it has no global limit (its limit wins otherwise).
    pub default_capacity: u32,
    /// How long one run may go on (keep it below the cron interval).
    pub budget: Duration,
    /// How long to wait for the archive queue to drain before looking again.
    pub poll: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(3600),
            batch: 1_000,
            default_capacity: 32,
            budget: Duration::from_secs(240),
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

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub enqueued: u64,
    pub duplicates: u64,
    pub batches: u64,
    /// The walk reached the end (false: the budget ran out first).
    pub completed: bool,
    /// The largest archive backlog (ready + running) seen before a batch.
    pub max_backlog: u64,
}

pub struct TraceRecovery {
    meta: Arc<dyn MetadataStore>,
    jobs: JobClient,
    clock: Arc<dyn Clock>,
    config: RecoveryConfig,
}

impl TraceRecovery {
    pub fn new(
        meta: Arc<dyn MetadataStore>,
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
        if self
            .meta
            .breaker(OBJECT_STORE_BREAKER)
            .await?
            .is_some_and(|b| b.open)
        {
            return Ok((Step::StorageDown, backlog));
        }
        let cursor = self.meta.cursor(RECOVERY_CURSOR).await?.unwrap_or(0);
        let ids = self
            .meta
            .stale_traces(
                cursor,
                self.stale_before(),
                ArchiveTrace::options().max_attempts,
                self.config.batch,
            )
            .await?;
        let now = self.clock.now_ms();
        let Some(&last) = ids.last() else {
            self.meta.set_cursor(RECOVERY_CURSOR, 0, now).await?;
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
        self.meta.set_cursor(RECOVERY_CURSOR, next, now).await?;
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

    /// Steps until the walk ends or the budget runs out, waiting while the queue is full.
    pub async fn run(&self) -> Result<RecoveryReport, RecoveryError> {
        let started = Instant::now();
        let mut report = RecoveryReport::default();
        loop {
            let (step, backlog) = self.step().await?;
            report.max_backlog = report.max_backlog.max(backlog);
            match step {
                Step::Batch {
                    enqueued,
                    duplicates,
                    end_of_walk,
                } => {
                    report.enqueued += enqueued;
                    report.duplicates += duplicates;
                    report.batches += 1;
                    if end_of_walk {
                        report.completed = true;
                        break;
                    }
                }
                Step::Done => {
                    report.completed = true;
                    break;
                }
                Step::StorageDown => {
                    tracing::info!("object store down: stale-trace recovery waits for it");
                    break;
                }
                Step::QueueFull { .. } => {
                    if started.elapsed() >= self.config.budget {
                        break;
                    }
                    tokio::time::sleep(self.config.poll).await;
                }
            }
            if started.elapsed() >= self.config.budget {
                break;
            }
        }
        metrics::counter!("buildlogs_recovery_runs_total").increment(1);
        Ok(report)
    }

    /// What a run would enqueue now, without enqueuing or moving the cursor: the stale build
    /// ids from the cursor on, at most `max`, read batch by batch.
    pub async fn dry_run(&self, max: u64) -> Result<Vec<i64>, RecoveryError> {
        let mut cursor = self.meta.cursor(RECOVERY_CURSOR).await?.unwrap_or(0);
        let before = self.stale_before();
        let mut ids = Vec::new();
        while (ids.len() as u64) < max {
            let want = (max - ids.len() as u64).min(u64::from(self.config.batch)) as u32;
            let batch = self
                .meta
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
