//! The metadata repository ([`MetadataStore`]) in the SQL database: PostgreSQL in production,
//! SQLite embedded. The database is the source of truth for where every chunk is.
//!
//! Duties:
//! 1. Builds: `create_build` registers a job (`running`); `finish_build` commits a final state
//!    with one conditional UPDATE (`… WHERE id = $1 AND status = 'running'`), then reads the row
//!    back as it is.
//! 2. Chunk rows: `ensure_chunks` inserts the missing rows (size 0, `lock_version` 0,
//!    `ON CONFLICT DO NOTHING`) in one transaction; `flip_chunk` is one UPDATE conditional on
//!    `lock_version`, which it bumps; `chunk_data` reads a `database` row's bytes;
//!    `delete_chunks` drops a build's rows once its log is archived.
//! 3. Pending states: the runner's first final PUT is stored (`ON CONFLICT DO NOTHING`), every
//!    later one gets the stored one back.
//! 4. Trace metadata: `record_checksums` and `increment_archival_attempts` upsert the row;
//!    `record_archive` inserts the `trace` artifact and points the metadata at it.
//! 5. Artifact expiry: `expired_artifacts` reads a batch through the partial index
//!    `job_artifacts_expirable`; `delete_artifact` deletes one row (the metadata's foreign key is
//!    `ON DELETE SET NULL`); `take_lease` / `release_lease` keep two runs from overlapping.
//! 6. Stuck builds ([`StuckBuildStore`]): `idle_running_builds` walks the partial index
//!    `builds_running_activity` (running builds only) in (activity_at, id) order;
//!    `overdue_pending_states` joins running builds to their pending states;
//!    `record_activity` moves `activity_at` forward only. `record_lost_bytes` marks a partial
//!    trace in its metadata.
//! 7. The dashboard's builds list: `builds_page` reads one page newest first, joined to its
//!    trace metadata and artifact, through the primary key or a partial index per filter
//!    (`builds_running_id`, `builds_finished_id`, `build_trace_metadata_partial`,
//!    `build_trace_metadata_mismatch`).
//!
//! Callers: the runner API (builds, pending states, checksums), the chunk flush
//! (`ensure_chunks` for a live chunk's first row, `chunks`, `flip_chunk`), readers (`chunks`,
//! `chunk_data`, `trace_artifact`), the archiver (attempts, `record_archive`, `delete_chunks`).
//!
//! Guarantees (those of [`MetadataStore`]; `tests/metadata_conformance.rs` runs them on both
//! databases):
//! - A build leaves `running` once: a later `finish_build` matches no row and returns the build
//!   as committed. `finish_build(…, Running, …)` writes nothing.
//! - `ensure_chunks` never touches an existing row (its store, size and `lock_version` stay).
//!   It inserts in ascending index order, so two calls cannot deadlock each other.
//! - Of two flips read at one `lock_version` exactly one applies: the UPDATE re-checks the
//!   version under the row lock (PostgreSQL re-evaluates it on the committed row; SQLite has one
//!   writer). Every flip bumps the version, so a flush that lost the race, or read the row
//!   before an append (`SqlLiveChunks` bumps it too), matches nothing. Only a flip to
//!   `database` keeps bytes in `raw_data`; any other flip clears them.
//! - `record_archive` runs in one transaction that first locks the build row (PostgreSQL
//!   `FOR NO KEY UPDATE`, SQLite `BEGIN IMMEDIATE`): concurrent calls serialize, the first
//!   inserts the artifact and the metadata, the others find the artifact and return it
//!   unchanged. The build row before the others is the lock order of `SqlLiveChunks` too.
//! - `record_checksums` overwrites the checksums and `checksum_valid`, but `invalid` only ever
//!   goes from false to true: a log a check found wrong stays flagged.
//! - A write that needs the build's row is [`MetadataError::NoBuild`] for an unknown build
//!   (`finish_build` and `record_archive` find no row; inserts fail their foreign key, so
//!   SQLite pools must keep sqlx's default `foreign_keys = ON`). Reads, deletes and flips of an
//!   unknown build find nothing (`None`, no rows, `false`).
//! - `take_lease` is one upsert whose `DO UPDATE … WHERE` applies only over an expired lease or
//!   the taker's own: PostgreSQL's `ON CONFLICT` either inserts or locks the existing row and
//!   re-checks the condition on its latest version, and SQLite has one writer, so of concurrent
//!   takers exactly one sees a row count of 1. `release_lease` deletes only the holder's row.
//! - Integers are checked both ways: a `u64` beyond BIGINT, or a stored value outside its Rust
//!   type (a negative size, a CRC32 past `u32`), is [`MetadataError::Corrupt`], never wrapped.
//!
//! The statements, one set per database, are the `SQLITE` and `POSTGRES` constants below; the
//! code using them is written once and expanded per driver by `on_db!` (runtime-checked
//! `sqlx::query`, no `DATABASE_URL` at build time), as in [`super::sql_live`]. Rows are read as
//! tuples (the `*Tuple` types, in the order of the `*_columns!` lists) and converted once.

use async_trait::async_trait;
use sqlx::migrate::MigrateError;
use sqlx::{PgPool, SqlitePool};

use super::sql::{Db, on_db};

use super::sql_live::{migrate_postgres, migrate_sqlite};
use crate::traces::metadata::{
    BREAKER_HISTORY_KEPT, BreakerRecord, ChunkFlip, MetadataError, MetadataStore, StuckBuildStore,
};
use crate::traces::model::{
    Artifact, Build, BuildListFilter, BuildStatus, BuildSummary, ChunkRow, DataStore, IdleBuild,
    NewArtifact, PendingState, TraceMetadata, TraceState,
};

