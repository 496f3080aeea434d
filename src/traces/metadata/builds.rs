//! Builds: a job registered `running`, its final state committed once, and the dashboard's
//! builds list.
//!
//! Guarantees (checked by `tests/metadata_conformance/builds.rs`):
//! 1. `finish_build` moves a build out of `running` once; later calls change nothing and return
//!    the build as it is (a repeated PUT is idempotent).
//! 2. `builds_page` lists builds by descending id below the given one, only those matching the
//!    filter, with the trace state `trace_state` gives (`archived`, `expired`, `flushing`,
//!    `live`).

use async_trait::async_trait;

use super::MetadataError;
use crate::traces::model::{Build, BuildListFilter, BuildStatus, BuildSummary};

#[async_trait]
pub trait BuildStore: Send + Sync + 'static {
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
}
