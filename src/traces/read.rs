//! Reading a log as it streams out: one chunk (128 KiB) at a time, from wherever each chunk is
//! (live store, database, flushed chunk object, archive), so a reader costs one chunk of
//! memory whatever the log's size.
//!
//! Duties:
//! 1. [`TraceRead::open`] (through `TraceService::open_read`): the log's length and where it
//!    is (archived, or in chunks), from metadata alone: no log byte is read (a `HEAD` costs
//!    that and nothing more).
//! 2. [`TraceRead::frames`]: bytes `[from, to)` as [`TraceFrames`], each frame read only when
//!    asked for: a chunk from where its row places it ([`ChunkSource`], as the archiver finds
//!    it), or a slice of a ranged GET of the archive object ([`ARCHIVE_READ_SIZE`] a request,
//!    never the whole object). A frame never spans two chunks, so it is at most [`CHUNK_SIZE`]
//!    bytes.
//! 3. Follow the log while it moves under the reader: the chunk rows are read once, at the
//!    first frame, and again only when a chunk is not where they said (a flush moved it: the
//!    live copy goes only after the row flipped); a chunk found nowhere, or unreadable, while
//!    an archive now exists means the archive completed (and deleted the chunks) mid-read: the
//!    rest is read from the archive, at the same offset. The archive holds the same bytes, so
//!    the result is byte-identical across the move.
//!
//! Guarantees:
//! - Memory: one chunk per reader, or one archive read ([`ARCHIVE_READ_SIZE`]; a server-side
//!   scan [`SCAN_READ_SIZE`]), plus the build's chunk rows (about a hundred bytes each).
//! - Never short: a frame that cannot be read whole is an error, never fewer bytes; the caller
//!   (the HTTP edge) ends its body with that error, so a client sees a truncated transfer.
//! - A frame that needs the object store while its circuit breaker is open fails at once with
//!   [`TraceError::ObjectStoreDown`] (the bytes are only there), instead of waiting out the
//!   store's timeouts; any other object store error is [`TraceError::Objects`].
//! - An archive deleted by artifact expiry under the reader is [`TraceError::Expired`].

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use super::breaker::ObjectStoreBreaker;
use super::chunk::CHUNK_SIZE;
use super::chunk_source::{ChunkReadError, ChunkSource};
use super::live::LiveStoreError;
use super::model::{Artifact, ChunkRow};
use super::objects::is_not_found;
use super::service::TraceError;

/// Bytes of an archive fetched by one ranged GET, then handed out a chunk at a time: S3 takes
/// tens of milliseconds to a first byte, so small requests cap a reader's MB/s, while large
/// ones are buffered whole (by the HTTP client, as they arrive) once per reader. `bench reads`,
/// 20 readers of a 100 MiB archive on s3s-fs: one chunk a request 75 MB/s at a web peak RSS of
/// 64 MB; two chunks 122 MB/s at 88 MB; four 155 MB/s at 119 MB; eight 238 MB/s at 149 MB.
/// Two keep the web under 100 MB with 20 readers.
pub const ARCHIVE_READ_SIZE: u64 = 2 * CHUNK_SIZE;

/// The same for a scan of a whole log on the server (the log page's line index and search),
/// where a request's latency, not memory, is the limit: `bench logpage` on s3s-fs, a search
/// through a 100 MiB archive took 12.3 s two chunks a request.
pub const SCAN_READ_SIZE: u64 = 32 * CHUNK_SIZE;

/// Where the log's bytes are, as far as the reader knows.
#[derive(Debug, Clone)]
enum Location {
    Archive(Artifact),
    Chunks,
}

/// An opened log: its length, and where to read it from. Cheap to open (metadata only).
pub struct TraceRead {
    source: ChunkSource,
    breaker: Option<Arc<ObjectStoreBreaker>>,
    build_id: i64,
    len: u64,
    location: Location,
}

