-- The build-log data model (shared/DESIGN.md §4) on SQLite, the embedded default: the same
-- tables, columns and constraints as migrations/postgres/0001_build_logs.sql (read its comments;
-- keep the two in step). SQLite specifics: STRICT tables, so a value of the wrong type is an
-- error rather than silently stored (a text value in `raw_data` would be one); INTEGER is 64-bit
-- (BIGINT on PostgreSQL); booleans are INTEGER 0/1; AUTOINCREMENT so a deleted build's id is
-- never handed out again.
--
-- Timestamps are INTEGER milliseconds since the Unix epoch, written by the application's clock.

-- One row per CI job; `trace_length` is the log's length (the database live chunk store's).
CREATE TABLE builds (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    token_digest   TEXT NOT NULL,
    status         TEXT NOT NULL DEFAULT 'running'
                   CHECK (status IN ('running', 'success', 'failed', 'canceled')),
    failure_reason TEXT,
    trace_length   INTEGER NOT NULL DEFAULT 0 CHECK (trace_length >= 0),
    -- Set by the first final PUT (or the size limit): appends are refused from then on.
    trace_closed   INTEGER NOT NULL DEFAULT 0 CHECK (trace_closed IN (0, 1)),
    finished_at    INTEGER,
    created_at     INTEGER NOT NULL
) STRICT;

-- Stale-trace recovery: finished builds, oldest `finished_at` first.
CREATE INDEX builds_status_finished_at ON builds (status, finished_at);

-- One row per 128 KiB chunk of a log, wherever its bytes are (`redis`, `database` = in
-- `raw_data`, `object`); `lock_version` is bumped by every write of the row (optimistic locking
-- of the flush). No cascade from builds: flushed chunks name objects that must be deleted first.
CREATE TABLE build_trace_chunks (
    build_id     INTEGER NOT NULL REFERENCES builds (id),
    chunk_index  INTEGER NOT NULL CHECK (chunk_index >= 0),
    data_store   TEXT NOT NULL CHECK (data_store IN ('redis', 'database', 'object')),
    raw_data     BLOB,
    size         INTEGER NOT NULL DEFAULT 0 CHECK (size >= 0),
    crc32        INTEGER CHECK (crc32 BETWEEN 0 AND 4294967295),
    lock_version INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (build_id, chunk_index),
    CHECK (raw_data IS NULL OR data_store = 'database')
) STRICT;

-- "Builds with chunks in store X" (stale-trace recovery, flush sweeps) without a table scan.
CREATE INDEX build_trace_chunks_data_store_build_id ON build_trace_chunks (data_store, build_id);

-- One row per archived log (kind `trace`): its object, size, checksums and expiry.
CREATE TABLE job_artifacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    build_id    INTEGER NOT NULL REFERENCES builds (id),
    kind        TEXT NOT NULL DEFAULT 'trace',
    object_path TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    crc32       INTEGER NOT NULL CHECK (crc32 BETWEEN 0 AND 4294967295),
    sha256      TEXT NOT NULL,
    expire_at   INTEGER,
    locked      INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)),
    created_at  INTEGER NOT NULL,
    UNIQUE (build_id, kind)
) STRICT;

-- Artifact expiry walks expired artifacts in (expire_at, id) order, batch by batch.
CREATE INDEX job_artifacts_expire_at ON job_artifacts (expire_at, id);

-- Archiving state of a build's log: checksums, whether they agree, the `invalid` flag, attempts.
CREATE TABLE build_trace_metadata (
    build_id                 INTEGER PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    checksum                 INTEGER CHECK (checksum BETWEEN 0 AND 4294967295),
    remote_checksum          INTEGER CHECK (remote_checksum BETWEEN 0 AND 4294967295),
    checksum_valid           INTEGER CHECK (checksum_valid IN (0, 1)),
    archival_attempts        INTEGER NOT NULL DEFAULT 0 CHECK (archival_attempts >= 0),
    last_archival_attempt_at INTEGER,
    archived_at              INTEGER,
    trace_artifact_id        INTEGER REFERENCES job_artifacts (id) ON DELETE SET NULL,
    invalid                  INTEGER NOT NULL DEFAULT 0 CHECK (invalid IN (0, 1))
) STRICT;

-- The runner's final `PUT /jobs/:id` while its live chunks are being flushed; `trace_checksum`
-- is the runner's CRC32, parsed. `exit_code` is held to PostgreSQL's 32-bit INTEGER range.
CREATE TABLE build_pending_states (
    build_id       INTEGER PRIMARY KEY REFERENCES builds (id) ON DELETE CASCADE,
    state          TEXT NOT NULL CHECK (state IN ('success', 'failed', 'canceled')),
    failure_reason TEXT,
    exit_code      INTEGER CHECK (exit_code BETWEEN -2147483648 AND 2147483647),
    trace_checksum INTEGER CHECK (trace_checksum BETWEEN 0 AND 4294967295),
    trace_bytesize INTEGER CHECK (trace_bytesize >= 0),
    created_at     INTEGER NOT NULL
) STRICT;
