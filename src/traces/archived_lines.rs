//! An archive's line index, stored next to it (`<archive>.lines.json`), so the first reader of
//! an archived log gets its summary and any page of lines without scanning the whole log
//! first (from S3, scanning 100 MiB took seconds).
//!
//! Lifecycle: the archiver builds the index while it streams the log into the archive (no
//! extra read) and stores it after the archive's upload and before the archive is recorded;
//! artifact expiry deletes it with the archive. A retried archive writes both again at the
//! same paths.
//!
//! It is only ever a shortcut: an index that is missing, unreadable, of another format
//! version, or describing other bytes (size or CRC32 not the artifact's) is ignored and the
//! log is scanned as before.

use bytes::Bytes;
use object_store::path::Path;

use super::line_index::LineIndex;
use super::model::Artifact;
use super::objects::{ObjectStorage, is_not_found};

/// Bump when [`LineIndex`]'s stored form changes: older files are then ignored.
const FORMAT: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    format: u32,
    /// The archive this describes.
    size: u64,
    crc32: u32,
    index: LineIndex,
}

/// Where an archive's line index is kept.
pub fn path_for(archive: &Path) -> Path {
    Path::from(format!("{archive}.lines.json"))
}

/// Stores the index of the archive at `archive` (`size` bytes, CRC32 `crc32`).
pub async fn store(
    objects: &dyn ObjectStorage,
    archive: &Path,
    size: u64,
    crc32: u32,
    index: LineIndex,
) -> Result<(), object_store::Error> {
    let stored = Stored {
        format: FORMAT,
        size,
        crc32,
        index,
    };
    let json = serde_json::to_vec(&stored).map_err(|e| object_store::Error::Generic {
        store: "line index",
        source: Box::new(e),
    })?;
    objects.put(&path_for(archive), Bytes::from(json)).await?;
    Ok(())
}

/// The stored index of `artifact`'s archive, if there is a valid one. Errors reading it are
/// logged and mean "none": the caller scans the log instead.
pub async fn load(objects: &dyn ObjectStorage, artifact: &Artifact) -> Option<LineIndex> {
    let path = path_for(&Path::from(artifact.object_path.as_str()));
    let bytes = match objects.get(&path).await {
        Ok(bytes) => bytes,
        Err(e) if is_not_found(&e) => return None,
        Err(e) => {
            tracing::warn!(build_id = artifact.build_id, error = %e, "reading the archive's line index; scanning the log instead");
            return None;
        }
    };
    let stored: Stored = match serde_json::from_slice(&bytes) {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(build_id = artifact.build_id, error = %e, "unreadable archive line index; scanning the log instead");
            return None;
        }
    };
    let describes_it = stored.format == FORMAT
        && stored.size == artifact.size
        && stored.crc32 == artifact.crc32
        && stored.index.scanned() == artifact.size;
    describes_it.then_some(stored.index)
}

/// Deletes the index of the archive at `archive` (nothing if there is none).
pub async fn delete(
    objects: &dyn ObjectStorage,
    archive: &Path,
) -> Result<(), object_store::Error> {
    objects.delete(&path_for(archive)).await
}
