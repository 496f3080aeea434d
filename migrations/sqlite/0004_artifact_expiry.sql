-- Artifact expiry on SQLite: the same index and table as
-- migrations/postgres/0003_artifact_expiry.sql (read its comments; keep the two in step).
-- SQLite uses the partial index when the query repeats `locked = false` and constrains
-- `expire_at` with a comparison (which implies `expire_at IS NOT NULL`).

DROP INDEX job_artifacts_expire_at;
CREATE INDEX job_artifacts_expirable ON job_artifacts (expire_at, id)
    WHERE expire_at IS NOT NULL AND locked = false;

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
