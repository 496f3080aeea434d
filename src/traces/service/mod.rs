//! The trace service: what the runner API and readers do with a log, over the stores.
//!
//! Duties:
//! 1. `create_build`: register a job (`running`) with a fresh job token (returned once).
//! 2. `append`: authenticate the job token, refuse a job that is not running (403), enforce the
//!    size limit on an append at the current length of an open trace (the job fails with
//!    `trace_size_exceeded`), append at the exact offset (416 with the current length
//!    otherwise, whatever the size), and enqueue a flush of every chunk it filled. A refused
//!    append (416) enqueues again the flushes of the full chunks it covers that are still live:
//!    a runner resends a PATCH whose reply it lost, and that reply may have been the error of a
//!    failed flush enqueue after the bytes landed.
//! 3. `finish`: the runner's final PUT (close the trace, flush, validate the CRC32, commit,
//!    enqueue the archive; after the accept timeout, commit anyway), or its keep-alive PUT
//!    (`state=running`: records activity in the live store). `commit_pending`: the same
//!    commit for a pending state whose runner never came back (the stuck-build sweep).
//! 4. `open_read` / `read`: the whole log, or a byte range, byte-identical wherever each chunk
//!    is; `open_read` streams it a chunk at a time ([`super::read`]).
//!
//! One file a duty: `append.rs`, `finish.rs`, `read.rs`; this one holds the service, its
//! settings, job registration and tokens, and what the API asks about a build.
//!
//! Cost per PATCH on the production stack: one Redis script (the append, which also refuses a
//! closed trace), one SQL read of the build at most once a minute per build, and one enqueue
//! per 128 KiB chunk filled. No SQL write: a live chunk has no row until its flush.

mod append;
mod finish;
mod read;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::breaker::ObjectStoreBreaker;
use super::chunk_source::ChunkReadError;
use super::live::{LiveChunkStore, LiveStoreError};
use super::metadata::{MetadataError, MetadataStore};
use super::model::{Artifact, Build, BuildStatus, TraceMetadata};
use super::objects::ObjectStorage;
use super::stores::TraceStores;
use super::tokens;
use crate::jobs::{BrokerError, Clock, JobClient};

/// GitLab's default `ci_jobs_trace_size_limit`: 100 MiB.
pub const DEFAULT_MAX_TRACE_SIZE: u64 = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Unknown job or wrong token: the runner must stop (403, never 404).
    #[error("job not found or invalid job token")]
    Unauthorized,
    /// The job is no longer running (403 with its status).
    #[error("job is not running (status {0})")]
    NotRunning(BuildStatus),
    /// The append would pass the size limit; the job was failed (403).
    #[error("trace size limit of {limit} bytes exceeded")]
    TooLarge { limit: u64 },
    /// The offset is not the current length (416 with it).
    #[error("range mismatch: the trace is {length} bytes long")]
    RangeMismatch { length: u64 },
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("live chunk store: {0}")]
    Live(#[from] LiveStoreError),
    #[error("job queue: {0}")]
    Queue(#[from] BrokerError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    /// A read needs the object store (the bytes are only there) while its circuit breaker is
    /// open: try again later.
    #[error("the object store is down (circuit breaker open)")]
    ObjectStoreDown,
    /// The log's archive was deleted by artifact expiry (while it was being read).
    #[error("trace expired")]
    Expired,
    #[error(transparent)]
    ChunkRead(#[from] ChunkReadError),
}

/// A registered job and its token (shown once).
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub build: Build,
    pub token: String,
}

/// The runner's final `PUT` (or a touch, with `state = running`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishRequest {
    pub state: BuildStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// `output[checksum]` (or the legacy `checksum`), parsed from `crc32:%08x`.
    pub checksum: Option<u32>,
    pub bytesize: Option<u64>,
}

/// What the final PUT got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishOutcome {
    /// Live chunks are still being flushed: ask again after `backoff_s` (202).
    Accepted { backoff_s: u64 },
    /// The state is committed (200).
    Done { status: BuildStatus },
}