/// `builds` columns, in [`BuildTuple`] order.
macro_rules! build_columns {
    () => {
        "id, token_digest, status, failure_reason, finished_at, created_at"
    };
}

/// A builds list row's columns, in [`SummaryTuple`] order (`b`: builds, `m`: its trace
/// metadata, `a`: its trace artifact).
macro_rules! summary_columns {
    () => {
        "b.id, b.status, b.failure_reason, b.created_at, b.finished_at, m.checksum_valid, \
         COALESCE(m.lost_bytes, 0), m.archived_at, a.size"
    };
}

/// A builds list page from `builds b` ($1 before id, $2 limit), outer-joined to its trace
/// metadata and artifact.
macro_rules! builds_list {
    ($from:literal, $where:literal) => {
        concat!(
            "SELECT ",
            summary_columns!(),
            " FROM ",
            $from,
            " LEFT JOIN build_trace_metadata m ON m.build_id = b.id \
             LEFT JOIN job_artifacts a ON a.build_id = b.id AND a.kind = 'trace' WHERE ",
            $where,
            " ORDER BY b.id DESC LIMIT $2"
        )
    };
}

/// A builds list page from `build_trace_metadata m` (the traces matching `$where`), joined to
/// the build and outer-joined to its artifact.
macro_rules! trace_list {
    ($from:literal, $where:literal) => {
        concat!(
            "SELECT ",
            summary_columns!(),
            " FROM ",
            $from,
            " JOIN builds b ON b.id = m.build_id \
             LEFT JOIN job_artifacts a ON a.build_id = b.id AND a.kind = 'trace' WHERE ",
            $where,
            " AND m.build_id < $1 ORDER BY m.build_id DESC LIMIT $2"
        )
    };
}

/// `build_trace_chunks` columns, in [`ChunkTuple`] order.
macro_rules! chunk_columns {
    () => {
        "build_id, chunk_index, data_store, size, crc32, lock_version"
    };
}

/// `build_pending_states` columns, in [`PendingTuple`] order.
macro_rules! pending_columns {
    () => {
        "build_id, state, failure_reason, exit_code, trace_checksum, trace_bytesize, created_at"
    };
}

/// `build_trace_metadata` columns, in [`MetadataTuple`] order.
macro_rules! metadata_columns {
    () => {
        "build_id, checksum, remote_checksum, checksum_valid, archival_attempts, \
         last_archival_attempt_at, archived_at, trace_artifact_id, invalid, lost_bytes"
    };
}

/// `job_artifacts` columns, in [`ArtifactTuple`] order.
macro_rules! artifact_columns {
    () => {
        "id, build_id, kind, object_path, size, crc32, sha256, expire_at, locked, created_at"
    };
}

type BuildTuple = (i64, String, String, Option<String>, Option<i64>, i64);
type SummaryTuple = (
    i64,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<bool>,
    i64,
    Option<i64>,
    Option<i64>,
);
type ChunkTuple = (i64, i64, String, i64, Option<i64>, i64);
type PendingTuple = (
    i64,
    String,
    Option<String>,
    Option<i32>,
    Option<i64>,
    Option<i64>,
    i64,
);
type MetadataTuple = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    i32,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    bool,
    i64,
);
type ArtifactTuple = (
    i64,
    i64,
    String,
    String,
    i64,
    i64,
    String,
    Option<i64>,
    bool,
    i64,
);

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// Opens a write transaction.
    begin: &'static str,
    /// $1 build → its id, the row locked against other writers until commit (no row: no build).
    lock_build: &'static str,
    /// $1 token digest, $2 now → the new build.
    create_build: &'static str,
    /// $1 build → the build.
    build: &'static str,
    /// $1 before id, $2 limit → builds list rows, newest first: every build, running ones,
    /// finished ones, partial logs, checksum mismatches.
    builds_all: &'static str,
    builds_running: &'static str,
    builds_finished: &'static str,
    builds_partial: &'static str,
    builds_mismatch: &'static str,
    /// $1 build, $2 status, $3 failure reason, $4 now → 1 row if the build was running.
    finish_build: &'static str,
    /// $1 build, $2 index, $3 data store, $4 now → 1 row unless the chunk's row exists.
    ensure_chunk: &'static str,
    /// $1 build → its chunk rows, in index order.
    chunks: &'static str,
    /// $1 build, $2 index → raw_data of a `database` row holding bytes.
    chunk_data: &'static str,
    /// $1 build, $2 index, $3 expected lock_version, $4 data store, $5 size, $6 crc32,
    /// $7 raw_data, $8 now → 1 row if the version was $3.
    flip_chunk: &'static str,
    /// $1 build.
    delete_chunks: &'static str,
    /// $1 build, $2 state, $3 failure reason, $4 exit code, $5 checksum, $6 bytesize, $7 created
    /// at → 1 row unless a pending state is stored.
    insert_pending_state: &'static str,
    /// $1 build → its pending state.
    pending_state: &'static str,
    /// $1 build.
    delete_pending_state: &'static str,
    /// $1 build → its trace metadata.
    trace_metadata: &'static str,
    /// $1 build, $2 checksum, $3 remote checksum, $4 checksum valid, $5 invalid.
    record_checksums: &'static str,
    /// $1 build, $2 now → the new attempt count.
    count_archival_attempt: &'static str,
    /// $1 build, $2 lost bytes.
    record_lost_bytes: &'static str,
    /// $1 idle before, $2 after activity_at, $3 after id, $4 limit → id, activity_at,
    /// created_at of idle running builds without a pending state.
    idle_running_builds: &'static str,
    /// $1 pending state created before, $2 after id, $3 limit → build ids.
    overdue_pending_states: &'static str,
    /// $1 build, $2 activity at.
    record_activity: &'static str,
    /// $1 build → its `trace` artifact.
    trace_artifact: &'static str,
    /// → the `trace` artifact with the highest id.
    newest_trace_artifact: &'static str,
    /// $1 build, $2 object path, $3 size, $4 crc32, $5 sha256, $6 expire at, $7 now → the new
    /// artifact.
    insert_artifact: &'static str,
    /// $1 build, $2 checksum, $3 artifact id, $4 now.
    record_archived: &'static str,
    /// $1 build, $2 now.
    mark_trace_archived: &'static str,
    /// $1 after id, $2 finished before, $3 limit, $4 attempts that mean "gave up" → build ids.
    stale_traces: &'static str,
    /// $1 name → position.
    cursor: &'static str,
    /// $1 name → updated at.
    cursor_updated_at: &'static str,
    /// $1 name, $2 position, $3 now.
    set_cursor: &'static str,
    /// $1 name → state, reason, changed at.
    breaker: &'static str,
    /// $1 name, $2 state, $3 reason, $4 now → the state, reason and changed_at now stored.
    set_breaker: &'static str,
    /// $1 name, $2 state, $3 reason, $4 at: a change, once (a repeat does nothing).
    insert_breaker_event: &'static str,
    /// $1 name, $2 changes kept: drops the older ones.
    trim_breaker_events: &'static str,
    /// $1 name, $2 limit → state, reason, at, newest first.
    breaker_history: &'static str,
    /// $1 now, $2 limit → expired, unlocked trace artifacts in (expire_at, id) order.
    expired_artifacts: &'static str,
    /// $1 artifact id.
    delete_artifact: &'static str,
    /// $1 name, $2 holder, $3 expires at, $4 now → 1 row if $2 holds the lease now.
    take_lease: &'static str,
    /// $1 name, $2 holder → 1 row if $2 held it.
    release_lease: &'static str,
}

