-- Stuck builds and partial logs (shared/DESIGN.md §6). Mirrored for SQLite in
-- migrations/sqlite/0006_stuck_builds_partial_traces.sql: keep the two in step.

-- The last PATCH or PUT of a running build that the database knows of (ms). The embedded live
-- store (SQL) writes it in the append's own `UPDATE builds`, so it is exact there; with Redis
-- live chunks the append writes no row, and the stuck-build sweep copies the live store's
-- last-write time here when it finds a build it suspected still active (once per timeout per
-- build at most). A running build whose activity, here and in the live store, is older than
-- `BUILDLOGS_STUCK_TIMEOUT` is failed with `stuck_or_timeout_failure`.
ALTER TABLE builds ADD COLUMN activity_at BIGINT NOT NULL DEFAULT 0;
UPDATE builds SET activity_at = created_at;

-- The sweep's walk: running builds, least recently active first. Partial, so it holds only the
-- builds running now (a few thousand), never the finished history.
CREATE INDEX builds_running_activity ON builds (activity_at, id) WHERE status = 'running';

-- Bytes of the log that were lost for good before it was archived (a live chunk whose key
-- expired or was lost, no copy anywhere): the archive holds a marker line in their place. 0 for
-- a complete log; more makes the trace partial (job JSON `trace.partial`, `trace.lost_bytes`).
ALTER TABLE build_trace_metadata
    ADD COLUMN lost_bytes BIGINT NOT NULL DEFAULT 0 CHECK (lost_bytes >= 0);