/// After this long in 202, the state is committed anyway and the log left to archiving
/// (GitLab's `ACCEPT_TIMEOUT`); `BUILDLOGS_ACCEPT_TIMEOUT` changes it
/// ([`TraceService::with_accept_timeout`]). The stuck-build sweep commits pending states older
/// than it whose runner never came back ([`super::stuck`]).
pub const DEFAULT_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// GitLab's runner backoff: 1 s for the first 3 s, then doubling (2, 4, … 64 s) with the
/// time since the pending state was stored.
pub fn finish_backoff_s(elapsed_ms: i64) -> u64 {
    let d = (elapsed_ms.max(0) / 1000) as u64;
    let slot = if d < 2 {
        0
    } else {
        (63 - d.leading_zeros() as u64).saturating_sub(1)
    };
    1 << slot.min(6)
}

/// A successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub length: u64,
    pub status: BuildStatus,
    /// Someone tails the log: the runner is told to PATCH every 3 s instead of every 60 s.
    pub watched: bool,
}

pub struct TraceService {
    meta: Arc<dyn MetadataStore>,
    live: Arc<dyn LiveChunkStore>,
    /// Flushed chunks (and, later, archives).
    objects: Arc<dyn ObjectStorage>,
    /// The object store's breaker, read (never tripped) by reads: while it is open, a read
    /// that needs the object store fails at once instead of waiting out its timeouts.
    breaker: Option<Arc<ObjectStoreBreaker>>,
    jobs: JobClient,
    clock: Arc<dyn Clock>,
    max_trace_size: u64,
    /// How long a final PUT is answered 202 while live chunks remain (ms).
    accept_timeout_ms: i64,
    /// Recently checked running builds: id → (token digest, checked at, ms). Saves the SQL read
    /// on almost every PATCH; a finished build is still refused by the live store's closed flag.
    running: Mutex<HashMap<i64, (String, i64)>>,
}

/// How long a "running" answer from the database is trusted for appends. Any length is safe:
/// a token never changes, and a build stops running only through the final PUT or the size
/// limit, which both close the live trace first, so the live store refuses the append. It only
/// bounds how stale the cache may be: one SQL read per build per minute on the PATCH path.
const RUNNING_CACHE_MS: i64 = 60_000;

// An archived build's trace must stay closed longer than a "running" answer is trusted.
const _: () = assert!(super::live::CLOSED_AFTER_DELETE.as_millis() > 2 * RUNNING_CACHE_MS as u128);

/// Entries kept at most (then the cache starts over): bounded memory with any number of jobs.
const RUNNING_CACHE_MAX: usize = 100_000;

