//! Flushing a chunk: moving its bytes from the live store to the object store (GitLab's
//! `persist_data!`).
//!
//! Order, so that a crash at any step loses nothing and a rerun finishes the job:
//! 1. read the chunk row (its store and `lock_version`) and the live bytes; a live Redis chunk
//!    has no row yet: create it at `lock_version` 0, unless the live chunk is gone (archived);
//! 2. write `chunks/<build_id>/<index>.log` (a deterministic key: a rerun overwrites it);
//! 3. flip the row to `object` with its size and CRC32, only if `lock_version` is unchanged
//!    (two flushes, or a flush racing a late append, cannot both win; the loser finds the chunk
//!    flushed, or its row gone with the archive and then deletes the object it wrote);
//! 4. delete the live copy last.
//!
//! Racing the archive leaves nothing behind: a flush that finds the live chunk gone after the
//! log was archived deletes what it saw or created (a row it made after the archive deleted
//! the rows), and one whose flip finds the row gone deletes the object it wrote.
//!
//! While the object store's circuit breaker is open, step 2 is skipped and step 3 flips the
//! row to `database` with the bytes in it instead: the live copy still goes, so Redis memory
//! stays bounded through an outage, and the archive later moves the bytes on.
//!
//! A chunk is flushable when full, or when the job has finished (its last, partial chunk).
//! Readers find a chunk by its row, so between 3 and 4 they read the object, never a hole.

use std::sync::Arc;

use object_store::path::Path;

use super::breaker::ObjectStoreBreaker;
use super::chunk::CHUNK_SIZE;
use super::live::{LiveChunkStore, LiveStoreError};
use super::metadata::{ChunkFlip, MetadataError, MetadataStore};
use super::model::{ChunkRow, DataStore};
use super::objects::ObjectStorage;
use super::stores::TraceStores;
use crate::jobs::Clock;

#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("live chunk store: {0}")]
    Live(#[from] LiveStoreError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    /// Another writer changed the chunk between read and flip: try again.
    #[error("chunk {index} of build {build} changed during the flush")]
    Raced { build: i64, index: u64 },
}

/// What a flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    Flushed {
        size: u64,
        crc32: u32,
    },
    /// Already in the object store, or in the database during an outage (a repeated flush);
    /// any leftover live copy was dropped.
    AlreadyFlushed,
    /// The object store is down (breaker open): the chunk went to the database instead.
    FlushedToDatabase {
        size: u64,
        crc32: u32,
    },
    /// Partial chunk of a running job: it will be flushed when full or when the job ends.
    NotYet,
    /// No such chunk.
    Missing,
}

/// Where a flushed chunk lives in the object store.
pub fn chunk_path(build_id: i64, index: u64) -> Path {
    Path::from(format!("chunks/{build_id}/{index}.log"))
}

pub struct FlushService {
    meta: Arc<dyn MetadataStore>,
    live: Arc<dyn LiveChunkStore>,
    objects: Arc<dyn ObjectStorage>,
    clock: Arc<dyn Clock>,
    breaker: Option<Arc<ObjectStoreBreaker>>,
}

