//! The metadata repository: builds, chunk rows, pending states, trace metadata and artifacts in
//! the SQL database (PostgreSQL in production, SQLite embedded). The database is the source of
//! truth for where every chunk is; Redis only holds bytes.
//!
//! Guarantees every implementation gives (checked by `tests/metadata_conformance.rs`):
//! 1. `finish_build` moves a build out of `running` once; later calls change nothing and return
//!    the build as it is (a repeated PUT is idempotent).
//! 2. `ensure_chunks` creates missing rows and leaves existing ones alone.
//! 3. `flip_chunk` applies only if the row's `lock_version` is still the one read (optimistic
//!    locking): two flushes of one chunk, or a flush racing an append, cannot both win.
//! 4. `record_archive` writes the artifact and the trace metadata in one transaction, once per
//!    build: a second call for an archived build returns the existing artifact.
//! 5. `expired_artifacts` lists only trace artifacts with an `expire_at` at or before the given
//!    time and not `locked`, in (expire_at, id) order; `delete_artifact` deletes one row (the
//!    trace metadata keeps `archived_at` and loses its artifact id), and is false if it was gone.
//! 6. `idle_running_builds` lists only `running` builds without a pending state whose
//!    `activity_at` is before the given time, in (activity_at, id) order after the given key;
//!    `overdue_pending_states` only `running` builds whose pending state is older than the
//!    given time, by id; `record_activity` only ever moves `activity_at` forward.
//! 7. `take_lease` is atomic: of any number of holders, at most one holds a name until its
//!    `expires_at` passes; the holder renews by taking again. `release_lease` frees it only for
//!    its holder.
//! 8. `builds_page` lists builds by descending id below the given one, only those matching the
//!    filter, with the trace state `trace_state` gives (`archived`, `expired`, `flushing`,
//!    `live`).

use async_trait::async_trait;

use super::model::{
    Artifact, Build, BuildListFilter, BuildStatus, BuildSummary, ChunkRow, DataStore, IdleBuild,
    NewArtifact, PendingState, TraceMetadata,
};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no build {0}")]
    NoBuild(i64),
    #[error("corrupt row for build {build}: {detail}")]
    Corrupt { build: i64, detail: String },
}

/// How a chunk's row changes when it is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFlip {
    pub build_id: i64,
    pub chunk_index: u64,
    /// The `lock_version` the flusher read; the flip applies only if it is still current.
    pub expected_lock_version: i64,
    pub to: DataStore,
    pub size: u64,
    pub crc32: u32,
    /// The bytes, when flipping to [`DataStore::Database`] (the outage fallback); `None` clears
    /// `raw_data`.
    pub raw_data: Option<Vec<u8>>,
}

/// What the stuck-build sweep ([`super::stuck`]) asks of the database, apart from the rest:
/// running builds that went quiet, and final states left pending. A supertrait of
/// [`MetadataStore`], so every metadata store has it and the sweep asks for only this.
#[async_trait]
pub trait StuckBuildStore: Send + Sync + 'static {
    /// Running builds without a pending final state whose `activity_at` is before
    /// `idle_before_ms`, after `after` = (activity_at, id) in that order, at most `limit`. An
    /// index range scan over running builds only (`builds_running_activity`).
    async fn idle_running_builds(
        &self,
        idle_before_ms: i64,
        after: (i64, i64),
        limit: u32,
    ) -> Result<Vec<IdleBuild>, MetadataError>;

    /// Running builds whose pending final state was stored before `created_before_ms` (the
    /// runner's PUT waited out the accept timeout and never came back), ids above `after_id`,
    /// ascending, at most `limit`. Costs a walk over running builds only.
    async fn overdue_pending_states(
        &self,
        created_before_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError>;

    /// Moves a build's `activity_at` forward to `at_ms` (never back).
    async fn record_activity(&self, build_id: i64, at_ms: i64) -> Result<(), MetadataError>;
}