impl TraceService {
    pub fn new(stores: TraceStores, jobs: JobClient) -> Self {
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
            breaker: None,
            jobs,
            clock,
            max_trace_size: DEFAULT_MAX_TRACE_SIZE,
            accept_timeout_ms: millis(DEFAULT_ACCEPT_TIMEOUT),
            running: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_max_trace_size(mut self, bytes: u64) -> Self {
        self.max_trace_size = bytes;
        self
    }

    /// How long a final PUT waits (202) for live chunks before its state is committed anyway.
    pub fn with_accept_timeout(mut self, timeout: Duration) -> Self {
        self.accept_timeout_ms = millis(timeout);
        self
    }

    /// Reads that need the object store fail fast ([`TraceError::ObjectStoreDown`]) while
    /// `breaker` is open. Reads only look at it: failures are counted by flushes and archives.
    pub fn with_breaker(mut self, breaker: Arc<ObjectStoreBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    pub async fn create_build(&self) -> Result<NewBuild, TraceError> {
        let token = tokens::generate();
        let build = self
            .meta
            .create_build(&tokens::digest(&token), self.clock.now_ms())
            .await?;
        Ok(NewBuild { build, token })
    }

    /// The build, if `token` is its job token.
    pub async fn authenticate(&self, build_id: i64, token: &str) -> Result<Build, TraceError> {
        match self.meta.build(build_id).await? {
            Some(build) if tokens::matches(token, &build.token_digest) => Ok(build),
            _ => Err(TraceError::Unauthorized),
        }
    }

    /// The append path's check: the token, and that the build is running (from the cache when
    /// the database said so less than `RUNNING_CACHE_MS` ago). The API calls it before it reads
    /// a PATCH's body, so a wrong token costs no body; [`Self::append`] checks again (a cache
    /// hit).
    pub async fn authenticate_running(&self, build_id: i64, token: &str) -> Result<(), TraceError> {
        let now = self.clock.now_ms();
        let cached = self
            .running
            .lock()
            .ok()
            .and_then(|c| c.get(&build_id).cloned());
        if let Some((digest, at)) = cached
            && now - at < RUNNING_CACHE_MS
        {
            return if tokens::matches(token, &digest) {
                Ok(())
            } else {
                Err(TraceError::Unauthorized)
            };
        }
        let build = self.authenticate(build_id, token).await?;
        if build.status != BuildStatus::Running {
            return Err(TraceError::NotRunning(build.status));
        }
        if let Ok(mut cache) = self.running.lock() {
            if cache.len() >= RUNNING_CACHE_MAX {
                cache.clear();
            }
            cache.insert(build_id, (build.token_digest, now));
        }
        Ok(())
    }

    pub async fn build(&self, build_id: i64) -> Result<Option<Build>, TraceError> {
        Ok(self.meta.build(build_id).await?)
    }

    /// The log's current length (the archive's size once archived).
    pub async fn length(&self, build_id: i64) -> Result<u64, TraceError> {
        if let Some(artifact) = self.meta.trace_artifact(build_id).await? {
            return Ok(artifact.size);
        }
        let live = self.live.length(build_id).await?;
        if live == 0
            && let Some(artifact) = self.meta.trace_artifact(build_id).await?
        {
            // Archived since the check above: the archive deleted the live length.
            return Ok(artifact.size);
        }
        Ok(live)
    }

    /// Where the log is: `live`, `flushing` (finished, chunks being moved), `archived`, or
    /// `expired` (archived, then deleted by artifact expiry).
    pub async fn trace_state(
        &self,
        build: &Build,
    ) -> Result<(&'static str, Option<Artifact>), TraceError> {
        if let Some(artifact) = self.meta.trace_artifact(build.id).await? {
            return Ok(("archived", Some(artifact)));
        }
        if build.status.is_finished() && self.expired(build.id).await? {
            return Ok(("expired", None));
        }
        Ok((
            if build.status.is_finished() {
                "flushing"
            } else {
                "live"
            },
            None,
        ))
    }

    /// Whether the log was archived and the archive has expired since (artifact expiry deleted
    /// it): nothing is left to read. `archived_at` is written with the artifact, in one
    /// transaction, and outlives it; it is read first, so an archive completing meanwhile is
    /// seen as archived, never as expired.
    pub async fn expired(&self, build_id: i64) -> Result<bool, TraceError> {
        let archived = self
            .meta
            .trace_metadata(build_id)
            .await?
            .is_some_and(|m| m.archived_at_ms.is_some());
        Ok(archived && self.meta.trace_artifact(build_id).await?.is_none())
    }

    pub async fn trace_metadata(&self, build_id: i64) -> Result<Option<TraceMetadata>, TraceError> {
        Ok(self.meta.trace_metadata(build_id).await?)
    }

    /// A reader tails the log (the SSE stream): appends report it for the next `ttl`, so the
    /// runner PATCHes more often. The stream renews it while it is open.
    pub async fn watch(&self, build_id: i64, ttl: std::time::Duration) -> Result<(), TraceError> {
        Ok(self.live.watch(build_id, ttl).await?)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finish_backoff_doubles_to_64_seconds() {
        let at = |s: i64| super::finish_backoff_s(s * 1000);
        assert_eq!(
            [
                at(0),
                at(1),
                at(2),
                at(3),
                at(4),
                at(8),
                at(16),
                at(64),
                at(128),
                at(10_000)
            ],
            [1, 1, 1, 1, 2, 4, 8, 32, 64, 64]
        );
    }
}