/// SQLite: `BEGIN IMMEDIATE` takes the write lock at once (a deferred transaction that read
/// first could fail to upgrade), so `lock_build` needs no locking clause. The other statements
/// are PostgreSQL's too.
const SQLITE: Statements = Statements {
    begin: "BEGIN IMMEDIATE",
    lock_build: "SELECT id FROM builds WHERE id = $1",
    create_build: concat!(
        "INSERT INTO builds (token_digest, status, created_at, activity_at) \
         VALUES ($1, 'running', $2, $2) RETURNING ",
        build_columns!()
    ),
    build: concat!("SELECT ", build_columns!(), " FROM builds WHERE id = $1"),
    // Each walks one index backwards from `before`: the primary key, or the filter's partial
    // index, named with `INDEXED BY` since SQLite without `ANALYZE` statistics would rather
    // sort every running build (an error, not a slow plan, if the index cannot serve).
    builds_all: builds_list!("builds b", "b.id < $1"),
    builds_running: builds_list!(
        "builds b INDEXED BY builds_running_id",
        "b.status = 'running' AND b.id < $1"
    ),
    builds_finished: builds_list!(
        "builds b INDEXED BY builds_finished_id",
        "b.status <> 'running' AND b.id < $1"
    ),
    builds_partial: trace_list!(
        "build_trace_metadata m INDEXED BY build_trace_metadata_partial",
        "m.lost_bytes > 0"
    ),
    builds_mismatch: trace_list!(
        "build_trace_metadata m INDEXED BY build_trace_metadata_mismatch",
        "m.checksum_valid = false"
    ),
    finish_build: "UPDATE builds SET status = $2, failure_reason = $3, finished_at = $4 \
         WHERE id = $1 AND status = 'running'",
    ensure_chunk: "INSERT INTO build_trace_chunks \
         (build_id, chunk_index, data_store, size, lock_version, created_at, updated_at) \
         VALUES ($1, $2, $3, 0, 0, $4, $4) \
         ON CONFLICT (build_id, chunk_index) DO NOTHING",
    chunks: concat!(
        "SELECT ",
        chunk_columns!(),
        " FROM build_trace_chunks WHERE build_id = $1 ORDER BY chunk_index"
    ),
    chunk_data: "SELECT raw_data FROM build_trace_chunks \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database' \
         AND raw_data IS NOT NULL",
    flip_chunk: "UPDATE build_trace_chunks SET data_store = $4, size = $5, crc32 = $6, \
         raw_data = $7, lock_version = lock_version + 1, updated_at = $8 \
         WHERE build_id = $1 AND chunk_index = $2 AND lock_version = $3",
    delete_chunks: "DELETE FROM build_trace_chunks WHERE build_id = $1",
    insert_pending_state: concat!(
        "INSERT INTO build_pending_states (",
        pending_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (build_id) DO NOTHING"
    ),
    pending_state: concat!(
        "SELECT ",
        pending_columns!(),
        " FROM build_pending_states WHERE build_id = $1"
    ),
    delete_pending_state: "DELETE FROM build_pending_states WHERE build_id = $1",
    trace_metadata: concat!(
        "SELECT ",
        metadata_columns!(),
        " FROM build_trace_metadata WHERE build_id = $1"
    ),
    record_checksums: "INSERT INTO build_trace_metadata \
         (build_id, checksum, remote_checksum, checksum_valid, invalid) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (build_id) DO UPDATE SET checksum = excluded.checksum, \
         remote_checksum = excluded.remote_checksum, checksum_valid = excluded.checksum_valid, \
         invalid = build_trace_metadata.invalid OR excluded.invalid",
    count_archival_attempt: "INSERT INTO build_trace_metadata \
         (build_id, archival_attempts, last_archival_attempt_at) VALUES ($1, 1, $2) \
         ON CONFLICT (build_id) DO UPDATE SET \
         archival_attempts = build_trace_metadata.archival_attempts + 1, \
         last_archival_attempt_at = excluded.last_archival_attempt_at \
         RETURNING archival_attempts",
    record_lost_bytes: "INSERT INTO build_trace_metadata (build_id, lost_bytes) VALUES ($1, $2) \
         ON CONFLICT (build_id) DO UPDATE SET lost_bytes = excluded.lost_bytes",
    // `status = 'running'` repeats the partial index `builds_running_activity`'s predicate;
    // the row-value comparison walks it in (activity_at, id) order from the key.
    idle_running_builds: "SELECT id, activity_at, created_at FROM builds \
         WHERE status = 'running' AND activity_at < $1 AND (activity_at, id) > ($2, $3) \
         AND NOT EXISTS (SELECT 1 FROM build_pending_states p WHERE p.build_id = builds.id) \
         ORDER BY activity_at, id LIMIT $4",
    overdue_pending_states: "SELECT b.id FROM builds b \
         JOIN build_pending_states p ON p.build_id = b.id \
         WHERE b.status = 'running' AND p.created_at < $1 AND b.id > $2 \
         ORDER BY b.id LIMIT $3",
    record_activity: "UPDATE builds SET activity_at = $2 WHERE id = $1 AND activity_at < $2",
    trace_artifact: concat!(
        "SELECT ",
        artifact_columns!(),
        " FROM job_artifacts WHERE build_id = $1 AND kind = 'trace'"
    ),
    newest_trace_artifact: concat!(
        "SELECT ",
        artifact_columns!(),
        " FROM job_artifacts WHERE kind = 'trace' ORDER BY id DESC LIMIT 1"
    ),
    insert_artifact: concat!(
        "INSERT INTO job_artifacts \
         (build_id, kind, object_path, size, crc32, sha256, expire_at, created_at) \
         VALUES ($1, 'trace', $2, $3, $4, $5, $6, $7) RETURNING ",
        artifact_columns!()
    ),
    record_archived: "INSERT INTO build_trace_metadata \
         (build_id, checksum, trace_artifact_id, archived_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (build_id) DO UPDATE SET checksum = excluded.checksum, \
         trace_artifact_id = excluded.trace_artifact_id, archived_at = excluded.archived_at",
    mark_trace_archived: "UPDATE builds SET trace_archived_at = $2 WHERE id = $1",
    // The partial index `builds_unarchived_traces` holds exactly the rows this walks.
    stale_traces: "SELECT id FROM builds \
         WHERE finished_at IS NOT NULL AND trace_archived_at IS NULL \
         AND id > $1 AND finished_at < $2 \
         AND NOT EXISTS (SELECT 1 FROM build_trace_metadata m \
         WHERE m.build_id = builds.id AND m.archival_attempts >= $4) \
         ORDER BY id LIMIT $3",
    cursor: "SELECT position FROM cursors WHERE name = $1",
    cursor_updated_at: "SELECT updated_at FROM cursors WHERE name = $1",
    set_cursor: "INSERT INTO cursors (name, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
         updated_at = excluded.updated_at",
    breaker: "SELECT state, reason, changed_at FROM circuit_breakers WHERE name = $1",
    set_breaker: "INSERT INTO circuit_breakers (name, state, reason, changed_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
         changed_at = CASE WHEN circuit_breakers.state = excluded.state \
         THEN circuit_breakers.changed_at ELSE excluded.changed_at END \
         RETURNING state, reason, changed_at",
    insert_breaker_event: "INSERT INTO circuit_breaker_events (name, state, reason, at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (name, at, state) DO NOTHING",
    trim_breaker_events: "DELETE FROM circuit_breaker_events WHERE name = $1 AND id < \
         (SELECT id FROM circuit_breaker_events WHERE name = $1 ORDER BY id DESC \
          LIMIT 1 OFFSET $2 - 1)",
    breaker_history: "SELECT state, reason, at FROM circuit_breaker_events WHERE name = $1 \
         ORDER BY id DESC LIMIT $2",
    // `locked = false` repeats the partial index's predicate word for word (both planners
    // need that); `expire_at <= $1` implies its `expire_at IS NOT NULL`.
    expired_artifacts: concat!(
        "SELECT ",
        artifact_columns!(),
        " FROM job_artifacts WHERE expire_at <= $1 AND locked = false AND kind = 'trace' \
         ORDER BY expire_at, id LIMIT $2"
    ),
    delete_artifact: "DELETE FROM job_artifacts WHERE id = $1",
    take_lease: "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
         expires_at = excluded.expires_at \
         WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
    release_lease: "DELETE FROM leases WHERE name = $1 AND holder = $2",
};