impl TraceRead {
    /// The log's current length and location: the archive's, or the live length (then an
    /// archive completing meanwhile, which deletes the live length, is seen on a second look).
    pub(super) async fn open(
        source: ChunkSource,
        breaker: Option<Arc<ObjectStoreBreaker>>,
        build_id: i64,
    ) -> Result<Self, TraceError> {
        let archived = |artifact: Artifact| Self {
            source: source.clone(),
            breaker: breaker.clone(),
            build_id,
            len: artifact.size,
            location: Location::Archive(artifact),
        };
        if let Some(artifact) = source.meta.trace_artifact(build_id).await? {
            return Ok(archived(artifact));
        }
        let len = source.live.length(build_id).await?;
        if len == 0
            && let Some(artifact) = source.meta.trace_artifact(build_id).await?
        {
            return Ok(archived(artifact));
        }
        Ok(Self {
            source: source.clone(),
            breaker: breaker.clone(),
            build_id,
            len,
            location: Location::Chunks,
        })
    }

    /// The log's length when opened (a live log may have grown since: it is read up to here).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The archive it reads from, if the log is archived.
    pub fn archive(&self) -> Option<&Artifact> {
        match &self.location {
            Location::Archive(artifact) => Some(artifact),
            Location::Chunks => None,
        }
    }

    /// Bytes `[from, to)`, `to` clamped to the length, as frames read one at a time.
    pub fn frames(self, from: u64, to: u64) -> TraceFrames {
        self.frames_reading(from, to, ARCHIVE_READ_SIZE)
    }

    /// [`Self::frames`] for a server-side scan of the log: archive bytes are fetched
    /// [`SCAN_READ_SIZE`] a request (so that much memory per scan).
    pub fn scan(self, from: u64, to: u64) -> TraceFrames {
        self.frames_reading(from, to, SCAN_READ_SIZE)
    }

    fn frames_reading(self, from: u64, to: u64, archive_read: u64) -> TraceFrames {
        let to = to.min(self.len);
        TraceFrames {
            pos: from.min(to),
            to,
            rows: None,
            fetched: None,
            archive_read,
            read: self,
        }
    }
}

/// The frames of one read, in order; see the module header.
pub struct TraceFrames {
    read: TraceRead,
    /// The next byte to read.
    pos: u64,
    to: u64,
    /// The build's chunk rows, read at the first chunk frame, again when one moved.
    rows: Option<Vec<ChunkRow>>,
    /// The last archive read: its first byte's offset and its bytes.
    fetched: Option<(u64, Bytes)>,
    /// Bytes of the archive fetched a request.
    archive_read: u64,
}

