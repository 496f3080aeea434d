//! Stale-trace recovery (thin over [`TraceRecovery`]): the cron tick starts or resumes the walk
//! ([`RecoverStaleTracesHandler`]); the walk's steps run as a limited-capacity worker
//! ([`walk_handler`]: [`StaleTraceWalk`], one step per job, each enqueueing the next while
//! the walk goes on).

use std::sync::Arc;

use buildlogs::jobs::limited_capacity::LimitedCapacityHandler;
use buildlogs::jobs::{JobClient, JobContext, JobError, JobHandler};
use buildlogs::traces::jobs::RecoverStaleTraces;
use buildlogs::traces::recovery::{StaleTraceWalk, TraceRecovery};

pub struct RecoverStaleTracesHandler {
    pub recovery: Arc<TraceRecovery>,
}

impl JobHandler for RecoverStaleTracesHandler {
    type Job = RecoverStaleTraces;

    async fn perform(&self, _job: RecoverStaleTraces, _ctx: JobContext) -> Result<(), JobError> {
        let (first, walkers) = self.recovery.start().await.map_err(JobError::retryable)?;
        tracing::info!(?first, walkers, "stale-trace recovery: tick");
        Ok(())
    }
}

/// The handler of the walk's steps (`WalkStaleTraces`).
pub fn walk_handler(
    recovery: Arc<TraceRecovery>,
    jobs: JobClient,
) -> LimitedCapacityHandler<StaleTraceWalk> {
    LimitedCapacityHandler::new(Arc::new(StaleTraceWalk { recovery }), jobs)
}
