//! The metadata repository: builds, chunk rows, pending states, trace metadata and artifacts in
//! the SQL database (PostgreSQL in production, SQLite embedded). The database is the source of
//! truth for where every chunk is; Redis only holds bytes.
//!
//! One narrow trait per concern, each with the guarantees every implementation gives (checked
//! by `tests/metadata_conformance/`, one file per concern), so a service asks for what it uses:
//! - [`BuildStore`] (`builds.rs`): builds, their final state, the dashboard's builds list.
//! - [`ChunkRowStore`] (`chunk_rows.rs`): where each chunk of a log is; flips under optimistic
//!   locking.
//! - [`PendingStateStore`] (`pending_states.rs`): a runner's final PUT, held until committed.
//! - [`TraceMetadataStore`] (`trace_metadata.rs`): a log's checksums, lost bytes and archival
//!   attempts; the stale traces recovery archives.
//! - [`ArtifactRowStore`] (`artifacts.rs`): archived logs' rows, their expiry.
//! - [`CursorStore`] (`cursors.rs`): named positions of walks that resume across runs.
//! - [`LeaseStore`] (`leases.rs`): named exclusive leases that expire by themselves.
//! - [`BreakerStore`] (`breakers.rs`): circuit breaker states every process shares.
//! - [`StuckBuildStore`] (`stuck.rs`): running builds that went quiet, overdue final states.
//!
//! [`MetadataStore`] is all of them at once: one implementation per database implements every
//! trait and so is a `MetadataStore`; the bundle [`super::stores::TraceStores`] holds an
//! `Arc<dyn MetadataStore>`, which a service asking for one concern gets by upcasting
//! (`Arc<dyn MetadataStore>` coerces to `Arc<dyn BreakerStore>`).

mod artifacts;
mod breakers;
mod builds;
mod chunk_rows;
mod cursors;
mod leases;
mod pending_states;
mod stuck;
mod trace_metadata;

pub use artifacts::ArtifactRowStore;
pub use breakers::{BREAKER_HISTORY_KEPT, BreakerRecord, BreakerStore};
pub use builds::BuildStore;
pub use chunk_rows::{ChunkFlip, ChunkRowStore};
pub use cursors::CursorStore;
pub use leases::LeaseStore;
pub use pending_states::PendingStateStore;
pub use stuck::StuckBuildStore;
pub use trace_metadata::TraceMetadataStore;

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

/// Every concern at once: what the bundle of a process's stores holds, and what a service
/// using most of them (the flush, the archiver, the stuck-build sweep) asks for.
pub trait MetadataStore:
    BuildStore
    + ChunkRowStore
    + PendingStateStore
    + TraceMetadataStore
    + ArtifactRowStore
    + CursorStore
    + LeaseStore
    + BreakerStore
    + StuckBuildStore
{
}

impl<T> MetadataStore for T where
    T: BuildStore
        + ChunkRowStore
        + PendingStateStore
        + TraceMetadataStore
        + ArtifactRowStore
        + CursorStore
        + LeaseStore
        + BreakerStore
        + StuckBuildStore
{
}
