-- Outage recovery (shared/DESIGN.md §6): what stale-trace recovery walks and where the object
-- store's circuit breaker keeps its state. Mirrored for SQLite in
-- migrations/sqlite/0003_outage_recovery.sql: keep the two in step.

-- When the build's log was archived (the archive transaction sets it). Stale-trace recovery
-- walks finished builds whose log is not archived, in id order from a cursor, through the
-- partial index below: it holds only those builds, so a batch costs the same whether 26,811 or
-- none of a million builds are stale (GitLab.com's unindexed first batch took 1,507 s).
ALTER TABLE builds ADD COLUMN trace_archived_at BIGINT;
UPDATE builds SET trace_archived_at = (
    SELECT a.created_at FROM job_artifacts a WHERE a.build_id = builds.id AND a.kind = 'trace')
WHERE EXISTS (SELECT 1 FROM job_artifacts a WHERE a.build_id = builds.id AND a.kind = 'trace');
CREATE INDEX builds_unarchived_traces ON builds (id)
    WHERE finished_at IS NOT NULL AND trace_archived_at IS NULL;

-- Named positions of long walks (stale-trace recovery's cursor over build ids), so a walk
-- resumes where it stopped across restarts.
CREATE TABLE cursors (
    name       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Circuit breakers shared by every process (today one: `object_store`): `open` while the
-- dependency is down, since `changed_at`; `reason` is the error that opened it.
CREATE TABLE circuit_breakers (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (state IN ('closed', 'open')),
    reason     TEXT,
    changed_at BIGINT NOT NULL
);
