//! Reading one chunk's bytes from wherever its row says they are: the live store, the
//! database (a chunk flushed there during an outage) or the object store. A chunk without a
//! row is live (Redis appends write no rows: such a chunk gets its row from its first flush).
//! Shared by readers and the archiver, so both find a chunk the same way, and follow it the
//! same way when a flush moves it under them ([`ChunkSource::read_located`]).

use std::sync::Arc;

use super::breaker::ObjectStoreBreaker;
use super::flush::chunk_path;
use super::live::{LiveChunkStore, LiveStoreError};
use super::metadata::{MetadataError, MetadataStore};
use super::model::{ChunkRow, DataStore};
use super::objects::{ObjectStorage, is_not_found};

#[derive(Debug, thiserror::Error)]
pub enum ChunkReadError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("live chunk store: {0}")]
    Live(#[from] LiveStoreError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    /// The chunk is in the object store and its circuit breaker is open (readers only).
    #[error("the object store is down")]
    ObjectStoreDown,
}

/// A chunk found: its bytes, its row's CRC32 (flushed chunks), and the rows read again when it
/// was not where the given rows placed it (a reader keeps them for its next chunk).
#[derive(Debug)]
pub struct LocatedChunk {
    pub bytes: Vec<u8>,
    pub crc32: Option<u32>,
    pub rows_read_again: Option<Vec<ChunkRow>>,
}

#[derive(Clone)]
pub struct ChunkSource {
    pub meta: Arc<dyn MetadataStore>,
    pub live: Arc<dyn LiveChunkStore>,
    pub objects: Arc<dyn ObjectStorage>,
}

impl ChunkSource {
    /// Chunk `index` where `rows` place it, at least `min_len` bytes of it; if it is not there
    /// (or shorter), the rows are read again once and it is read where they place it now: a
    /// flush moved it between the row read and the byte read (it flips the row, then deletes
    /// the live copy), even right after a fresh row read. `None`: in neither place (moved to
    /// an archive, or lost). With a `breaker` (readers), a chunk in the object store while the
    /// breaker is open is [`ChunkReadError::ObjectStoreDown`], without a request.
    pub async fn read_located(
        &self,
        build_id: i64,
        index: u64,
        rows: &[ChunkRow],
        min_len: usize,
        breaker: Option<&ObjectStoreBreaker>,
    ) -> Result<Option<LocatedChunk>, ChunkReadError> {
        if let Some(found) = self
            .read_whole(build_id, index, rows, min_len, breaker)
            .await?
        {
            return Ok(Some(found));
        }
        let fresh = self.meta.chunks(build_id).await?;
        let found = self
            .read_whole(build_id, index, &fresh, min_len, breaker)
            .await?;
        Ok(found.map(|found| LocatedChunk {
            rows_read_again: Some(fresh),
            ..found
        }))
    }

    async fn read_whole(
        &self,
        build_id: i64,
        index: u64,
        rows: &[ChunkRow],
        min_len: usize,
        breaker: Option<&ObjectStoreBreaker>,
    ) -> Result<Option<LocatedChunk>, ChunkReadError> {
        let row = rows.iter().find(|r| r.chunk_index == index);
        let in_objects = row.is_some_and(|r| r.data_store == DataStore::Object);
        if let Some(breaker) = breaker.filter(|_| in_objects)
            && breaker.is_open().await
        {
            return Err(ChunkReadError::ObjectStoreDown);
        }
        let bytes = self.read(build_id, index, rows).await?;
        Ok(bytes
            .filter(|bytes| bytes.len() >= min_len)
            .map(|bytes| LocatedChunk {
                bytes,
                crc32: row.and_then(|r| r.crc32),
                rows_read_again: None,
            }))
    }

    /// Chunk `index` of `build_id` as `rows` place it; `None` if it is not there (any more).
    pub async fn read(
        &self,
        build_id: i64,
        index: u64,
        rows: &[ChunkRow],
    ) -> Result<Option<Vec<u8>>, ChunkReadError> {
        let store = rows
            .iter()
            .find(|r| r.chunk_index == index)
            .map_or(self.live.data_store(), |r| r.data_store);
        Ok(match store {
            DataStore::Object => match self.objects.get(&chunk_path(build_id, index)).await {
                Ok(bytes) => Some(bytes.to_vec()),
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(e.into()),
            },
            DataStore::Database if self.live.data_store() != DataStore::Database => {
                self.meta.chunk_data(build_id, index).await?
            }
            _ => self.live.read_chunk(build_id, index).await?,
        })
    }
}
