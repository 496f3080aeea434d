-- Stuck builds and partial logs on SQLite: the same columns and index as
-- migrations/postgres/0005_stuck_builds_partial_traces.sql (read its comments; keep the two in
-- step).

ALTER TABLE builds ADD COLUMN activity_at INTEGER NOT NULL DEFAULT 0;
UPDATE builds SET activity_at = created_at;
CREATE INDEX builds_running_activity ON builds (activity_at, id) WHERE status = 'running';

ALTER TABLE build_trace_metadata
    ADD COLUMN lost_bytes INTEGER NOT NULL DEFAULT 0 CHECK (lost_bytes >= 0);