/// PostgreSQL (READ COMMITTED): `lock_build` takes the build row's `FOR NO KEY UPDATE` lock,
/// which serializes archivers of one build without blocking the foreign-key checks of inserts
/// (chunk rows, attempts) that only need `KEY SHARE`.
const POSTGRES: Statements = Statements {
    begin: "BEGIN",
    lock_build: "SELECT id FROM builds WHERE id = $1 FOR NO KEY UPDATE",
    create_build: SQLITE.create_build,
    build: SQLITE.build,
    // The same walks; PostgreSQL's planner picks the partial indexes itself (the WHERE repeats
    // their predicates word for word).
    builds_all: SQLITE.builds_all,
    builds_running: builds_list!("builds b", "b.status = 'running' AND b.id < $1"),
    builds_finished: builds_list!("builds b", "b.status <> 'running' AND b.id < $1"),
    builds_partial: trace_list!("build_trace_metadata m", "m.lost_bytes > 0"),
    builds_mismatch: trace_list!("build_trace_metadata m", "m.checksum_valid = false"),
    finish_build: SQLITE.finish_build,
    ensure_chunk: SQLITE.ensure_chunk,
    chunks: SQLITE.chunks,
    chunk_data: SQLITE.chunk_data,
    flip_chunk: SQLITE.flip_chunk,
    delete_chunks: SQLITE.delete_chunks,
    insert_pending_state: SQLITE.insert_pending_state,
    pending_state: SQLITE.pending_state,
    delete_pending_state: SQLITE.delete_pending_state,
    trace_metadata: SQLITE.trace_metadata,
    record_checksums: SQLITE.record_checksums,
    count_archival_attempt: SQLITE.count_archival_attempt,
    record_lost_bytes: SQLITE.record_lost_bytes,
    idle_running_builds: SQLITE.idle_running_builds,
    overdue_pending_states: SQLITE.overdue_pending_states,
    record_activity: SQLITE.record_activity,
    trace_artifact: SQLITE.trace_artifact,
    newest_trace_artifact: SQLITE.newest_trace_artifact,
    insert_artifact: SQLITE.insert_artifact,
    record_archived: SQLITE.record_archived,
    mark_trace_archived: SQLITE.mark_trace_archived,
    stale_traces: SQLITE.stale_traces,
    cursor: SQLITE.cursor,
    cursor_updated_at: SQLITE.cursor_updated_at,
    set_cursor: SQLITE.set_cursor,
    breaker: SQLITE.breaker,
    set_breaker: SQLITE.set_breaker,
    insert_breaker_event: SQLITE.insert_breaker_event,
    trim_breaker_events: SQLITE.trim_breaker_events,
    breaker_history: SQLITE.breaker_history,
    expired_artifacts: SQLITE.expired_artifacts,
    delete_artifact: SQLITE.delete_artifact,
    take_lease: SQLITE.take_lease,
    release_lease: SQLITE.release_lease,
};

