//! The build-log records (DESIGN §4), as the domain sees them. Times are ms since the epoch.

use std::fmt;
use std::str::FromStr;

/// A CI job's state. `running` until the runner's final PUT is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Running,
    Success,
    Failed,
    Canceled,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Running => "running",
            BuildStatus::Success => "success",
            BuildStatus::Failed => "failed",
            BuildStatus::Canceled => "canceled",
        }
    }

    pub fn is_finished(self) -> bool {
        self != BuildStatus::Running
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuildStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "running" => Ok(BuildStatus::Running),
            "success" => Ok(BuildStatus::Success),
            "failed" => Ok(BuildStatus::Failed),
            "canceled" => Ok(BuildStatus::Canceled),
            other => Err(format!(
                "unknown state {other:?} (expected running, success, failed or canceled)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub id: i64,
    /// SHA-256 of the job token, hex; the token itself is never stored.
    pub token_digest: String,
    pub status: BuildStatus,
    pub failure_reason: Option<String>,
    pub finished_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A running build the stuck-build sweep looks at: its last known activity (a PATCH or PUT)
/// as the database has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleBuild {
    pub id: i64,
    /// `builds.activity_at`: exact on the embedded stack; with Redis live chunks, as the sweep
    /// last copied it from the live store (the live store may know of later activity).
    pub activity_at_ms: i64,
    pub created_at_ms: i64,
}

/// Which builds the dashboard's builds list shows ([`super::metadata::BuildStore::builds_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildListFilter {
    All,
    Running,
    /// Every final state (success, failed, canceled).
    Finished,
    /// Logs that lost bytes before their archive (`lost_bytes > 0`).
    Partial,
    /// Logs whose runner checksum did not match ours (`checksum_valid = false`).
    Mismatch,
}

impl FromStr for BuildListFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Self::All),
            "running" => Ok(Self::Running),
            "finished" => Ok(Self::Finished),
            "partial" => Ok(Self::Partial),
            "mismatch" => Ok(Self::Mismatch),
            other => Err(format!(
                "expected running, finished, partial, mismatch or all, got {other:?}"
            )),
        }
    }
}

/// Where a build's log is, as the job JSON's `trace.state` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceState {
    /// The job runs: chunks live or flushed.
    Live,
    /// Finished, chunks being moved into the archive.
    Flushing,
    Archived,
    /// Archived, then deleted by artifact expiry.
    Expired,
}

impl TraceState {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceState::Live => "live",
            TraceState::Flushing => "flushing",
            TraceState::Archived => "archived",
            TraceState::Expired => "expired",
        }
    }
}

/// One row of the dashboard's builds list: a build with its log's state, from one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSummary {
    pub id: i64,
    pub status: BuildStatus,
    pub failure_reason: Option<String>,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub trace_state: TraceState,
    /// The archive's size; `None` before the archive (the live store knows the length) and
    /// after its expiry.
    pub archived_size: Option<u64>,
    pub checksum_valid: Option<bool>,
    pub lost_bytes: u64,
}

/// Where a chunk's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataStore {
    /// Live in Redis.
    Redis,
    /// In the row's `raw_data`: live (embedded stack) or flushed there during an outage.
    Database,
    /// Flushed to `chunks/<build_id>/<index>.log` in the object store.
    Object,
}

impl DataStore {
    pub fn as_str(self) -> &'static str {
        match self {
            DataStore::Redis => "redis",
            DataStore::Database => "database",
            DataStore::Object => "object",
        }
    }
}

impl FromStr for DataStore {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redis" => Ok(DataStore::Redis),
            "database" => Ok(DataStore::Database),
            "object" => Ok(DataStore::Object),
            other => Err(format!("unknown data store {other:?}")),
        }
    }
}

/// A `build_trace_chunks` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    pub build_id: i64,
    pub chunk_index: u64,
    pub data_store: DataStore,
    /// Bytes in the chunk as of its last flush or database write (0 while live in Redis).
    pub size: u64,
    /// Set when flushed.
    pub crc32: Option<u32>,
    /// Bumped by every write of the row; a flush flips the store only if it is unchanged.
    pub lock_version: i64,
}

/// The runner's final PUT, kept while its live chunks are flushed (`build_pending_states`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingState {
    pub build_id: i64,
    pub state: BuildStatus,
    pub failure_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// The runner's CRC32 (`crc32:%08x`), parsed.
    pub trace_checksum: Option<u32>,
    pub trace_bytesize: Option<u64>,
    pub created_at_ms: i64,
}

/// `build_trace_metadata`: checksums and archival progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceMetadata {
    pub build_id: i64,
    /// Ours: CRC32 of the log (combined from the chunks, then of the archive).
    pub checksum: Option<u32>,
    /// The runner's.
    pub remote_checksum: Option<u32>,
    pub checksum_valid: Option<bool>,
    pub archival_attempts: u32,
    pub last_archival_attempt_at_ms: Option<i64>,
    pub archived_at_ms: Option<i64>,
    pub trace_artifact_id: Option<i64>,
    pub invalid: bool,
    /// Bytes lost for good before the archive (a live chunk gone, no copy anywhere); the
    /// archive holds a marker line in their place. More than 0: the trace is partial.
    pub lost_bytes: u64,
}

impl TraceMetadata {
    /// The archive is missing bytes (see `lost_bytes`).
    pub fn partial(&self) -> bool {
        self.lost_bytes > 0
    }
}

/// An archived log (`job_artifacts`, kind `trace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub id: i64,
    pub build_id: i64,
    pub kind: String,
    pub object_path: String,
    pub size: u64,
    pub crc32: u32,
    /// Hex.
    pub sha256: String,
    pub expire_at_ms: Option<i64>,
    pub locked: bool,
    pub created_at_ms: i64,
}

/// What the archiver records, in one transaction with the trace metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    pub build_id: i64,
    pub object_path: String,
    pub size: u64,
    pub crc32: u32,
    pub sha256: String,
    pub expire_at_ms: Option<i64>,
}
