//! `CountingLive`: a real live chunk store, counted: how many lengths and chunks were read
//! through it (e.g. by every trace stream of a build).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use buildlogs::traces::live::{AppendOutcome, LiveChunkStore, LiveStoreError};

pub struct CountingLive {
    inner: Arc<dyn LiveChunkStore>,
    lengths: AtomicUsize,
    chunk_reads: AtomicUsize,
}

impl CountingLive {
    pub fn new(inner: Arc<dyn LiveChunkStore>) -> Self {
        Self {
            inner,
            lengths: AtomicUsize::new(0),
            chunk_reads: AtomicUsize::new(0),
        }
    }

    /// `length` calls so far.
    pub fn lengths(&self) -> usize {
        self.lengths.load(Ordering::SeqCst)
    }

    /// `read_chunk` calls so far.
    pub fn chunk_reads(&self) -> usize {
        self.chunk_reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LiveChunkStore for CountingLive {
    fn data_store(&self) -> buildlogs::traces::model::DataStore {
        self.inner.data_store()
    }

    async fn append(
        &self,
        build: i64,
        offset: u64,
        data: &[u8],
    ) -> Result<AppendOutcome, LiveStoreError> {
        self.inner.append(build, offset, data).await
    }

    async fn length(&self, build: i64) -> Result<u64, LiveStoreError> {
        self.lengths.fetch_add(1, Ordering::SeqCst);
        self.inner.length(build).await
    }

    async fn close(&self, build: i64) -> Result<(), LiveStoreError> {
        self.inner.close(build).await
    }

    async fn read_chunk(
        &self,
        build: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, LiveStoreError> {
        self.chunk_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_chunk(build, chunk_index).await
    }

    async fn delete_chunk(&self, build: i64, chunk_index: u64) -> Result<(), LiveStoreError> {
        self.inner.delete_chunk(build, chunk_index).await
    }

    async fn delete_build(&self, build: i64) -> Result<(), LiveStoreError> {
        self.inner.delete_build(build).await
    }

    async fn touch(&self, build: i64) -> Result<(), LiveStoreError> {
        self.inner.touch(build).await
    }

    async fn last_activity(&self, builds: &[i64]) -> Result<Vec<Option<i64>>, LiveStoreError> {
        self.inner.last_activity(builds).await
    }

    async fn watch(&self, build: i64, ttl: std::time::Duration) -> Result<(), LiveStoreError> {
        self.inner.watch(build, ttl).await
    }
}