impl FlushService {
    pub fn new(stores: TraceStores) -> Self {
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
            clock,
            breaker: None,
        }
    }

    /// Flushes to the database while `breaker` is open, and tells it how the store answers.
    pub fn with_breaker(mut self, breaker: Arc<ObjectStoreBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    pub async fn flush(&self, build_id: i64, index: u64) -> Result<FlushOutcome, FlushError> {
        let Some(build) = self.meta.build(build_id).await? else {
            return Ok(FlushOutcome::Missing);
        };
        let mut row = self
            .meta
            .chunks(build_id)
            .await?
            .into_iter()
            .find(|r| r.chunk_index == index);
        if row.is_none() {
            // A live chunk without a row (Redis appends write none; a SQL store's chunks are
            // their rows): create it at lock_version 0, unless there is no live chunk either
            // (the log was archived: rows and live bytes deleted; a row would outlive it).
            if self.live.read_chunk(build_id, index).await?.is_none() {
                return Ok(FlushOutcome::Missing);
            }
            self.meta
                .ensure_chunks(
                    build_id,
                    &[index],
                    self.live.data_store(),
                    self.clock.now_ms(),
                )
                .await?;
            row = self
                .meta
                .chunks(build_id)
                .await?
                .into_iter()
                .find(|r| r.chunk_index == index);
        }
        let Some(row) = row else {
            return Ok(FlushOutcome::Missing);
        };
        if row.data_store == DataStore::Object
            || (row.data_store == DataStore::Database && row.crc32.is_some())
        {
            // In the object store, or sealed in the database during an outage (the archive
            // moves it on). A flush that crashed between its flip and deleting the live copy
            // left that copy behind: drop it (Redis memory stays bounded while the store is
            // down).
            self.live.delete_chunk(build_id, index).await?;
            return Ok(FlushOutcome::AlreadyFlushed);
        }
        let Some(data) = self.live.read_chunk(build_id, index).await? else {
            return self.gone(build_id).await;
        };
        if (data.len() as u64) < CHUNK_SIZE
            && !build.status.is_finished()
            && self.meta.pending_state(build_id).await?.is_none()
        {
            return Ok(FlushOutcome::NotYet);
        }
        let crc32 = crc32fast::hash(&data);
        let size = data.len() as u64;
        if let Some(breaker) = &self.breaker
            && breaker.is_open().await
        {
            return self.flush_to_database(&row, data, crc32).await;
        }
        let put = self
            .objects
            .put(&chunk_path(build_id, index), data.into())
            .await;
        if let Some(breaker) = &self.breaker {
            match &put {
                Ok(_) => breaker.record_success(),
                Err(e) => breaker.record_failure(e).await,
            }
        }
        put?;
        let flip = ChunkFlip {
            build_id,
            chunk_index: index,
            expected_lock_version: row.lock_version,
            to: DataStore::Object,
            size,
            crc32,
            raw_data: None,
        };
        if !self.meta.flip_chunk(&flip, self.clock.now_ms()).await? {
            return self.lost_flip(build_id, index).await;
        }
        self.live.delete_chunk(build_id, index).await?;
        metrics::counter!("buildlogs_trace_chunks_flushed_total").increment(1);
        Ok(FlushOutcome::Flushed { size, crc32 })
    }

    /// The live chunk is gone while its row says it is live. If the log was archived meanwhile
    /// (it read the chunk, then deleted the rows, live bytes and objects after this flush read
    /// the rows, or before it created the row of a Redis chunk), what this flush saw or created
    /// is left over: delete it as the archive does. Otherwise (a live key lost) leave it.
    async fn gone(&self, build_id: i64) -> Result<FlushOutcome, FlushError> {
        let archived = self
            .meta
            .trace_metadata(build_id)
            .await?
            .is_some_and(|m| m.archived_at_ms.is_some());
        if archived {
            super::archive::delete_chunk_copies::<FlushError>(
                self.meta.as_ref(),
                self.live.as_ref(),
                self.objects.as_ref(),
                build_id,
            )
            .await?;
        }
        Ok(FlushOutcome::Missing)
    }

    /// After a flip that did not apply, from where the row is now:
    /// - flipped to the object store by another flush (which wrote the same bytes: a chunk
    ///   flushes when full or when its trace is closed, so it no longer changes): done;
    /// - gone: the log was archived while this flush wrote its object, which nothing names
    ///   any more: delete it;
    /// - still live at another `lock_version` (a late append): raced, the job retries.
    async fn lost_flip(&self, build_id: i64, index: u64) -> Result<FlushOutcome, FlushError> {
        let row = self
            .meta
            .chunks(build_id)
            .await?
            .into_iter()
            .find(|r| r.chunk_index == index);
        match row {
            Some(row) if row.data_store == DataStore::Object => {
                self.live.delete_chunk(build_id, index).await?;
                Ok(FlushOutcome::AlreadyFlushed)
            }
            None => {
                self.objects.delete(&chunk_path(build_id, index)).await?;
                Ok(FlushOutcome::Missing)
            }
            Some(_) => Err(FlushError::Raced {
                build: build_id,
                index,
            }),
        }
    }

    /// The outage path: the bytes into the chunk's row (`database`, with its CRC32), then the
    /// live copy deleted, as a flush to the object store would.
    async fn flush_to_database(
        &self,
        row: &ChunkRow,
        data: Vec<u8>,
        crc32: u32,
    ) -> Result<FlushOutcome, FlushError> {
        let (build_id, index) = (row.build_id, row.chunk_index);
        let size = data.len() as u64;
        let flip = ChunkFlip {
            build_id,
            chunk_index: index,
            expected_lock_version: row.lock_version,
            to: DataStore::Database,
            size,
            crc32,
            raw_data: Some(data),
        };
        if !self.meta.flip_chunk(&flip, self.clock.now_ms()).await? {
            return Err(FlushError::Raced {
                build: build_id,
                index,
            });
        }
        self.live.delete_chunk(build_id, index).await?;
        metrics::counter!("buildlogs_trace_chunks_flushed_to_database_total").increment(1);
        Ok(FlushOutcome::FlushedToDatabase { size, crc32 })
    }
}
