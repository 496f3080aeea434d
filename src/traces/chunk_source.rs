//! Reading one chunk's bytes from wherever its row says they are: the live store, the
//! database (a chunk flushed there during an outage) or the object store. A chunk without a
//! row is live (Redis appends write no rows: such a chunk gets its row from its first flush). Shared by readers and
//! the archiver, so both find a chunk the same way.

use std::sync::Arc;

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
}

#[derive(Clone)]
pub struct ChunkSource {
    pub meta: Arc<dyn MetadataStore>,
    pub live: Arc<dyn LiveChunkStore>,
    pub objects: Arc<dyn ObjectStorage>,
}

impl ChunkSource {
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
