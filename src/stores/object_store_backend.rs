//! [`ObjectStorage`] over the `object_store` crate: the one implementation, for every store
//! `OBJECT_STORE_URL` can name (a local folder, S3 or an S3-compatible server; see
//! [`objects`](super::objects), which opens them).
//!
//! Each call is one request (a multipart upload: one per part, plus start and complete or
//! abort); timeouts and retries are the opened store's. A delete of a missing object succeeds,
//! as the trait promises (S3 says so itself; a local folder answers "not found").

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

use crate::traces::objects::{ObjectStorage, is_not_found};

/// An opened `object_store` store, as the domain's [`ObjectStorage`].
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
}

impl ObjectStoreBackend {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // object_store's Display names the store and its root or bucket, no secrets.
        write!(f, "ObjectStoreBackend({})", self.inner)
    }
}

#[async_trait]
impl ObjectStorage for ObjectStoreBackend {
    async fn put(&self, path: &Path, bytes: Bytes) -> object_store::Result<()> {
        self.inner
            .put(path, PutPayload::from(bytes))
            .await
            .map(drop)
    }

    async fn get(&self, path: &Path) -> object_store::Result<Bytes> {
        self.inner.get(path).await?.bytes().await
    }

    async fn get_range(&self, path: &Path, range: Range<u64>) -> object_store::Result<Bytes> {
        self.inner.get_range(path, range).await
    }

    async fn delete(&self, path: &Path) -> object_store::Result<()> {
        match self.inner.delete(path).await {
            Err(e) if is_not_found(&e) => Ok(()),
            other => other,
        }
    }

    async fn start_multipart(&self, path: &Path) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart(path).await
    }
}
