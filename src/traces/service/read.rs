//! Reading a log for the API: opened wherever its chunks are, a byte range in one buffer, the
//! archive's stored line index, a tail's position.

use super::{TraceError, TraceService};
use crate::traces::archived_lines;
use crate::traces::chunk_source::ChunkSource;
use crate::traces::line_index::LineIndex;
use crate::traces::model::{Artifact, BuildStatus};
use crate::traces::read::TraceRead;

impl TraceService {
    /// The log opened for reading: its length and location, from metadata only (no byte is
    /// read until [`TraceRead::frames`] are asked for).
    pub async fn open_read(&self, build_id: i64) -> Result<TraceRead, TraceError> {
        TraceRead::open(self.chunk_source(), self.breaker.clone(), build_id).await
    }

    /// The bytes of `[from, to)` of the log (clamped to its length), in one buffer,
    /// byte-identical wherever they are: for short reads (the trace stream's events); whole
    /// logs go out as [`TraceRead::frames`].
    pub async fn read(&self, build_id: i64, from: u64, to: u64) -> Result<Vec<u8>, TraceError> {
        self.open_read(build_id)
            .await?
            .frames(from, to)
            .collect()
            .await
    }

    /// The line index stored with an archive, if it has a valid one (see [`archived_lines`]):
    /// one small object read.
    pub async fn archived_line_index(&self, artifact: &Artifact) -> Option<LineIndex> {
        archived_lines::load(self.objects.as_ref(), artifact).await
    }

    fn chunk_source(&self) -> ChunkSource {
        ChunkSource {
            meta: self.meta.clone(),
            live: self.live.clone(),
            objects: self.objects.clone(),
        }
    }

    /// A tailing reader's view of a log (`GET …/trace/stream`): the build's status and the log's
    /// length, `None` for no such build. Reads are ordered so the answer is never wrong while
    /// an archive deletes the live copy: the live length first, then the status (a build seen
    /// running was not archived before that length was read); a finished build's length is
    /// read after its status (so it is final: the trace was closed before the status was
    /// committed), live first, then the artifact (none yet: the live length was not deleted).
    /// Cost: 2 round trips (live store, SQL) while running, 4 once finished.
    pub async fn tail_position(
        &self,
        build_id: i64,
    ) -> Result<Option<(BuildStatus, u64)>, TraceError> {
        let live = self.live.length(build_id).await?;
        let Some(build) = self.meta.build(build_id).await? else {
            return Ok(None);
        };
        if !build.status.is_finished() {
            return Ok(Some((build.status, live)));
        }
        let live = self.live.length(build_id).await?;
        let length = match self.meta.trace_artifact(build_id).await? {
            Some(artifact) => artifact.size,
            None => live,
        };
        Ok(Some((build.status, length)))
    }
}
