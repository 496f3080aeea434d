//! Object storage that counts its requests, for benches that report them (`bench archive`).
//! Every call is one request: put, get, get range, delete, and for a multipart upload its
//! start, each part, and its completion or abort. The count is all it adds.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use buildlogs::traces::objects::ObjectStorage;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, PutPayload, PutResult, UploadPart};

/// `inner`, counting every request into a shared counter.
#[derive(Debug)]
pub struct CountedStorage {
    inner: Arc<dyn ObjectStorage>,
    requests: Arc<AtomicU64>,
}

impl CountedStorage {
    /// `inner` behind a counter: the storage to hand out, and the counter.
    pub fn wrap(inner: Arc<dyn ObjectStorage>) -> (Arc<dyn ObjectStorage>, Arc<AtomicU64>) {
        let requests = Arc::new(AtomicU64::new(0));
        let counted = Self {
            inner,
            requests: requests.clone(),
        };
        (Arc::new(counted), requests)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl ObjectStorage for CountedStorage {
    async fn put(&self, path: &Path, bytes: Bytes) -> object_store::Result<()> {
        self.count();
        self.inner.put(path, bytes).await
    }

    async fn get(&self, path: &Path) -> object_store::Result<Bytes> {
        self.count();
        self.inner.get(path).await
    }

    async fn get_range(&self, path: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.count();
        self.inner.get_range(path, range).await
    }

    async fn delete(&self, path: &Path) -> object_store::Result<()> {
        self.count();
        self.inner.delete(path).await
    }

    async fn start_multipart(&self, path: &Path) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.count();
        let inner = self.inner.start_multipart(path).await?;
        Ok(Box::new(CountedUpload {
            inner,
            requests: self.requests.clone(),
        }))
    }
}

#[derive(Debug)]
struct CountedUpload {
    inner: Box<dyn MultipartUpload>,
    requests: Arc<AtomicU64>,
}

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.abort().await
    }
}
