//! Flushes one chunk to the object store (thin over [`FlushService`]). A chunk that changed
//! while it was flushed is retried; storage errors are retried with the job's backoff.

use std::sync::Arc;

use buildlogs::jobs::{JobContext, JobError, JobHandler};
use buildlogs::traces::flush::{FlushError, FlushOutcome, FlushService};
use buildlogs::traces::jobs::FlushTraceChunk;

pub struct FlushTraceChunkHandler {
    pub flush: Arc<FlushService>,
}

impl JobHandler for FlushTraceChunkHandler {
    type Job = FlushTraceChunk;

    async fn perform(&self, job: FlushTraceChunk, ctx: JobContext) -> Result<(), JobError> {
        match self.flush.flush(job.build_id, job.chunk_index).await {
            Ok(FlushOutcome::Flushed { size, crc32 }) => {
                tracing::debug!(
                    build_id = job.build_id,
                    chunk = job.chunk_index,
                    size,
                    crc32,
                    "chunk flushed"
                );
                Ok(())
            }
            Ok(outcome) => {
                tracing::debug!(
                    build_id = job.build_id,
                    chunk = job.chunk_index,
                    ?outcome,
                    "nothing to flush"
                );
                Ok(())
            }
            Err(e @ FlushError::Raced { .. }) => Err(JobError::retryable(e)),
            Err(e) => {
                tracing::warn!(build_id = job.build_id, chunk = job.chunk_index, attempt = ctx.attempt, error = %e, "flush failed");
                Err(JobError::retryable(e))
            }
        }
    }
}
