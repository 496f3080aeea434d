//! Trace metadata: what is known of a build's log apart from its bytes (checksums, bytes lost
//! for good, archival attempts), and the stale traces recovery archives.
//!
//! Guarantees (checked by `tests/metadata_conformance/trace_metadata.rs`): every write creates
//! the row if needed (an unknown build is [`MetadataError::NoBuild`]); a log a checksum check
//! found wrong stays flagged (`invalid`) whatever later checks say; concurrent attempts are
//! all counted; lost bytes are set, not added.

use async_trait::async_trait;

use super::MetadataError;
use crate::traces::model::TraceMetadata;

#[async_trait]
pub trait TraceMetadataStore: Send + Sync + 'static {
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
}
