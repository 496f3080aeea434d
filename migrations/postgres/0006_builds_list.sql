-- The dashboard's builds list (`GET /admin/api/builds`), newest first by id, one page at a time
-- (`id < before`). Mirrored for SQLite in migrations/sqlite/0007_builds_list.sql: keep the two in
-- step. "All builds" walks the primary key; each filter has a partial index holding only its
-- rows, so every page is an index range scan of `limit` rows whatever the history holds.
CREATE INDEX builds_running_id ON builds (id) WHERE status = 'running';
CREATE INDEX builds_finished_id ON builds (id) WHERE status <> 'running';
-- Partial logs (bytes lost before the archive) and checksum mismatches: rare, so small.
CREATE INDEX build_trace_metadata_partial ON build_trace_metadata (build_id) WHERE lost_bytes > 0;
CREATE INDEX build_trace_metadata_mismatch ON build_trace_metadata (build_id)
    WHERE checksum_valid = false;
