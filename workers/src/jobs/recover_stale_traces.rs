//! One run of stale-trace recovery (thin over [`TraceRecovery`]): archives enqueued in
//! batches while the archive queue has room, until the walk ends or the time budget runs out.

use std::sync::Arc;

use buildlogs::jobs::{JobContext, JobError, JobHandler};
use buildlogs::traces::jobs::RecoverStaleTraces;
use buildlogs::traces::recovery::TraceRecovery;

pub struct RecoverStaleTracesHandler {
    pub recovery: Arc<TraceRecovery>,
}

impl JobHandler for RecoverStaleTracesHandler {
    type Job = RecoverStaleTraces;

    async fn perform(&self, _job: RecoverStaleTraces, _ctx: JobContext) -> Result<(), JobError> {
        let report = self.recovery.run().await.map_err(JobError::retryable)?;
        tracing::info!(
            enqueued = report.enqueued,
            duplicates = report.duplicates,
            batches = report.batches,
            completed = report.completed,
            max_backlog = report.max_backlog,
            "stale-trace recovery run"
        );
        Ok(())
    }
}