impl TraceFrames {
    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.to - self.pos
    }

    /// The next frame (at most [`CHUNK_SIZE`] bytes, never empty), `None` at the end.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, TraceError> {
        if self.pos >= self.to {
            return Ok(None);
        }
        let index = self.pos / CHUNK_SIZE;
        let end = self.to.min((index + 1) * CHUNK_SIZE);
        let frame = match self.read.location.clone() {
            Location::Archive(artifact) => self.archive_frame(&artifact, end).await?,
            Location::Chunks => match self.chunk_frame(index, end).await {
                Ok(Some(frame)) => frame,
                // Not where the rows say, even read again, or unreadable: moved to an archive
                // under us (it deletes the chunks after recording itself), or really lost.
                missing_or_failed => {
                    let Some(artifact) = self
                        .read
                        .source
                        .meta
                        .trace_artifact(self.read.build_id)
                        .await?
                    else {
                        return Err(missing_or_failed.err().unwrap_or_else(|| {
                            self.inconsistent(format!("chunk {index} is in no store"))
                        }));
                    };
                    let frame = self.archive_frame(&artifact, end).await?;
                    self.read.location = Location::Archive(artifact);
                    frame
                }
            },
        };
        self.pos = end;
        Ok(Some(frame))
    }

    /// The remaining frames as a stream (for an HTTP body); it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, TraceError>> + Send + 'static {
        futures::stream::try_unfold(self, |mut frames| async move {
            Ok(frames.next_frame().await?.map(|frame| (frame, frames)))
        })
    }

    /// Everything left, in one buffer (for short reads: the trace stream's events).
    pub async fn collect(mut self) -> Result<Vec<u8>, TraceError> {
        let mut out = Vec::with_capacity(self.remaining() as usize);
        while let Some(frame) = self.next_frame().await? {
            out.extend_from_slice(&frame);
        }
        Ok(out)
    }

    /// `[pos, end)` of chunk `index`, from where the rows place it (followed once if a flush
    /// moved it, see [`ChunkSource::read_located`]). `None`: not found.
    async fn chunk_frame(&mut self, index: u64, end: u64) -> Result<Option<Bytes>, TraceError> {
        let base = index * CHUNK_SIZE;
        let (lo, hi) = ((self.pos - base) as usize, (end - base) as usize);
        if self.rows.is_none() {
            self.rows = Some(self.read.source.meta.chunks(self.read.build_id).await?);
        }
        let rows = self.rows.as_deref().unwrap_or_default();
        let found = self
            .read
            .source
            .read_located(
                self.read.build_id,
                index,
                rows,
                hi,
                self.read.breaker.as_deref(),
            )
            .await
            .map_err(|e| match e {
                ChunkReadError::ObjectStoreDown => TraceError::ObjectStoreDown,
                e => e.into(),
            })?;
        Ok(found.map(|found| {
            if let Some(rows) = found.rows_read_again {
                self.rows = Some(rows);
            }
            Bytes::from(found.bytes).slice(lo..hi)
        }))
    }

    /// `[pos, end)` of the archive: a slice of the last archive read, or of a new one that
    /// starts at `pos` and ends on a chunk boundary (or at the read's end).
    async fn archive_frame(&mut self, artifact: &Artifact, end: u64) -> Result<Bytes, TraceError> {
        if let Some((start, bytes)) = &self.fetched
            && *start <= self.pos
            && end <= start + bytes.len() as u64
        {
            return Ok(bytes.slice((self.pos - start) as usize..(end - start) as usize));
        }
        self.fetched = None;
        let read_end = self
            .to
            .min((self.pos / CHUNK_SIZE) * CHUNK_SIZE + self.archive_read)
            .max(end);
        let bytes = self.archive_range(artifact, read_end).await?;
        let frame = bytes.slice(..(end - self.pos) as usize);
        self.fetched = Some((self.pos, bytes));
        Ok(frame)
    }

    /// `[pos, end)` of the archive object, in one request.
    async fn archive_range(&self, artifact: &Artifact, end: u64) -> Result<Bytes, TraceError> {
        self.objects_up().await?;
        let path = object_store::path::Path::from(artifact.object_path.as_str());
        let store = self.read.source.objects.as_ref();
        let bytes = match store.get_range(&path, self.pos..end).await {
            Ok(bytes) => bytes,
            Err(e) if is_not_found(&e) => {
                let meta = &self.read.source.meta;
                if meta.trace_artifact(self.read.build_id).await?.is_none() {
                    return Err(TraceError::Expired);
                }
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.len() as u64 != end - self.pos {
            return Err(self.inconsistent(format!(
                "the archive {} gave {} bytes at {}, {} expected",
                artifact.object_path,
                bytes.len(),
                self.pos,
                end - self.pos
            )));
        }
        Ok(bytes)
    }

    /// `Err(ObjectStoreDown)` while the object store's breaker is open.
    async fn objects_up(&self) -> Result<(), TraceError> {
        match &self.read.breaker {
            Some(breaker) if breaker.is_open().await => Err(TraceError::ObjectStoreDown),
            _ => Ok(()),
        }
    }

    fn inconsistent(&self, detail: String) -> TraceError {
        TraceError::Live(LiveStoreError::Inconsistent {
            build: self.read.build_id,
            detail,
        })
    }
}
