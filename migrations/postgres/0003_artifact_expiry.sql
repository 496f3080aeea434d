-- Artifact expiry (shared/DESIGN.md §6): what the expiry run walks and the lease that keeps two
-- runs from overlapping. Mirrored for SQLite in migrations/sqlite/0004_artifact_expiry.sql: keep
-- the two in step.

-- The expiry walk: artifacts that may be deleted (an `expire_at`, not `locked`), oldest
-- `expire_at` first. Partial, so neither the artifacts kept forever (`expire_at` NULL, every
-- trace by default) nor locked ones are in it: a batch costs the same however many of those
-- there are (a plain (expire_at, id) index would step over every locked, expired artifact on
-- every batch of every run). It replaces 0001's `job_artifacts_expire_at`, which nothing else
-- reads. The expiry query repeats the predicate's `locked = false` word for word, so the
-- planners match it (PostgreSQL also infers `expire_at IS NOT NULL` from `expire_at <= $1`).
DROP INDEX job_artifacts_expire_at;
CREATE INDEX job_artifacts_expirable ON job_artifacts (expire_at, id)
    WHERE expire_at IS NOT NULL AND locked = false;

-- Named exclusive leases (GitLab's `Gitlab::ExclusiveLease`, in the database rather than Redis
-- so the domain needs no Redis): `holder` (a random id per run) holds `name` until
-- `expires_at` (ms since the epoch, the application's clock). Taking is one upsert that
-- succeeds only if the row is absent, expired or already the taker's (a renewal); releasing
-- deletes the row only for its holder. Today one: `artifact_expiry`.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
