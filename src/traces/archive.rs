//! Archiving a finished job's log: every chunk, in order, streamed into one object
//! `traces/<yyyy>/<mm>/<dd>/<build_id>/job.log` (multipart, memory independent of log size),
//! CRC32 and SHA-256 computed on the way and checked, then metadata + artifact recorded in one
//! transaction, then the chunks deleted.
//!
//! Any storage error is returned (never swallowed): the archive job retries with its backoff.
//! A failed upload is aborted (a failed part or read here, a failed completion by
//! `MultipartWriter::finish`, a run dropped by its job's timeout by the writer's `Drop`), so
//! no incomplete multipart upload stays stored.
//! Safe to repeat: the object key is deterministic (a rerun overwrites a partial upload's
//! place), `record_archive` is once per build, and chunk deletion tolerates what is gone.
//! A build already archived is done at once (its leftover chunks are cleaned up).
//!
//! The log's line index (for the log page) is built on the way too and stored next to the
//! archive before it is recorded ([`super::archived_lines`]); failing to store it costs the
//! first reader a scan, never the archive.
//!
//! A chunk lost for good (its live key expired or Redis lost it; no row or object holds it
//! either) never blocks the rest of the log: the archive keeps the surviving bytes and writes
//! a marker line where the gap is (`\n[buildlogs: 131072 bytes lost here (chunk 3)]\n`),
//! records the lost byte count in the trace metadata (the trace is *partial*: job JSON
//! `trace.partial`, `trace.lost_bytes`; metric `buildlogs_traces_partial_total`) and succeeds,
//! so nothing retries for it. "Lost for good" is decided only after the chunk was looked for
//! twice: where the rows first placed it, then where the rows read again place it (a flush
//! writes the object and flips the row before it deletes the live copy, so a chunk that was
//! moving is found the second time), and only if the build was not archived meanwhile (a
//! concurrent archive deletes chunks only after recording its artifact, or `archived_at`
//! before an expiry): then this run stands down instead of overwriting that archive. The
//! runner's checksum cannot match a partial log: the mismatch is recorded, never retried.
//!
//! Retention: with [`ArchiveService::with_expire_in`] the artifact is recorded with an
//! `expire_at` (record time + the retention), after which artifact expiry deletes it
//! ([`super::expiry`]); without, it is kept forever (GitLab's default for traces). A build
//! whose archive expired stays archived (`archived_at` is kept): archiving it again is
//! [`ArchiveOutcome::Expired`], never a new, empty archive.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use object_store::path::Path;
use sha2::{Digest, Sha256};

use super::archived_lines;
use super::breaker::ObjectStoreBreaker;
use super::chunk::{CHUNK_SIZE, combine_crc32, format_crc32};
use super::chunk_source::{ChunkReadError, ChunkSource};
use super::flush::chunk_path;
use super::line_index::LineIndex;
use super::live::{LiveChunkStore, LiveStoreError};
use super::metadata::{ChunkRowStore, MetadataError, MetadataStore};
use super::model::{Artifact, ChunkRow, NewArtifact};
use super::objects::{MultipartWriter, ObjectStorage, is_not_found};
use super::stores::TraceStores;
use crate::jobs::Clock;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("live chunk store: {0}")]
    Live(#[from] LiveStoreError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    #[error(transparent)]
    ChunkRead(#[from] ChunkReadError),
    #[error("build {0} is still running")]
    NotFinished(i64),
    /// The object store's circuit breaker is open: wait for it (no attempt spent).
    #[error("the object store is down (circuit breaker open)")]
    StorageUnavailable,
    /// The bytes streamed do not match the chunks' own CRCs: do not record or delete anything.
    #[error("build {build}: archived CRC32 {archived:08x} differs from the chunks' {chunks:08x}")]
    Corrupt {
        build: i64,
        archived: u32,
        chunks: u32,
    },
}

/// What an archive run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveOutcome {
    Archived(Artifact),
    AlreadyArchived(Artifact),
    /// Archived once, and the archive expired since (deleted by artifact expiry): nothing to do.
    Expired,
}

/// Where a build's archived log lives.
pub fn archive_path(build_id: i64, finished_at_ms: i64) -> Path {
    let day = Utc
        .timestamp_millis_opt(finished_at_ms)
        .single()
        .unwrap_or_else(Utc::now);
    Path::from(format!(
        "traces/{}/{build_id}/job.log",
        day.format("%Y/%m/%d")
    ))
}