#[async_trait]
pub trait MetadataStore: StuckBuildStore + Send + Sync + 'static {
    /// Registers a job in `running` state.
    async fn create_build(&self, token_digest: &str, now_ms: i64) -> Result<Build, MetadataError>;

    async fn build(&self, id: i64) -> Result<Option<Build>, MetadataError>;

    /// A page of the dashboard's builds list: builds matching `filter` with ids below
    /// `before_id`, newest (highest id) first, at most `limit`, each with its log's state.
    /// One index range scan of `limit` rows (the primary key, or the filter's partial index),
    /// however many builds there are.
    async fn builds_page(
        &self,
        filter: BuildListFilter,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<BuildSummary>, MetadataError>;

    /// Commits a final state once (see guarantee 1).
    async fn finish_build(
        &self,
        id: i64,
        status: BuildStatus,
        failure_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Build, MetadataError>;

    /// Creates missing chunk rows in `store`, leaving existing ones alone: a flush's first write
    /// for a live Redis chunk (size 0 until the flip).
    async fn ensure_chunks(
        &self,
        build_id: i64,
        indexes: &[u64],
        store: DataStore,
        now_ms: i64,
    ) -> Result<(), MetadataError>;

    /// A build's chunk rows in index order.
    async fn chunks(&self, build_id: i64) -> Result<Vec<ChunkRow>, MetadataError>;

    /// A flushed chunk's bytes held in the database (`data_store = database`).
    async fn chunk_data(
        &self,
        build_id: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, MetadataError>;

    /// True if the flip applied (see guarantee 3).
    async fn flip_chunk(&self, flip: &ChunkFlip, now_ms: i64) -> Result<bool, MetadataError>;

    /// Deletes every chunk row of a build (after archiving); returns how many.
    async fn delete_chunks(&self, build_id: i64) -> Result<u64, MetadataError>;

    /// Stores the runner's final PUT if none is stored; returns the stored one (the first).
    async fn upsert_pending_state(
        &self,
        state: &PendingState,
    ) -> Result<PendingState, MetadataError>;

    async fn pending_state(&self, build_id: i64) -> Result<Option<PendingState>, MetadataError>;

    async fn delete_pending_state(&self, build_id: i64) -> Result<(), MetadataError>;

    async fn trace_metadata(&self, build_id: i64) -> Result<Option<TraceMetadata>, MetadataError>;

    /// Records the checksum validation of the final PUT (creates the metadata row if needed).
    async fn record_checksums(
        &self,
        build_id: i64,
        ours: u32,
        remote: Option<u32>,
        valid: Option<bool>,
    ) -> Result<(), MetadataError>;

    /// Records how many bytes of the log were lost for good before its archive (0: none), in
    /// the build's trace metadata (created if needed). Set, not added: a rerun finds the same.
    async fn record_lost_bytes(&self, build_id: i64, lost_bytes: u64) -> Result<(), MetadataError>;

    /// Counts an archival attempt; returns the new count.
    async fn increment_archival_attempts(
        &self,
        build_id: i64,
        now_ms: i64,
    ) -> Result<u32, MetadataError>;

    /// Artifact + trace metadata (artifact id, checksum, archived_at) in one transaction.
    async fn record_archive(
        &self,
        artifact: &NewArtifact,
        now_ms: i64,
    ) -> Result<Artifact, MetadataError>;

    /// A build's trace artifact, if archived.
    async fn trace_artifact(&self, build_id: i64) -> Result<Option<Artifact>, MetadataError>;

    /// The trace artifact written last (highest id): its `expire_at` says whether the workers
    /// archive with an expiry (`BUILDLOGS_TRACE_EXPIRE_DAYS`) now. One primary key lookup.
    async fn newest_trace_artifact(&self) -> Result<Option<Artifact>, MetadataError>;

    /// Stale-trace recovery's batch: ids of finished builds whose log is not archived, finished
    /// before `finished_before_ms`, above `after_id`, with fewer than `gave_up_after` archival
    /// attempts (an archive that used them all is in the dead set: an operator re-runs or
    /// discards it, recovery does not); at most `limit`, ascending. Costs an index range scan
    /// over unarchived builds only, however many builds there are.
    async fn stale_traces(
        &self,
        after_id: i64,
        finished_before_ms: i64,
        gave_up_after: u32,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError>;

    /// A named cursor's position (`None` before its first [`Self::set_cursor`]).
    async fn cursor(&self, name: &str) -> Result<Option<i64>, MetadataError>;

    /// When a named cursor was last set (`None` before its first [`Self::set_cursor`]).
    async fn cursor_updated_at(&self, name: &str) -> Result<Option<i64>, MetadataError>;

    async fn set_cursor(&self, name: &str, position: i64, now_ms: i64)
    -> Result<(), MetadataError>;

    /// Artifact expiry's batch: trace artifacts expired at `now_ms` (`expire_at <= now_ms`) and
    /// not locked, oldest `expire_at` first (then id), at most `limit`. An index range scan
    /// over expirable artifacts only (neither the ones kept forever nor locked ones).
    async fn expired_artifacts(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Artifact>, MetadataError>;

    /// Deletes an artifact's row (its object must be deleted first); the build's trace metadata
    /// keeps `archived_at` and its `trace_artifact_id` becomes `None`. False if there was no row.
    async fn delete_artifact(&self, id: i64) -> Result<bool, MetadataError>;

    /// Takes lease `name` for `holder` until `expires_at_ms`, if it is free, expired at `now_ms`
    /// or already `holder`'s (then it is renewed). True if `holder` holds it now.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, MetadataError>;

    /// Frees lease `name` if `holder` holds it; true if it did.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, MetadataError>;

    /// A circuit breaker's shared state (`None`: never opened, so closed).
    async fn breaker(&self, name: &str) -> Result<Option<BreakerRecord>, MetadataError>;

    /// Stores a breaker's state; `changed_at_ms` moves only when the state changes, and each
    /// change is appended to the breaker's history once, however many processes report it
    /// (the newest [`BREAKER_HISTORY_KEPT`] changes are kept).
    async fn set_breaker(&self, record: &BreakerRecord) -> Result<(), MetadataError>;

    /// A breaker's changes, newest first, at most `limit`.
    async fn breaker_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<BreakerRecord>, MetadataError>;
}

/// Changes of a breaker's state kept in its history.
pub const BREAKER_HISTORY_KEPT: u32 = 100;

/// A circuit breaker's state as every process sees it (or, in its history, one change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRecord {
    pub name: String,
    pub open: bool,
    /// The error that opened it.
    pub reason: Option<String>,
    /// When it last opened or closed (in its history: when this change happened).
    pub changed_at_ms: i64,
}
