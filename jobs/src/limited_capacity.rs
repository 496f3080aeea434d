//! The limited-capacity worker pattern (GitLab's `LimitedCapacity::Worker`): keep up to
//! `max_running` copies of a job busy while `remaining_work` says there is work, and no more.
//!
//! - [`LimitedCapacityHandler`] wraps a [`LimitedCapacityWork`] as a job handler: it performs one
//!   unit of work, then tops the queue back up to `max_running` if work remains.
//! - [`perform_with_capacity`] is what a cron calls to start (or restart) the fan-out.
//!
//! The queue's global concurrency limit starts at `max_running` (set when the queue has none),
//! so however many copies are queued, no more than that run at once across all processes; an
//! operator who changes the limit (`buildlogs limits set`) changes the fan-out width with it. Copies use no dedup (they are
//! interchangeable); the top-up counts ready + scheduled + running copies, so the queue holds
//! about the limit's worth of them (two copies topping up at once may add a few more; the
//! global limit still caps how many run).

use std::future::Future;
use std::sync::Arc;

use super::broker::{Broker, BrokerError, EnqueueOutcome};
use super::client::{JobClient, new_job};
use super::dedup::DedupStrategy;
use super::job::{Job, JobContext, JobError, JobHandler};

pub trait LimitedCapacityWork: Send + Sync + 'static {
    /// The job that carries one unit of work (usually an empty struct). Its dedup must be `none`.
    type Job: Job + Default;

    fn max_running(&self) -> u32;

    /// How many units are left (a cheap, bounded count).
    fn remaining_work(&self) -> impl Future<Output = Result<u64, JobError>> + Send;

    /// Does one unit (one batch) of work.
    fn perform_work(&self) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Enqueues copies of `W::Job` until `max_running` are queued or running (or work runs out),
/// and sets the queue's global limit to `max_running`. Returns how many were enqueued.
pub async fn perform_with_capacity<W: LimitedCapacityWork>(
    client: &JobClient,
    work: &W,
) -> Result<u64, JobError> {
    let remaining = work.remaining_work().await?;
    top_up::<W>(client, work.max_running(), remaining, 0)
        .await
        .map_err(JobError::retryable)
}

async fn top_up<W: LimitedCapacityWork>(
    client: &JobClient,
    max_running: u32,
    remaining: u64,
    running_self: u64,
) -> Result<u64, BrokerError> {
    debug_assert_eq!(
        W::Job::options().dedup.strategy,
        DedupStrategy::None,
        "limited-capacity jobs must not dedup"
    );
    let queue = W::Job::NAME;
    let broker: &Arc<dyn Broker> = client.broker();
    let mut stats = broker.stats(queue, client.clock().now_ms()).await?;
    if stats.limit.is_none() {
        broker.set_limit(queue, Some(max_running)).await?;
        stats.limit = Some(max_running);
    }
    // An operator's `buildlogs limits set` wins over the code's default width.
    let width = stats.limit.unwrap_or(max_running);
    let busy = (stats.ready + stats.scheduled + stats.running).saturating_sub(running_self);
    let free = u64::from(width).saturating_sub(busy).min(remaining);
    if free == 0 {
        return Ok(0);
    }
    let now = client.clock().now_ms();
    let jobs = (0..free)
        .map(|_| new_job(&W::Job::default(), None, now))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = broker.enqueue(jobs, now).await?;
    Ok(outcomes
        .iter()
        .filter(|o| **o == EnqueueOutcome::Enqueued)
        .count() as u64)
}

/// Runs `W` as a job handler: one unit of work, then re-enqueue while work remains.
pub struct LimitedCapacityHandler<W> {
    work: Arc<W>,
    client: JobClient,
}

impl<W: LimitedCapacityWork> LimitedCapacityHandler<W> {
    pub fn new(work: Arc<W>, client: JobClient) -> Self {
        Self { work, client }
    }
}

impl<W: LimitedCapacityWork> JobHandler for LimitedCapacityHandler<W> {
    type Job = W::Job;

    async fn perform(&self, _job: W::Job, _ctx: JobContext) -> Result<(), JobError> {
        self.work.perform_work().await?;
        let remaining = self.work.remaining_work().await?;
        if remaining > 0 {
            // This copy is still counted as running: leave room for its successor.
            top_up::<W>(&self.client, self.work.max_running(), remaining, 1)
                .await
                .map_err(JobError::retryable)?;
        }
        Ok(())
    }
}