/// Discards a failed upload's parts (S3 would keep them, billed, until aborted). Best effort:
/// the archive's own error is what the job reports.
async fn abort(upload: MultipartWriter, build_id: i64) {
    if let Err(e) = upload.abort().await {
        tracing::warn!(build_id, error = %e, "could not abort the failed archive upload");
    }
}

/// Chunks read ahead of the upload.
const READ_AHEAD: usize = 8;

/// The line an archive holds in place of a chunk lost for good: its own line (a newline on
/// each side, so it never runs into the log's text), saying how many bytes are missing there.
pub fn lost_chunk_marker(index: u64, lost_bytes: u64) -> String {
    format!("\n[buildlogs: {lost_bytes} bytes lost here (chunk {index})]\n")
}

pub struct ArchiveService {
    meta: Arc<dyn MetadataStore>,
    live: Arc<dyn LiveChunkStore>,
    objects: Arc<dyn ObjectStorage>,
    clock: Arc<dyn Clock>,
    breaker: Option<Arc<ObjectStoreBreaker>>,
    /// How long an archive is kept (`None`: forever).
    expire_in: Option<Duration>,
}

impl ArchiveError {
    /// An error of the object store itself (what the circuit breaker counts).
    pub fn is_object_store(&self) -> bool {
        // Not found is an answer (a concurrent run deleted a chunk), not an outage.
        match self {
            ArchiveError::Objects(e) | ArchiveError::ChunkRead(ChunkReadError::Objects(e)) => {
                !is_not_found(e)
            }
            _ => false,
        }
    }
}

impl ArchiveService {
    pub fn new(stores: TraceStores) -> Self {
        let TraceStores {
            meta,
            live,
            objects,
            clock,
        } = stores;
        Self {
            meta,
            live,
            objects,
            clock,
            breaker: None,
            expire_in: None,
        }
    }

