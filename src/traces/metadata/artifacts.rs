//! Artifact rows: the archived logs (`job_artifacts`, kind `trace`) and their expiry. The
//! bytes are in the object store; these rows say where, and until when.
//!
//! Guarantees (checked by `tests/metadata_conformance/artifacts.rs`):
//! 1. `record_archive` writes the artifact and the trace metadata in one transaction, once per
//!    build: a second call for an archived build returns the existing artifact.
//! 2. `expired_artifacts` lists only trace artifacts with an `expire_at` at or before the given
//!    time and not `locked`, in (expire_at, id) order; `delete_artifact` deletes one row (the
//!    trace metadata keeps `archived_at` and loses its artifact id), and is false if it was gone.

use async_trait::async_trait;

use super::MetadataError;
use crate::traces::model::{Artifact, NewArtifact};

#[async_trait]
pub trait ArtifactRowStore: Send + Sync + 'static {
    /// Artifact + trace metadata (artifact id, checksum, archived_at) in one transaction (see
    /// guarantee 1).
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
}
