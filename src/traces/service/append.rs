//! The runner's PATCH: authenticated, at the exact offset, within the size limit; every chunk
//! it fills gets a flush enqueued.

use super::{Appended, TraceError, TraceService};
use crate::traces::jobs::{ArchiveTrace, FlushTraceChunk};
use crate::traces::live::AppendOutcome;
use crate::traces::model::BuildStatus;

impl TraceService {
    pub async fn append(
        &self,
        build_id: i64,
        token: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<Appended, TraceError> {
        self.authenticate_running(build_id, token).await?;
        let end = offset.saturating_add(data.len() as u64);
        if end > self.max_trace_size {
            // Only a PATCH at the current length of an open trace can pass the limit: a stray
            // offset gets 416 (or 403 once the final PUT closed the trace) like any other, and
            // never fails the job. An empty append at `offset` asks exactly that, writing
            // nothing (this round trip is paid only past the limit).
            match self.live.append(build_id, offset, &[]).await? {
                AppendOutcome::Mismatch { length, .. } => {
                    return Err(TraceError::RangeMismatch { length });
                }
                AppendOutcome::Closed => return Err(self.not_running(build_id).await?),
                AppendOutcome::Appended { .. } => {}
            }
            self.live.close(build_id).await?;
            self.meta
                .finish_build(
                    build_id,
                    BuildStatus::Failed,
                    Some("trace_size_exceeded"),
                    self.clock.now_ms(),
                )
                .await?;
            self.jobs.enqueue(&ArchiveTrace { build_id }).await?;
            tracing::warn!(
                build_id,
                limit = self.max_trace_size,
                end,
                "trace size limit exceeded; job failed"
            );
            return Err(TraceError::TooLarge {
                limit: self.max_trace_size,
            });
        }
        match self.live.append(build_id, offset, data).await? {
            AppendOutcome::Closed => Err(self.not_running(build_id).await?),
            AppendOutcome::Mismatch { length, unflushed } => {
                // Only on a 416: the normal path pays nothing for this.
                self.enqueue_flushes(build_id, &unflushed).await?;
                Err(TraceError::RangeMismatch { length })
            }
            AppendOutcome::Appended {
                length,
                filled,
                watched,
                ..
            } => {
                // No SQL here: a live chunk needs no row (readers and the final PUT go by the
                // live length); the flush creates the row when the chunk leaves the live store.
                self.enqueue_flushes(build_id, &filled).await?;
                metrics::counter!("buildlogs_trace_bytes_total").increment(data.len() as u64);
                Ok(Appended {
                    length,
                    status: BuildStatus::Running,
                    watched,
                })
            }
        }
    }

    /// Enqueues the flush of each of `chunks` (none: no round trip). If this fails after the
    /// append landed, the runner gets an error and resends the PATCH; that resend is refused
    /// (416) and reports the chunks still live, which are enqueued then.
    async fn enqueue_flushes(&self, build_id: i64, chunks: &[u64]) -> Result<(), TraceError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let flushes: Vec<FlushTraceChunk> = chunks
            .iter()
            .map(|&chunk_index| FlushTraceChunk {
                build_id,
                chunk_index,
            })
            .collect();
        self.jobs.enqueue_bulk(&flushes).await?;
        Ok(())
    }

    /// The refusal of an append to a closed trace, with the build's status.
    async fn not_running(&self, build_id: i64) -> Result<TraceError, TraceError> {
        let status = self
            .meta
            .build(build_id)
            .await?
            .map_or(BuildStatus::Running, |b| b.status);
        Ok(TraceError::NotRunning(status))
    }
}
