//! The runner's final PUT (and keep-alive PUT), and the commit of a pending final state: close,
//! flush, validate the CRC32, commit, enqueue the archive.

use super::{FinishOutcome, FinishRequest, TraceError, TraceService, finish_backoff_s};
use crate::traces::chunk::{CHUNK_SIZE, combine_crc32, format_crc32};
use crate::traces::jobs::{ArchiveTrace, FlushTraceChunk};
use crate::traces::model::{BuildStatus, ChunkRow, PendingState};

impl TraceService {
    /// The final PUT: store the pending state, flush every live chunk, and once none is left
    /// validate the runner's CRC32 (combined from the chunks' CRCs, no re-read), commit the
    /// state. Idempotent: a repeated PUT for a finished job is `Done`. A PUT with
    /// `state=running` (the runner's keep-alive) records activity: the build is not stuck.
    pub async fn finish(
        &self,
        build_id: i64,
        token: &str,
        req: FinishRequest,
    ) -> Result<FinishOutcome, TraceError> {
        let build = self.authenticate(build_id, token).await?;
        if build.status.is_finished() {
            return Ok(FinishOutcome::Done {
                status: build.status,
            });
        }
        if req.state == BuildStatus::Running {
            self.live.touch(build_id).await?;
            return Ok(FinishOutcome::Done {
                status: build.status,
            });
        }
        let now = self.clock.now_ms();
        // From the first final PUT on, the log the checksum covers cannot grow.
        self.live.close(build_id).await?;
        let pending = self
            .meta
            .upsert_pending_state(&PendingState {
                build_id,
                state: req.state,
                failure_reason: req.failure_reason.clone(),
                exit_code: req.exit_code,
                trace_checksum: req.checksum,
                trace_bytesize: req.bytesize,
                created_at_ms: now,
            })
            .await?;
        let (rows, unflushed) = self.unflushed_chunks(build_id).await?;
        let elapsed = now - pending.created_at_ms;
        if !unflushed.is_empty() && elapsed < self.accept_timeout_ms {
            let flushes: Vec<FlushTraceChunk> = unflushed
                .iter()
                .map(|&chunk_index| FlushTraceChunk {
                    build_id,
                    chunk_index,
                })
                .collect();
            self.jobs.enqueue_bulk(&flushes).await?;
            return Ok(FinishOutcome::Accepted {
                backoff_s: finish_backoff_s(elapsed),
            });
        }
        let status = self.commit(&pending, &rows, &unflushed, now).await?;
        Ok(FinishOutcome::Done { status })
    }

    /// Commits a stored pending state now, live chunks or not: the stuck-build sweep's call
    /// for a final PUT whose runner never came back after the accept timeout. The build's
    /// status is the pending state's, unless it was committed already (then as it is).
    pub async fn commit_pending(
        &self,
        pending: &PendingState,
        now_ms: i64,
    ) -> Result<BuildStatus, TraceError> {
        let (rows, unflushed) = self.unflushed_chunks(pending.build_id).await?;
        self.commit(pending, &rows, &unflushed, now_ms).await
    }

    /// The log's chunk rows, and the chunks not yet out of the live store with their CRC32
    /// (in the object store, or in the database while the object store is down).
    async fn unflushed_chunks(
        &self,
        build_id: i64,
    ) -> Result<(Vec<ChunkRow>, Vec<u64>), TraceError> {
        let length = self.live.length(build_id).await?;
        let rows = self.meta.chunks(build_id).await?;
        let unflushed = (0..length.div_ceil(CHUNK_SIZE))
            .filter(|i| {
                rows.iter()
                    .find(|r| r.chunk_index == *i)
                    .is_none_or(|r| r.crc32.is_none())
            })
            .collect();
        Ok((rows, unflushed))
    }

    /// Validates the runner's CRC32 if every chunk is flushed (else the archive does, against
    /// the whole log), commits the pending state and enqueues the archive.
    async fn commit(
        &self,
        pending: &PendingState,
        rows: &[ChunkRow],
        unflushed: &[u64],
        now: i64,
    ) -> Result<BuildStatus, TraceError> {
        let build_id = pending.build_id;
        if unflushed.is_empty() {
            let crc = combine_crc32(rows.iter().map(|r| (r.crc32.unwrap_or(0), r.size)));
            let valid = pending.trace_checksum.map(|theirs| theirs == crc);
            if valid == Some(false) {
                tracing::warn!(build_id, ours = %format_crc32(crc), theirs = ?pending.trace_checksum.map(format_crc32), "trace checksum mismatch");
                metrics::counter!("buildlogs_trace_checksum_mismatches_total").increment(1);
            }
            self.meta
                .record_checksums(build_id, crc, pending.trace_checksum, valid)
                .await?;
        } else {
            tracing::warn!(
                build_id,
                unflushed = unflushed.len(),
                "chunks still live after the accept timeout; committing the state anyway"
            );
        }
        let build = self
            .meta
            .finish_build(
                build_id,
                pending.state,
                pending.failure_reason.as_deref(),
                now,
            )
            .await?;
        self.jobs.enqueue(&ArchiveTrace { build_id }).await?;
        Ok(build.status)
    }
}
