//! One run of artifact expiry (thin over [`ArtifactExpiry`]): expired, unlocked archives
//! deleted, object then row, in batches under an exclusive lease, until nothing is left, the
//! loop limit or the time budget. Store errors are retryable (the next cron tick would also
//! pick the work up).

use std::sync::Arc;

use buildlogs::jobs::{JobContext, JobError, JobHandler};
use buildlogs::traces::expiry::ArtifactExpiry;
use buildlogs::traces::jobs::ExpireArtifacts;

pub struct ExpireArtifactsHandler {
    pub expiry: Arc<ArtifactExpiry>,
}

impl JobHandler for ExpireArtifactsHandler {
    type Job = ExpireArtifacts;

    async fn perform(&self, _job: ExpireArtifacts, ctx: JobContext) -> Result<(), JobError> {
        match self.expiry.run().await {
            // The service logs the run's report.
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(
                    attempt = ctx.attempt,
                    max = ctx.max_attempts,
                    error = %e,
                    "artifact expiry failed; will retry"
                );
                Err(JobError::retryable(e))
            }
        }
    }
}