pub struct SqlMetadata {
    db: Db,
}

impl SqlMetadata {
    /// Over a migrated SQLite pool (see [`migrate_sqlite`]) with `foreign_keys` on (sqlx's
    /// default) and a `busy_timeout`, since writers queue for SQLite's one write lock.
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self {
            db: Db::Sqlite(pool),
        }
    }

    /// Over a migrated PostgreSQL pool (see [`migrate_postgres`]).
    pub fn postgres(pool: PgPool) -> Self {
        Self {
            db: Db::Postgres(pool),
        }
    }

    /// Applies this store's database's migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match &self.db {
            Db::Sqlite(pool) => migrate_sqlite(pool).await,
            Db::Postgres(pool) => migrate_postgres(pool).await,
        }
    }
}

fn corrupt(build: i64, detail: impl Into<String>) -> MetadataError {
    MetadataError::Corrupt {
        build,
        detail: detail.into(),
    }
}

/// A write naming a build without a `builds` row fails its foreign key: no such build.
fn or_no_build(build: i64) -> impl FnOnce(sqlx::Error) -> MetadataError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => MetadataError::NoBuild(build),
        _ => MetadataError::Sql(e),
    }
}

/// A size, index or count as stored (BIGINT).
fn to_sql(build: i64, what: &str, value: u64) -> Result<i64, MetadataError> {
    i64::try_from(value).map_err(|_| corrupt(build, format!("{what} {value} out of range")))
}

/// A stored size, index or count (never negative).
fn to_u64(build: i64, what: &str, value: i64) -> Result<u64, MetadataError> {
    u64::try_from(value).map_err(|_| corrupt(build, format!("{what} {value} is negative")))
}

/// A stored archival attempt count (INTEGER).
fn to_attempts(build: i64, value: i32) -> Result<u32, MetadataError> {
    u32::try_from(value)
        .map_err(|_| corrupt(build, format!("archival attempts {value} is negative")))
}

/// A stored CRC32.
fn to_u32(build: i64, what: &str, value: i64) -> Result<u32, MetadataError> {
    u32::try_from(value).map_err(|_| corrupt(build, format!("{what} {value} is not a CRC32")))
}

fn to_build(row: BuildTuple) -> Result<Build, MetadataError> {
    let (id, token_digest, status, failure_reason, finished_at_ms, created_at_ms) = row;
    Ok(Build {
        id,
        token_digest,
        status: status.parse().map_err(|e: String| corrupt(id, e))?,
        failure_reason,
        finished_at_ms,
        created_at_ms,
    })
}

fn to_summary(row: SummaryTuple) -> Result<BuildSummary, MetadataError> {
    let (id, status, failure_reason, created, finished, valid, lost, archived_at, size) = row;
    let status: BuildStatus = status.parse().map_err(|e: String| corrupt(id, e))?;
    // As `TraceService::trace_state` decides it, from the same rows.
    let trace_state = match (size, archived_at) {
        (Some(_), _) => TraceState::Archived,
        (None, Some(_)) if status.is_finished() => TraceState::Expired,
        _ if status.is_finished() => TraceState::Flushing,
        _ => TraceState::Live,
    };
    Ok(BuildSummary {
        id,
        status,
        failure_reason,
        created_at_ms: created,
        finished_at_ms: finished,
        trace_state,
        archived_size: size.map(|n| to_u64(id, "artifact size", n)).transpose()?,
        checksum_valid: valid,
        lost_bytes: to_u64(id, "lost bytes", lost)?,
    })
}

