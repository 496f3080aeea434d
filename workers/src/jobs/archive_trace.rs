//! Archives a finished job's log (thin over [`ArchiveService`]). Every storage error is
//! retryable: the job's schedule (about 6.5 days) outlasts an object-storage outage. While the
//! object store's circuit breaker is open the job snoozes instead (no attempt spent).

use std::sync::Arc;
use std::time::Duration;

use buildlogs::jobs::{JobContext, JobError, JobHandler};
use buildlogs::traces::archive::{ArchiveError, ArchiveOutcome, ArchiveService};
use buildlogs::traces::jobs::ArchiveTrace;

pub struct ArchiveTraceHandler {
    pub archive: Arc<ArchiveService>,
    /// How long an archive waits while the object store's breaker is open (closing it
    /// releases waiting archives sooner).
    pub snooze: Duration,
}

impl JobHandler for ArchiveTraceHandler {
    type Job = ArchiveTrace;

    async fn perform(&self, job: ArchiveTrace, ctx: JobContext) -> Result<(), JobError> {
        match self.archive.archive(job.build_id).await {
            Ok(ArchiveOutcome::Archived(a)) => {
                tracing::info!(build_id = job.build_id, path = %a.object_path, size = a.size, "trace archived");
                Ok(())
            }
            Ok(ArchiveOutcome::AlreadyArchived(_)) => Ok(()),
            Ok(ArchiveOutcome::Expired) => {
                tracing::info!(
                    build_id = job.build_id,
                    "trace archived before and expired since; nothing to do"
                );
                Ok(())
            }
            Err(ArchiveError::StorageUnavailable) => {
                tracing::debug!(build_id = job.build_id, "object store down; archive waits");
                Err(JobError::Snooze(self.snooze))
            }
            Err(
                e @ ArchiveError::Metadata(buildlogs::traces::metadata::MetadataError::NoBuild(_)),
            ) => Err(JobError::fatal(e)),
            Err(e) => {
                tracing::warn!(build_id = job.build_id, attempt = ctx.attempt, max = ctx.max_attempts, error = %e, "archiving failed; will retry");
                Err(JobError::retryable(e))
            }
        }
    }
}
