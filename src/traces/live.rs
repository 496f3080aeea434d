//! The live chunk store: where a running job's log bytes land (GitLab's `redis` and `database`
//! chunk stores). Production: Redis, one Lua script per append. Embedded: the SQL database.
//!
//! Guarantees every implementation gives (checked by `tests/live_chunks_conformance.rs`):
//! 1. An append lands only if its offset equals the trace's current length; otherwise nothing
//!    is written and the current length is returned (the API answers 416 with it). So of two
//!    concurrent appends at one offset exactly one wins, and a retried append changes nothing.
//! 2. An append is atomic: all of its bytes land, across chunk boundaries, or none do.
//! 3. The length survives the deletion of flushed chunks (it is the trace's length, not the sum
//!    of what is still live).
//! 4. Bytes are kept exactly (any byte values, not only UTF-8).
//! 5. Once closed, a trace takes no more bytes, even after its live data is deleted
//!    ([`LiveChunkStore::delete_build`]), for at least [`CLOSED_AFTER_DELETE`].
//! 6. Nothing left behind: once `delete_build` ran (the log is archived), the store keeps
//!    nothing of the build but, at most, its closed flag, and only for [`CLOSED_AFTER_DELETE`]
//!    when it keeps it outside the build's own row (Redis).
//! 7. Every append that lands, and every `touch`, records the time (the store's clock) as the
//!    build's last activity, in the same write: `last_activity` reads it, exact after a touch
//!    and at most [`ACTIVITY_RESOLUTION`] behind the last append (a store may rewrite it only
//!    that often).
//!    The stuck-build sweep goes by it, so knowing "no PATCH or PUT for an hour" costs the
//!    append path no round trip.

use std::time::Duration;

use async_trait::async_trait;

use super::model::DataStore;

/// How long a trace stays closed after its live data was deleted (archived): the append path
/// trusts a "running" answer from the database for up to a minute (`RUNNING_CACHE_MS` in
/// `service.rs`) and relies on the closed flag to refuse appends to a finished build meanwhile.
/// Five minutes outlasts that cache, plus a request stalled between its check and its append,
/// with room to spare; after it nothing of the build is left in Redis.
pub const CLOSED_AFTER_DELETE: Duration = Duration::from_secs(5 * 60);

/// How far behind the last append a build's recorded activity may be: the Redis append script
/// rewrites its `at` key only once it is this old (a GET otherwise). A SET on every append
/// measured ~40% more Redis time in the script's body (a private redis-server, 64-byte appends:
/// 15.4 µs against 10.9 µs at best of 6); a GET and a SET once a minute measured the same as
/// none (10.4 µs). At 10 s a runner PATCHing every 3 s pays a SET on about one append in three
/// (not measured; by the figures above, roughly +13% of the script body on those builds). The
/// stuck-build sweep adds this lag to its timeout, so a build PATCHing more often than the
/// timeout is never taken for silent; 10 s keeps short timeouts (tests, the soak's 20 s) usable.
pub const ACTIVITY_RESOLUTION: Duration = Duration::from_secs(10);

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        /// The trace length after the append.
        length: u64,
        /// Chunks this append wrote the first bytes of (Redis writes no row for them: the
        /// flush does; the database store's row is the chunk itself).
        started: Vec<u64>,
        /// Chunks this append filled (to be flushed).
        filled: Vec<u64>,
        /// Someone tails the log ([`LiveChunkStore::watch`]): the runner should PATCH sooner.
        watched: bool,
    },
    /// The offset was not the current length; nothing written.
    Mismatch {
        length: u64,
        /// Full chunks in the refused range (`offset..offset + data.len()`, below `length`)
        /// that are still live. A runner resends a PATCH whose reply it did not get; when that
        /// append had landed and its flush enqueue failed, these chunks would otherwise wait
        /// in the live store until the final PUT: the caller enqueues their flushes again.
        unflushed: Vec<u64>,
    },
    /// The trace was closed (the job sent its final state); nothing written.
    Closed,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveStoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("live chunk store inconsistent for build {build}: {detail}")]
    Inconsistent { build: i64, detail: String },
}

#[async_trait]
pub trait LiveChunkStore: Send + Sync + 'static {
    /// Where it keeps bytes: `Redis`, or `Database` (the embedded stack's SQL store, whose
    /// chunks are their own rows). The store a chunk row created for a live chunk names.
    fn data_store(&self) -> DataStore;

    /// Appends `data` at trace offset `offset` if that is the current length.
    async fn append(
        &self,
        build: i64,
        offset: u64,
        data: &[u8],
    ) -> Result<AppendOutcome, LiveStoreError>;

    /// The trace's current length (0 for a build never written).
    async fn length(&self, build: i64) -> Result<u64, LiveStoreError>;

    /// Refuses every later append (the final PUT, or the size limit). Idempotent.
    async fn close(&self, build: i64) -> Result<(), LiveStoreError>;

    /// A live chunk's bytes, `None` if it is not (or no longer) live.
    async fn read_chunk(
        &self,
        build: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, LiveStoreError>;

    /// Drops a chunk's live copy once its row says where its bytes are now (flipped to the
    /// object store, or sealed in the database during an outage). Does nothing when there is
    /// none: a store whose live chunks are their rows (SQL) has no copy apart from a flipped or
    /// sealed row, and keeps a sealed row's bytes. Idempotent.
    async fn delete_chunk(&self, build: i64, chunk_index: u64) -> Result<(), LiveStoreError>;

    /// Drops everything live of a build, its length included (after archiving). It stays
    /// closed for at least [`CLOSED_AFTER_DELETE`] (closed now if it was not), then nothing of
    /// it is left. Idempotent.
    async fn delete_build(&self, build: i64) -> Result<(), LiveStoreError>;

    /// Records activity of a running build without bytes (the runner's keep-alive PUT with
    /// `state=running`): its last activity becomes now.
    async fn touch(&self, build: i64) -> Result<(), LiveStoreError>;

    /// Each build's last activity (ms, the store's clock: its last append or touch), `None` if
    /// this store has none (never written, or its keys are gone), in the order of `builds`.
    async fn last_activity(&self, builds: &[i64]) -> Result<Vec<Option<i64>>, LiveStoreError>;

    /// Marks the log as tailed for `ttl` from now: appends report `watched` until then.
    async fn watch(&self, build: i64, ttl: Duration) -> Result<(), LiveStoreError>;
}