fn to_chunk(row: ChunkTuple) -> Result<ChunkRow, MetadataError> {
    let (build_id, chunk_index, data_store, size, crc32, lock_version) = row;
    Ok(ChunkRow {
        build_id,
        chunk_index: to_u64(build_id, "chunk index", chunk_index)?,
        data_store: data_store
            .parse()
            .map_err(|e: String| corrupt(build_id, e))?,
        size: to_u64(build_id, "chunk size", size)?,
        crc32: crc32
            .map(|c| to_u32(build_id, "chunk crc32", c))
            .transpose()?,
        lock_version,
    })
}

fn to_pending(row: PendingTuple) -> Result<PendingState, MetadataError> {
    let (build_id, state, failure_reason, exit_code, checksum, bytesize, created_at_ms) = row;
    Ok(PendingState {
        build_id,
        state: state
            .parse::<BuildStatus>()
            .map_err(|e| corrupt(build_id, e))?,
        failure_reason,
        exit_code,
        trace_checksum: checksum
            .map(|c| to_u32(build_id, "trace checksum", c))
            .transpose()?,
        trace_bytesize: bytesize
            .map(|n| to_u64(build_id, "trace bytesize", n))
            .transpose()?,
        created_at_ms,
    })
}

fn to_metadata(row: MetadataTuple) -> Result<TraceMetadata, MetadataError> {
    let (build, sum, remote, valid, attempts, last_try, archived, artifact, invalid, lost) = row;
    Ok(TraceMetadata {
        build_id: build,
        checksum: sum.map(|c| to_u32(build, "checksum", c)).transpose()?,
        remote_checksum: remote
            .map(|c| to_u32(build, "remote checksum", c))
            .transpose()?,
        checksum_valid: valid,
        archival_attempts: to_attempts(build, attempts)?,
        last_archival_attempt_at_ms: last_try,
        archived_at_ms: archived,
        trace_artifact_id: artifact,
        invalid,
        lost_bytes: to_u64(build, "lost bytes", lost)?,
    })
}

fn to_artifact(row: ArtifactTuple) -> Result<Artifact, MetadataError> {
    let (id, build, kind, object_path, size, crc32, sha256, expire_at, locked, created_at) = row;
    Ok(Artifact {
        id,
        build_id: build,
        kind,
        object_path,
        size: to_u64(build, "artifact size", size)?,
        crc32: to_u32(build, "artifact crc32", crc32)?,
        sha256,
        expire_at_ms: expire_at,
        locked,
        created_at_ms: created_at,
    })
}

