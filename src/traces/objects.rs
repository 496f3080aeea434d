//! The object storage seam: where flushed chunks and archived logs live, as the domain sees it.
//!
//! [`ObjectStorage`] is the domain's own trait with exactly what the flusher, archiver, readers,
//! expiry and the breaker's probe call: put, get, get a range, delete, and a multipart upload.
//! It lives here, next to the other seams ([`live`](super::live), [`metadata`](super::metadata)),
//! because the domain decides what it needs; `stores::object_store_backend` implements it over
//! the `object_store` crate (a local folder or S3, opened from `OBJECT_STORE_URL` by
//! `stores::objects`), and `stores::fault_injection` (feature `testing`) wraps it for tests.
//! Nothing in the product lists, copies, renames or stats objects: every key is derived from
//! metadata rows, so a wider trait would only be more to implement and to fake.
//!
//! Errors stay `object_store::Error`: the domain already tells "not found" ([`is_not_found`])
//! from a failing store, and the breaker and HTTP edge map the rest.
//!
//! Guarantees every implementation gives (checked by `tests/object_store_conformance.rs`):
//! 1. A `put` is atomic: readers see the old object or the whole new one, never a part.
//! 2. A multipart upload becomes visible only when it completes; aborted, it leaves nothing.
//! 3. Deleting a missing object succeeds: deletes get repeated by at-least-once jobs.
//! 4. Every operation is safe to repeat (same key, same bytes).
//!
//! [`MultipartWriter`] drives an upload's parts over any implementation, in bounded memory, and
//! aborts what it leaves unfinished, also when dropped.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, PutPayloadMut};
use tokio::task::JoinSet;

/// Parts of one multipart upload in flight at once: bounds its memory to about
/// `(MAX_PARTS_IN_FLIGHT + 1) × PART_SIZE` while still overlapping uploads with reading.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;

/// Size of a multipart part. S3's minimum for every part but the last is 5 MiB.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// Object storage as the domain uses it. Keys are relative (an implementation adds its own
/// prefix), built by the domain from metadata (`flush::chunk_path`, `archive::archive_path`).
#[async_trait]
pub trait ObjectStorage: fmt::Debug + Send + Sync {
    /// Writes `bytes` at `path` in one request, replacing what was there.
    async fn put(&self, path: &Path, bytes: Bytes) -> object_store::Result<()>;

    /// The whole object (`Err(object_store::Error::NotFound { .. })` if there is none).
    async fn get(&self, path: &Path) -> object_store::Result<Bytes>;

    /// Bytes `range` of the object. A range running past the end is cut at the end; one
    /// starting past it is an error.
    async fn get_range(&self, path: &Path, range: Range<u64>) -> object_store::Result<Bytes>;

    /// Deletes the object; one that is already gone counts as deleted.
    async fn delete(&self, path: &Path) -> object_store::Result<()>;

    /// Starts a multipart upload to `path` (one request on S3: CreateMultipartUpload). Use it
    /// through [`MultipartWriter`], which sizes the parts and never leaves an upload behind.
    async fn start_multipart(&self, path: &Path) -> object_store::Result<Box<dyn MultipartUpload>>;
}

/// Whether the error means "no such object" (as opposed to the store failing).
pub fn is_not_found(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::NotFound { .. })
}

/// A streaming upload of unknown length: [`write`](Self::write) chunks as they come, then
/// [`finish`](Self::finish) (the object appears whole) or [`abort`](Self::abort) (nothing
/// appears; uploaded parts are discarded).
///
/// Memory stays bounded: at most [`MAX_PARTS_IN_FLIGHT`] parts of [`PART_SIZE`] are uploading
/// while the next one fills. Every part but the last is exactly [`PART_SIZE`] (some S3-compatible
/// stores require equal parts). After an error from `write`, call `abort`; a failed `finish`
/// aborts by itself.
///
/// Dropped before it finished or aborted — a job timeout or a cancelled task, also while
/// `finish` or `abort` is under way — it aborts the upload in the background, so no incomplete
/// upload stays stored (S3 keeps one, invisible but billed, until aborted; a local upload's
/// staging file). That is why the upload stays in `self` until the very end instead of moving
/// into object_store's `WriteMultipart`, whose `finish` cannot be aborted once it started. Only
/// a killed process leaves an upload behind: the bucket's lifecycle rule for incomplete
/// multipart uploads removes those.
pub struct MultipartWriter {
    /// `None` once finished or aborted.
    upload: Option<Box<dyn MultipartUpload>>,
    /// Parts being uploaded.
    parts: JoinSet<object_store::Result<()>>,
    /// The next part's bytes (less than [`PART_SIZE`]).
    buffer: PutPayloadMut,
    path: Path,
    written: u64,
}

