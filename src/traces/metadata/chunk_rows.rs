//! Chunk rows: where each chunk of a log is (live store, database or object store), its size
//! and CRC32 once flushed.
//!
//! Guarantees (checked by `tests/metadata_conformance/chunk_rows.rs`):
//! 1. `ensure_chunks` creates missing rows and leaves existing ones alone.
//! 2. `flip_chunk` applies only if the row's `lock_version` is still the one read (optimistic
//!    locking): two flushes of one chunk, or a flush racing an append, cannot both win.

use async_trait::async_trait;

use super::MetadataError;
use crate::traces::model::{ChunkRow, DataStore};

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

#[async_trait]
pub trait ChunkRowStore: Send + Sync + 'static {
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

    /// True if the flip applied (see guarantee 2).
    async fn flip_chunk(&self, flip: &ChunkFlip, now_ms: i64) -> Result<bool, MetadataError>;

    /// Deletes every chunk row of a build (after archiving); returns how many.
    async fn delete_chunks(&self, build_id: i64) -> Result<u64, MetadataError>;
}