#[async_trait]
impl StuckBuildStore for SqlMetadata {
    async fn idle_running_builds(
        &self,
        idle_before_ms: i64,
        after: (i64, i64),
        limit: u32,
    ) -> Result<Vec<IdleBuild>, MetadataError> {
        let rows: Vec<(i64, i64, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.idle_running_builds)
                .bind(idle_before_ms)
                .bind(after.0)
                .bind(after.1)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, activity_at_ms, created_at_ms)| IdleBuild {
                id,
                activity_at_ms,
                created_at_ms,
            })
            .collect())
    }

    async fn overdue_pending_states(
        &self,
        created_before_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.overdue_pending_states)
                .bind(created_before_ms)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    async fn record_activity(&self, build_id: i64, at_ms: i64) -> Result<(), MetadataError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.record_activity)
                .bind(build_id)
                .bind(at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

#[async_trait]
impl MetadataStore for SqlMetadata {
    async fn create_build(&self, token_digest: &str, now_ms: i64) -> Result<Build, MetadataError> {
        let row: BuildTuple = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.create_build)
                .bind(token_digest)
                .bind(now_ms)
                .fetch_one(pool)
                .await?
        });
        to_build(row)
    }

    async fn build(&self, id: i64) -> Result<Option<Build>, MetadataError> {
        let row: Option<BuildTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.build)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_build).transpose()
    }

    async fn builds_page(
        &self,
        filter: BuildListFilter,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<BuildSummary>, MetadataError> {
        let rows: Vec<SummaryTuple> = on_db!(&self.db, |pool, q| {
            let statement = match filter {
                BuildListFilter::All => q.builds_all,
                BuildListFilter::Running => q.builds_running,
                BuildListFilter::Finished => q.builds_finished,
                BuildListFilter::Partial => q.builds_partial,
                BuildListFilter::Mismatch => q.builds_mismatch,
            };
            sqlx::query_as(statement)
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_summary).collect()
    }

    async fn finish_build(
        &self,
        id: i64,
        status: BuildStatus,
        failure_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Build, MetadataError> {
        // `running` is no final state: nothing to commit, the build is returned as it is.
        if status.is_finished() {
            on_db!(&self.db, |pool, q| {
                sqlx::query(q.finish_build)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(failure_reason)
                    .bind(now_ms)
                    .execute(pool)
                    .await?;
            });
        }
        // Whether this call or an earlier one committed the state, this is the build now.
        self.build(id).await?.ok_or(MetadataError::NoBuild(id))
    }

    async fn ensure_chunks(
        &self,
        build_id: i64,
        indexes: &[u64],
        store: DataStore,
        now_ms: i64,
    ) -> Result<(), MetadataError> {
        let mut rows = indexes
            .iter()
            .map(|&i| to_sql(build_id, "chunk index", i))
            .collect::<Result<Vec<_>, _>>()?;
        // One order for every caller: two transactions inserting rows of one build cannot each
        // wait for a row the other inserted.
        rows.sort_unstable();
        rows.dedup();
        if rows.is_empty() {
            return Ok(());
        }
        on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            for &index in &rows {
                sqlx::query(q.ensure_chunk)
                    .bind(build_id)
                    .bind(index)
                    .bind(store.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(or_no_build(build_id))?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    async fn chunks(&self, build_id: i64) -> Result<Vec<ChunkRow>, MetadataError> {
        let rows: Vec<ChunkTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.chunks)
                .bind(build_id)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_chunk).collect()
    }

    async fn chunk_data(
        &self,
        build_id: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, MetadataError> {
        let index = to_sql(build_id, "chunk index", chunk_index)?;
        let data: Option<Vec<u8>> = on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.chunk_data)
                .bind(build_id)
                .bind(index)
                .fetch_optional(pool)
                .await?
        });
        Ok(data)
    }

    async fn flip_chunk(&self, flip: &ChunkFlip, now_ms: i64) -> Result<bool, MetadataError> {
        let build = flip.build_id;
        let index = to_sql(build, "chunk index", flip.chunk_index)?;
        let size = to_sql(build, "chunk size", flip.size)?;
        // Only a `database` row holds bytes (a CHECK constraint says so too).
        let raw = match flip.to {
            DataStore::Database => flip.raw_data.as_deref(),
            DataStore::Redis | DataStore::Object => None,
        };
        let flipped = on_db!(&self.db, |pool, q| {
            sqlx::query(q.flip_chunk)
                .bind(build)
                .bind(index)
                .bind(flip.expected_lock_version)
                .bind(flip.to.as_str())
                .bind(size)
                .bind(i64::from(flip.crc32))
                .bind(raw)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(flipped == 1)
    }

    async fn delete_chunks(&self, build_id: i64) -> Result<u64, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_chunks)
                .bind(build_id)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    async fn upsert_pending_state(
        &self,
        state: &PendingState,
    ) -> Result<PendingState, MetadataError> {
        let build = state.build_id;
        let bytesize = state
            .trace_bytesize
            .map(|n| to_sql(build, "trace bytesize", n))
            .transpose()?;
        // The stored row is only ever deleted (once the state is committed). If that happened
        // between the insert and the read, the second insert stores this state.
        for _ in 0..2 {
            on_db!(&self.db, |pool, q| {
                sqlx::query(q.insert_pending_state)
                    .bind(build)
                    .bind(state.state.as_str())
                    .bind(state.failure_reason.as_deref())
                    .bind(state.exit_code)
                    .bind(state.trace_checksum.map(i64::from))
                    .bind(bytesize)
                    .bind(state.created_at_ms)
                    .execute(pool)
                    .await
                    .map_err(or_no_build(build))?;
            });
            if let Some(stored) = self.pending_state(build).await? {
                return Ok(stored);
            }
        }
        Err(corrupt(
            build,
            "the pending state was deleted as fast as it was stored",
        ))
    }

    async fn pending_state(&self, build_id: i64) -> Result<Option<PendingState>, MetadataError> {
        let row: Option<PendingTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.pending_state)
                .bind(build_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_pending).transpose()
    }

    async fn delete_pending_state(&self, build_id: i64) -> Result<(), MetadataError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_pending_state)
                .bind(build_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn trace_metadata(&self, build_id: i64) -> Result<Option<TraceMetadata>, MetadataError> {
        let row: Option<MetadataTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.trace_metadata)
                .bind(build_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_metadata).transpose()
    }

    async fn record_checksums(
        &self,
        build_id: i64,
        ours: u32,
        remote: Option<u32>,
        valid: Option<bool>,
    ) -> Result<(), MetadataError> {
        // Set by a failed check, kept by the upsert's `OR` whatever later checks say.
        let invalid = valid == Some(false);
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.record_checksums)
                .bind(build_id)
                .bind(i64::from(ours))
                .bind(remote.map(i64::from))
                .bind(valid)
                .bind(invalid)
                .execute(pool)
                .await
                .map_err(or_no_build(build_id))?;
        });
        Ok(())
    }

    async fn record_lost_bytes(&self, build_id: i64, lost_bytes: u64) -> Result<(), MetadataError> {
        let lost = to_sql(build_id, "lost bytes", lost_bytes)?;
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.record_lost_bytes)
                .bind(build_id)
                .bind(lost)
                .execute(pool)
                .await
                .map_err(or_no_build(build_id))?;
        });
        Ok(())
    }

    async fn increment_archival_attempts(
        &self,
        build_id: i64,
        now_ms: i64,
    ) -> Result<u32, MetadataError> {
        let count: i32 = on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.count_archival_attempt)
                .bind(build_id)
                .bind(now_ms)
                .fetch_one(pool)
                .await
                .map_err(or_no_build(build_id))?
        });
        to_attempts(build_id, count)
    }

    async fn record_archive(
        &self,
        artifact: &NewArtifact,
        now_ms: i64,
    ) -> Result<Artifact, MetadataError> {
        let build = artifact.build_id;
        let size = to_sql(build, "artifact size", artifact.size)?;
        let crc32 = i64::from(artifact.crc32);
        let row: ArtifactTuple = on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            let locked: Option<i64> = sqlx::query_scalar(q.lock_build)
                .bind(build)
                .fetch_optional(&mut *tx)
                .await?;
            if locked.is_none() {
                tx.rollback().await?;
                return Err(MetadataError::NoBuild(build));
            }
            let existing: Option<ArtifactTuple> = sqlx::query_as(q.trace_artifact)
                .bind(build)
                .fetch_optional(&mut *tx)
                .await?;
            match existing {
                // Archived before (an earlier run, or a concurrent one that held the lock).
                Some(row) => {
                    tx.rollback().await?;
                    row
                }
                None => {
                    let row: ArtifactTuple = sqlx::query_as(q.insert_artifact)
                        .bind(build)
                        .bind(artifact.object_path.as_str())
                        .bind(size)
                        .bind(crc32)
                        .bind(artifact.sha256.as_str())
                        .bind(artifact.expire_at_ms)
                        .bind(now_ms)
                        .fetch_one(&mut *tx)
                        .await?;
                    sqlx::query(q.record_archived)
                        .bind(build)
                        .bind(crc32)
                        .bind(row.0)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(q.mark_trace_archived)
                        .bind(build)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    row
                }
            }
        });
        to_artifact(row)
    }

    async fn trace_artifact(&self, build_id: i64) -> Result<Option<Artifact>, MetadataError> {
        let row: Option<ArtifactTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.trace_artifact)
                .bind(build_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_artifact).transpose()
    }

    async fn newest_trace_artifact(&self) -> Result<Option<Artifact>, MetadataError> {
        let row: Option<ArtifactTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.newest_trace_artifact)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_artifact).transpose()
    }

    async fn stale_traces(
        &self,
        after_id: i64,
        finished_before_ms: i64,
        gave_up_after: u32,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.stale_traces)
                .bind(after_id)
                .bind(finished_before_ms)
                .bind(i64::from(limit))
                .bind(i64::from(gave_up_after))
                .fetch_all(pool)
                .await?
        }))
    }

    async fn cursor(&self, name: &str) -> Result<Option<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.cursor)
                .bind(name)
                .fetch_optional(pool)
                .await?
        }))
    }

    async fn cursor_updated_at(&self, name: &str) -> Result<Option<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.cursor_updated_at)
                .bind(name)
                .fetch_optional(pool)
                .await?
        }))
    }

    async fn set_cursor(
        &self,
        name: &str,
        position: i64,
        now_ms: i64,
    ) -> Result<(), MetadataError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.set_cursor)
                .bind(name)
                .bind(position)
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn expired_artifacts(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Artifact>, MetadataError> {
        let rows: Vec<ArtifactTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.expired_artifacts)
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_artifact).collect()
    }

    async fn delete_artifact(&self, id: i64) -> Result<bool, MetadataError> {
        let deleted = on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_artifact)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<bool, MetadataError> {
        let taken = on_db!(&self.db, |pool, q| {
            sqlx::query(q.take_lease)
                .bind(name)
                .bind(holder)
                .bind(expires_at_ms)
                .bind(now_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, MetadataError> {
        let released = on_db!(&self.db, |pool, q| {
            sqlx::query(q.release_lease)
                .bind(name)
                .bind(holder)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(released == 1)
    }

    async fn breaker(&self, name: &str) -> Result<Option<BreakerRecord>, MetadataError> {
        let row: Option<(String, Option<String>, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.breaker)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(state, reason, changed_at_ms)| BreakerRecord {
            name: name.to_owned(),
            open: state == "open",
            reason,
            changed_at_ms,
        }))
    }

    async fn set_breaker(&self, record: &BreakerRecord) -> Result<(), MetadataError> {
        let state = if record.open { "open" } else { "closed" };
        let name = record.name.as_str();
        on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            // The change as stored: a process reporting a state already stored gets the first
            // report's time back, so its history row is the same one and is kept once.
            let (state, reason, at): (String, Option<String>, i64) = sqlx::query_as(q.set_breaker)
                .bind(name)
                .bind(state)
                .bind(record.reason.as_deref())
                .bind(record.changed_at_ms)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(q.insert_breaker_event)
                .bind(name)
                .bind(state)
                .bind(reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(q.trim_breaker_events)
                .bind(name)
                .bind(i64::from(BREAKER_HISTORY_KEPT))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn breaker_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<BreakerRecord>, MetadataError> {
        let rows: Vec<(String, Option<String>, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.breaker_history)
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(state, reason, changed_at_ms)| BreakerRecord {
                name: name.to_owned(),
                open: state == "open",
                reason,
                changed_at_ms,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_corrupt(result: Result<impl std::fmt::Debug, MetadataError>) -> bool {
        matches!(result, Err(MetadataError::Corrupt { build: 7, .. }))
    }

    #[test]
    fn integers_out_of_range_are_corrupt_not_wrapped() {
        assert!(is_corrupt(to_sql(7, "size", u64::MAX)));
        assert_eq!(to_sql(7, "size", i64::MAX as u64).ok(), Some(i64::MAX));
        assert!(is_corrupt(to_u64(7, "size", -1)));
        assert!(is_corrupt(to_u32(7, "crc32", -1)));
        assert!(is_corrupt(to_u32(7, "crc32", 1 << 32)));
        assert_eq!(to_u32(7, "crc32", u32::MAX.into()).ok(), Some(u32::MAX));
    }

    #[test]
    fn rows_with_values_outside_their_types_are_corrupt() {
        let chunk = |store: &str, size: i64, crc: Option<i64>| {
            to_chunk((7, 0, store.to_owned(), size, crc, 0))
        };
        assert!(chunk("database", 3, Some(1)).is_ok());
        assert!(is_corrupt(chunk("fog", 3, None)));
        assert!(is_corrupt(chunk("database", -3, None)));
        assert!(is_corrupt(chunk("object", 3, Some(u32::MAX as i64 + 1))));
        assert!(is_corrupt(to_build((
            7,
            "d".into(),
            "done".into(),
            None,
            None,
            0
        ))));
        let metadata =
            |attempts| to_metadata((7, None, None, None, attempts, None, None, None, false, 0));
        assert!(is_corrupt(metadata(-1)));
        assert_eq!(metadata(2).ok().map(|m| m.archival_attempts), Some(2));
        assert!(is_corrupt(to_pending((
            7,
            "running-ish".into(),
            None,
            None,
            None,
            None,
            0
        ))));
        assert!(is_corrupt(to_artifact((
            1,
            7,
            "trace".into(),
            "p".into(),
            -1,
            0,
            "s".into(),
            None,
            false,
            0
        ))));
    }
}