    /// Refuses to start while `breaker` is open, and tells it how the store answers.
    pub fn with_breaker(mut self, breaker: Arc<ObjectStoreBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Records each archive with `expire_at` = now + `expire_in` (`None`: kept forever).
    pub fn with_expire_in(mut self, expire_in: Option<Duration>) -> Self {
        self.expire_in = expire_in;
        self
    }

    pub async fn archive(&self, build_id: i64) -> Result<ArchiveOutcome, ArchiveError> {
        let Some(breaker) = &self.breaker else {
            return self.archive_unguarded(build_id).await;
        };
        if breaker.is_open().await {
            return Err(ArchiveError::StorageUnavailable);
        }
        let result = self.archive_unguarded(build_id).await;
        match &result {
            Err(e) if e.is_object_store() => breaker.record_failure(e).await,
            Err(_) => {}
            Ok(_) => breaker.record_success(),
        }
        result
    }

    async fn archive_unguarded(&self, build_id: i64) -> Result<ArchiveOutcome, ArchiveError> {
        let build = self
            .meta
            .build(build_id)
            .await?
            .ok_or(MetadataError::NoBuild(build_id))?;
        if !build.status.is_finished() {
            return Err(ArchiveError::NotFinished(build_id));
        }
        // `archived_at` is set with the artifact, in one transaction, and outlives it: an
        // archived build without an artifact is one whose archive expired. It is read before
        // the artifact, so an archive committed between the two reads (a concurrent run) is
        // seen as archived, never as expired.
        let metadata = self.meta.trace_metadata(build_id).await?;
        let archived_before = metadata
            .as_ref()
            .is_some_and(|m| m.archived_at_ms.is_some());
        if let Some(artifact) = self.meta.trace_artifact(build_id).await? {
            self.delete_chunks(build_id).await?;
            return Ok(ArchiveOutcome::AlreadyArchived(artifact));
        }
        if archived_before {
            self.delete_chunks(build_id).await?;
            return Ok(ArchiveOutcome::Expired);
        }
        self.meta
            .increment_archival_attempts(build_id, self.clock.now_ms())
            .await?;
        let live_length = self.live.length(build_id).await?;
        let rows = self.meta.chunks(build_id).await?;
        // The live length, unless chunks that left the live store reach further: Redis's
        // length key lives 7 days from the last PATCH, and an archive waiting out a longer
        // outage (or found by recovery) must not take a lost key for an empty log.
        let length = rows
            .iter()
            .filter(|r| r.crc32.is_some())
            .map(|r| r.chunk_index * CHUNK_SIZE + r.size)
            .fold(live_length, u64::max);
        // Another run may have archived the log since the check above, and deleted its chunks
        // and live length: what is left must not replace its object. (If it archives from
        // here on, it deletes nothing before this run has read the length and the rows; a
        // chunk deleted under this run is then missing, and this run raises.)
        if let Some(artifact) = self.meta.trace_artifact(build_id).await? {
            self.delete_chunks(build_id).await?;
            return Ok(ArchiveOutcome::AlreadyArchived(artifact));
        }
        let path = archive_path(
            build_id,
            build.finished_at_ms.unwrap_or_else(|| self.clock.now_ms()),
        );
        let mut upload = MultipartWriter::start(self.objects.as_ref(), &path).await?;
        let mut crc = crc32fast::Hasher::new();
        let mut sha = Sha256::new();
        let mut lines = LineIndex::new();
        let mut expected = Vec::new();
        let mut lost_bytes = 0;
        // Chunks are read a few ahead of the upload (on S3 each is a request of its own), in
        // order; memory stays a few chunks whatever the log's size.
        let rows = &rows;
        let reads = futures::stream::iter(0..length.div_ceil(CHUNK_SIZE))
            .map(|index| self.chunk_bytes(build_id, index, rows))
            .buffered(READ_AHEAD);
        futures::pin_mut!(reads);
        let mut index = 0;
        while let Some(read) = reads.next().await {
            let (bytes, row_crc) = match read {
                Ok(Some(read)) => read,
                Ok(None) => {
                    // Not where the rows were, nor where they are now: archived (or expired)
                    // by another run, or lost for good.
                    if let Some(outcome) = self.archived_meanwhile(build_id).await? {
                        let _ = upload.abort().await;
                        return Ok(outcome);
                    }
                    let lost = CHUNK_SIZE.min(length - index * CHUNK_SIZE);
                    lost_bytes += lost;
                    tracing::warn!(
                        build_id,
                        chunk = index,
                        lost,
                        "chunk lost for good; archiving the log with a gap marker"
                    );
                    (lost_chunk_marker(index, lost).into_bytes(), None)
                }
                Err(e) => {
                    abort(upload, build_id).await;
                    return Err(e);
                }
            };
            index += 1;
            crc.update(&bytes);
            sha.update(&bytes);
            lines.feed(&bytes);
            expected.push((
                row_crc.unwrap_or_else(|| crc32fast::hash(&bytes)),
                bytes.len() as u64,
            ));
            if let Err(e) = upload.write(bytes).await {
                abort(upload, build_id).await;
                return Err(e.into());
            }
        }
        let size = upload.written();
        if lost_bytes > 0 {
            // A partial log must not replace an archive another run completed meanwhile.
            if let Some(outcome) = self.archived_meanwhile(build_id).await? {
                let _ = upload.abort().await;
                return Ok(outcome);
            }
        }
        upload.finish().await?;
        let archived = crc.finalize();
        let chunks = combine_crc32(expected);
        if archived != chunks {
            tracing::error!(
                build_id,
                archived,
                chunks,
                "archive CRC32 differs from the chunks'; nothing recorded"
            );
            return Err(ArchiveError::Corrupt {
                build: build_id,
                archived,
                chunks,
            });
        }
        if metadata.as_ref().is_none_or(|m| m.checksum_valid.is_none()) {
            self.check_runner_checksum(build_id, archived).await?;
        }
        if lost_bytes > 0 || metadata.as_ref().is_some_and(|m| m.lost_bytes > 0) {
            // Before the archive is recorded: a crash in between leaves a trace marked partial
            // and not archived, which the retry archives (and marks) again, with what it
            // finds then.
            self.meta.record_lost_bytes(build_id, lost_bytes).await?;
        }
        lines.finish();
        if let Err(e) =
            archived_lines::store(self.objects.as_ref(), &path, size, archived, lines).await
        {
            tracing::warn!(build_id, error = %e, "storing the archive's line index; readers will scan the log");
        }
        let sha256: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let now = self.clock.now_ms();
        let expire_at_ms = self
            .expire_in
            .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        let artifact = self
            .meta
            .record_archive(
                &NewArtifact {
                    build_id,
                    object_path: path.to_string(),
                    size,
                    crc32: archived,
                    sha256,
                    expire_at_ms,
                },
                now,
            )
            .await?;
        self.delete_chunks(build_id).await?;
        metrics::counter!("buildlogs_traces_archived_total").increment(1);
        if lost_bytes > 0 {
            metrics::counter!("buildlogs_traces_partial_total").increment(1);
            tracing::warn!(
                build_id,
                lost_bytes,
                "partial trace archived (bytes lost before the archive)"
            );
        }
        Ok(ArchiveOutcome::Archived(artifact))
    }

    /// The final PUT validates the runner's CRC32 when every chunk is flushed; a state committed
    /// at the accept timeout (chunks still live) was not, so the archive does it, against the
    /// whole log. A mismatch is recorded (flag, metric, log line), never fatal.
    async fn check_runner_checksum(&self, build_id: i64, ours: u32) -> Result<(), ArchiveError> {
        let Some(theirs) = self
            .meta
            .pending_state(build_id)
            .await?
            .and_then(|p| p.trace_checksum)
        else {
            return Ok(());
        };
        let valid = theirs == ours;
        if !valid {
            tracing::warn!(build_id, ours = %format_crc32(ours), theirs = %format_crc32(theirs), "trace checksum mismatch (found by the archive)");
            metrics::counter!("buildlogs_trace_checksum_mismatches_total").increment(1);
        }
        self.meta
            .record_checksums(build_id, ours, Some(theirs), Some(valid))
            .await?;
        Ok(())
    }

    /// What another run made of the build while this one streamed it: archived
    /// (`AlreadyArchived`) or archived and expired since (`Expired`); `None`: neither.
    async fn archived_meanwhile(
        &self,
        build_id: i64,
    ) -> Result<Option<ArchiveOutcome>, ArchiveError> {
        // `archived_at` first, as in `archive_unguarded`: an archive committed between the two
        // reads is seen as archived, never as expired.
        let archived_at = self
            .meta
            .trace_metadata(build_id)
            .await?
            .and_then(|m| m.archived_at_ms);
        if let Some(artifact) = self.meta.trace_artifact(build_id).await? {
            return Ok(Some(ArchiveOutcome::AlreadyArchived(artifact)));
        }
        Ok(archived_at.map(|_| ArchiveOutcome::Expired))
    }

    /// Chunk `index` where `rows` place it (or, if a flush moved it meanwhile, where they
    /// place it when read again), with its row's CRC32 if flushed; `None` if it is in neither
    /// place.
    async fn chunk_bytes(
        &self,
        build_id: i64,
        index: u64,
        rows: &[ChunkRow],
    ) -> Result<Option<(Vec<u8>, Option<u32>)>, ArchiveError> {
        let source = ChunkSource {
            meta: self.meta.clone(),
            live: self.live.clone(),
            objects: self.objects.clone(),
        };
        let found = source.read_located(build_id, index, rows, 0, None).await?;
        Ok(found.map(|found| (found.bytes, found.crc32)))
    }

    async fn delete_chunks(&self, build_id: i64) -> Result<(), ArchiveError> {
        delete_chunk_copies(
            self.meta.as_ref(),
            self.live.as_ref(),
            self.objects.as_ref(),
            build_id,
        )
        .await
    }
}

/// Deletes every copy of an archived build's chunks: flushed objects, live bytes, rows (in that
/// order, so a crash leaves rows pointing at nothing rather than objects no row names). The
/// object of a chunk whose row is not `object` is deleted too: a flush that crashed after
/// writing it left it there (deleting a missing object is cheap and not an error). Safe to run
/// twice at once (the archive, and a flush that finds the build archived under it): each
/// deletes the objects of the rows it sees before deleting rows.
pub(crate) async fn delete_chunk_copies<E>(
    meta: &dyn ChunkRowStore,
    live: &dyn LiveChunkStore,
    store: &dyn ObjectStorage,
    build_id: i64,
) -> Result<(), E>
where
    E: From<MetadataError> + From<LiveStoreError> + From<object_store::Error>,
{
    for row in meta.chunks(build_id).await? {
        store.delete(&chunk_path(build_id, row.chunk_index)).await?;
    }
    live.delete_build(build_id).await?;
    meta.delete_chunks(build_id).await?;
    Ok(())
}
