-- Job queue of the embedded broker (src/sqlite/mod.rs); mirrors the Redis broker's keys.
-- `IF NOT EXISTS`: SQLite files made before the job system had migrations of its own (when
-- buildlogs applied this file as its own 0001) already hold these tables.

-- Every queue that ever had a job or a limit, its global concurrency limit and lifetime counters.
CREATE TABLE IF NOT EXISTS job_queues (
    queue             TEXT PRIMARY KEY NOT NULL,
    concurrency_limit INTEGER,
    processed         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    dead              INTEGER NOT NULL DEFAULT 0
);

-- One row per job, whatever its state:
--   ready      waiting for a worker, FIFO by `seq` (a release takes a seq below the head)
--   scheduled  waiting for `run_at_ms` (first run, retry or snooze); fetch promotes due ones
--   running    leased until `lease_until_ms`, `attempt` identifies the delivery
--   dead       buried at `died_at_ms` with `error`
CREATE TABLE IF NOT EXISTS jobs (
    id             TEXT PRIMARY KEY NOT NULL,
    queue          TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('ready', 'scheduled', 'running', 'dead')),
    seq            INTEGER NOT NULL DEFAULT 0,
    attempt        INTEGER NOT NULL,
    max_attempts   INTEGER NOT NULL,
    dedup_mode     TEXT NOT NULL,
    dedup_key      TEXT NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    payload        TEXT NOT NULL,
    run_at_ms      INTEGER,
    lease_until_ms INTEGER,
    died_at_ms     INTEGER,
    error          TEXT
);

-- One partial index per state, so fetch, promotion, reaping, trimming and the counts only touch
-- the rows they are about (queries name the state literally so the planner can use them).
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, seq) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS jobs_scheduled ON jobs (queue, run_at_ms, id) WHERE state = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (queue, lease_until_ms, id) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (queue, died_at_ms, id) WHERE state = 'dead';

-- Held dedup keys; a key whose `expires_at_ms` has passed is free.
CREATE TABLE IF NOT EXISTS job_dedup (
    queue         TEXT NOT NULL,
    dedup_key     TEXT NOT NULL,
    holder_id     TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, dedup_key)
) WITHOUT ROWID;

-- The one pending rerun of a running `reschedule_once` job: the first duplicate's envelope
-- (Envelope::encode), enqueued when the holder completes or dies, unless it expired first.
CREATE TABLE IF NOT EXISTS job_reruns (
    queue         TEXT NOT NULL,
    holder_id     TEXT NOT NULL,
    envelope      TEXT NOT NULL,
    dedup_ttl_ms  INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, holder_id)
) WITHOUT ROWID;

-- Last fired tick per cron schedule.
CREATE TABLE IF NOT EXISTS job_cron (
    queue        TEXT NOT NULL,
    schedule     TEXT NOT NULL,
    last_tick_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, schedule)
) WITHOUT ROWID;
