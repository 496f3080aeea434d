-- The dashboard's builds list on SQLite: the same indexes as
-- migrations/postgres/0006_builds_list.sql (read its comments; keep the two in step).
CREATE INDEX builds_running_id ON builds (id) WHERE status = 'running';
CREATE INDEX builds_finished_id ON builds (id) WHERE status <> 'running';
CREATE INDEX build_trace_metadata_partial ON build_trace_metadata (build_id) WHERE lost_bytes > 0;
CREATE INDEX build_trace_metadata_mismatch ON build_trace_metadata (build_id)
    WHERE checksum_valid = false;
