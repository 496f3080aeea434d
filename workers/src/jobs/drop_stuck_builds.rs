//! One run of the stuck-build sweep (thin over [`StuckBuilds`]): pending final states older
//! than the accept timeout committed, running builds silent for the stuck timeout failed with
//! `stuck_or_timeout_failure` and archived, in batches under an exclusive lease. Store errors
//! are retryable (the next cron tick would also pick the work up).

use std::sync::Arc;

use buildlogs::jobs::{JobContext, JobError, JobHandler};
use buildlogs::traces::jobs::DropStuckBuilds;
use buildlogs::traces::stuck::StuckBuilds;

pub struct DropStuckBuildsHandler {
    pub stuck: Arc<StuckBuilds>,
}

impl JobHandler for DropStuckBuildsHandler {
    type Job = DropStuckBuilds;

    async fn perform(&self, _job: DropStuckBuilds, ctx: JobContext) -> Result<(), JobError> {
        match self.stuck.run().await {
            // The service logs the run's report.
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(
                    attempt = ctx.attempt,
                    max = ctx.max_attempts,
                    error = %e,
                    "stuck-build sweep failed; will retry"
                );
                Err(JobError::retryable(e))
            }
        }
    }
}
