-- Outage recovery on SQLite: the same columns, indexes and tables as
-- migrations/postgres/0002_outage_recovery.sql (read its comments; keep the two in step).

ALTER TABLE builds ADD COLUMN trace_archived_at INTEGER;
UPDATE builds SET trace_archived_at = (
    SELECT a.created_at FROM job_artifacts a WHERE a.build_id = builds.id AND a.kind = 'trace')
WHERE EXISTS (SELECT 1 FROM job_artifacts a WHERE a.build_id = builds.id AND a.kind = 'trace');
CREATE INDEX builds_unarchived_traces ON builds (id)
    WHERE finished_at IS NOT NULL AND trace_archived_at IS NULL;

CREATE TABLE cursors (
    name       TEXT PRIMARY KEY NOT NULL,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE circuit_breakers (
    name       TEXT PRIMARY KEY NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('closed', 'open')),
    reason     TEXT,
    changed_at INTEGER NOT NULL
) STRICT;