impl MultipartWriter {
    /// Starts an upload to `path`.
    pub async fn start(store: &dyn ObjectStorage, path: &Path) -> object_store::Result<Self> {
        let upload = store.start_multipart(path).await?;
        Ok(Self {
            upload: Some(upload),
            parts: JoinSet::new(),
            buffer: PutPayloadMut::new(),
            path: path.clone(),
            written: 0,
        })
    }

    fn upload(&mut self) -> object_store::Result<&mut Box<dyn MultipartUpload>> {
        let path = &self.path;
        self.upload.as_mut().ok_or_else(|| ended(path))
    }

    /// Appends `chunk`; waits while [`MAX_PARTS_IN_FLIGHT`] parts are uploading. An error is a
    /// failed part upload: the upload cannot complete, so `abort` it.
    pub async fn write(&mut self, chunk: impl Into<Bytes>) -> object_store::Result<()> {
        let mut chunk: Bytes = chunk.into();
        self.upload()?;
        self.written += chunk.len() as u64;
        while !chunk.is_empty() {
            let room = PART_SIZE - self.buffer.content_length();
            self.buffer.push(chunk.split_to(room.min(chunk.len())));
            if self.buffer.content_length() == PART_SIZE {
                while self.parts.len() >= MAX_PARTS_IN_FLIGHT {
                    self.join_one().await?;
                }
                self.send_buffer()?;
            }
        }
        Ok(())
    }

    /// Starts uploading the buffered bytes as the next part.
    fn send_buffer(&mut self) -> object_store::Result<()> {
        let part = std::mem::take(&mut self.buffer).freeze();
        let upload = self.upload()?.put_part(part);
        self.parts.spawn(upload);
        Ok(())
    }

    /// Waits for one part upload to end; its error, if it failed.
    async fn join_one(&mut self) -> object_store::Result<()> {
        match self.parts.join_next().await {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(object_store::Error::Generic {
                store: "MultipartWriter",
                source: format!("a part upload to {} ended abnormally: {e}", self.path).into(),
            }),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The key being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Uploads what is buffered and completes the upload: the object is now at `path`, whole.
    /// On failure the upload is aborted (best effort) and nothing new is at `path`.
    pub async fn finish(mut self) -> object_store::Result<()> {
        match self.complete().await {
            Ok(()) => {
                self.upload = None;
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = self.abort_upload().await {
                    tracing::warn!(path = %self.path, error = %abort, "could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn complete(&mut self) -> object_store::Result<()> {
        if self.buffer.content_length() > 0 {
            self.send_buffer()?;
        }
        while !self.parts.is_empty() {
            self.join_one().await?;
        }
        self.upload()?.complete().await.map(drop)
    }

    /// Discards the upload and any parts already sent.
    pub async fn abort(mut self) -> object_store::Result<()> {
        self.abort_upload().await
    }

    /// Stops the parts, then aborts; the upload leaves `self` only once the abort answered (a
    /// cancelled abort is retried by `Drop`).
    async fn abort_upload(&mut self) -> object_store::Result<()> {
        self.parts.shutdown().await;
        let result = match self.upload.as_mut() {
            Some(upload) => upload.abort().await,
            None => Ok(()),
        };
        self.upload = None;
        result
    }
}

/// A call on a writer whose upload was finished or aborted (never happens: both take it).
fn ended(path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "MultipartWriter",
        source: format!("the upload to {path} already ended").into(),
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        let mut parts = std::mem::take(&mut self.parts);
        let path = self.path.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    // Parts first: one still sending after the abort would be stored again.
                    parts.shutdown().await;
                    match upload.abort().await {
                        Ok(()) => tracing::debug!(%path, "dropped multipart upload aborted"),
                        Err(e) => {
                            tracing::warn!(%path, error = %e, "could not abort a dropped multipart upload")
                        }
                    }
                });
            }
            Err(_) => {
                tracing::warn!(%path, "multipart upload dropped outside a runtime; not aborted")
            }
        }
    }
}
