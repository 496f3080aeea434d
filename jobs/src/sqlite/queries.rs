//! The SQL of the SQLite broker, one statement per const.
//!
//! Every query names the job state literally (`state = 'ready'`), so SQLite can use the partial
//! index of that state (see `migrations/sqlite/0001_job_queue.sql`). Parameters are numbered;
//! `?1` is the queue wherever there is one.

/// The columns [`super::JobRow`] reads.
macro_rules! job_cols {
    () => {
        "id, queue, attempt, max_attempts, dedup_mode, dedup_key, enqueued_at_ms, payload, seq, run_at_ms, died_at_ms, error"
    };
}

/// The seq one past the tail of `?1`'s ready list.
macro_rules! tail_seq {
    () => {
        "(SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs WHERE queue = ?1 AND state = 'ready')"
    };
}

// Queues, limits, counters.
pub const REGISTER_QUEUE: &str =
    "INSERT INTO job_queues (queue) VALUES (?1) ON CONFLICT (queue) DO NOTHING";
pub const SET_LIMIT: &str = "INSERT INTO job_queues (queue, concurrency_limit) VALUES (?1, ?2) \
     ON CONFLICT (queue) DO UPDATE SET concurrency_limit = excluded.concurrency_limit";
pub const GET_LIMIT: &str = "SELECT concurrency_limit FROM job_queues WHERE queue = ?1";
pub const ADD_COUNTERS: &str = "INSERT INTO job_queues (queue, processed, failed, dead) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (queue) DO UPDATE SET processed = processed + excluded.processed, \
     failed = failed + excluded.failed, dead = dead + excluded.dead";
pub const QUEUES: &str = "SELECT queue FROM job_queues ORDER BY queue";

// Dedup keys and reruns (?1 queue).
pub const DEDUP_HOLDER: &str =
    "SELECT holder_id FROM job_dedup WHERE queue = ?1 AND dedup_key = ?2 AND expires_at_ms > ?3";
pub const TAKE_KEY: &str = "INSERT INTO job_dedup (queue, dedup_key, holder_id, expires_at_ms) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (queue, dedup_key) DO UPDATE SET holder_id = excluded.holder_id, expires_at_ms = excluded.expires_at_ms";
pub const RELEASE_KEY: &str =
    "DELETE FROM job_dedup WHERE queue = ?1 AND dedup_key = ?2 AND holder_id = ?3";
/// Stores a rerun unless an unexpired one is already pending (`SET NX`); ?6 = now.
pub const STORE_RERUN: &str = "INSERT INTO job_reruns (queue, holder_id, envelope, dedup_ttl_ms, expires_at_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (queue, holder_id) DO UPDATE SET envelope = excluded.envelope, \
     dedup_ttl_ms = excluded.dedup_ttl_ms, expires_at_ms = excluded.expires_at_ms WHERE job_reruns.expires_at_ms <= ?6";
pub const TAKE_RERUN: &str = "DELETE FROM job_reruns WHERE queue = ?1 AND holder_id = ?2 RETURNING envelope, dedup_ttl_ms, expires_at_ms";

// Storing jobs.
pub const IS_RUNNING: &str =
    "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?2 AND queue = ?1 AND state = 'running')";
pub const JOB_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1)";
/// ?3 is 'ready' or 'scheduled'; a scheduled job's seq is replaced when it is promoted.
pub const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (queue, id, state, attempt, max_attempts, dedup_mode, dedup_key, enqueued_at_ms, payload, run_at_ms, seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ",
    tail_seq!(),
    ")"
);

// Fetch.
pub const READY_TAIL: &str =
    "SELECT COALESCE(MAX(seq), 0) FROM jobs WHERE queue = ?1 AND state = 'ready'";
/// Moves up to ?4 due scheduled jobs (by run_at, then id) behind the ready tail ?3.
pub const PROMOTE_DUE: &str = "UPDATE jobs SET state = 'ready', seq = ?3 + due.rn FROM \
     (SELECT id, ROW_NUMBER() OVER (ORDER BY run_at_ms, id) AS rn FROM \
       (SELECT id, run_at_ms FROM jobs WHERE queue = ?1 AND state = 'scheduled' AND run_at_ms <= ?2 \
        ORDER BY run_at_ms, id LIMIT ?4)) AS due \
     WHERE jobs.id = due.id";
pub const RUNNING_COUNT: &str = "SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'running'";
/// Leases the ?2 first ready jobs until ?3 (RETURNING order is arbitrary: sort by seq).
pub const LEASE: &str = concat!(
    "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_until_ms = ?3 \
     WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 AND state = 'ready' ORDER BY seq LIMIT ?2) RETURNING ",
    job_cols!()
);

// Settling a delivery (?1 queue, ?2 id, ?3 attempt): each matches only the live delivery.
pub const COMPLETE: &str = "DELETE FROM jobs WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3 \
     RETURNING dedup_mode, dedup_key";
pub const RETRY: &str = "UPDATE jobs SET state = 'scheduled', run_at_ms = ?4, error = ?5, lease_until_ms = NULL \
     WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3";
pub const SNOOZE: &str = "UPDATE jobs SET state = 'scheduled', run_at_ms = ?4, attempt = attempt - 1, lease_until_ms = NULL \
     WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3";
/// Back to the *front* of the ready list, attempt not burnt.
pub const RELEASE: &str = "UPDATE jobs SET state = 'ready', attempt = attempt - 1, lease_until_ms = NULL, \
     seq = (SELECT COALESCE(MIN(seq), 1) - 1 FROM jobs WHERE queue = ?1 AND state = 'ready') \
     WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3";
/// Also used by the reaper (?4 died_at, ?5 error).
pub const BURY: &str = "UPDATE jobs SET state = 'dead', died_at_ms = ?4, error = ?5, lease_until_ms = NULL \
     WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3 RETURNING dedup_mode, dedup_key";
pub const EXTEND: &str = "UPDATE jobs SET lease_until_ms = ?4 \
     WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3";

// Reaper.
pub const EXPIRED: &str = "SELECT id, attempt, max_attempts FROM jobs \
     WHERE queue = ?1 AND state = 'running' AND lease_until_ms < ?2 ORDER BY lease_until_ms, id LIMIT ?3";
/// Back to the tail of the ready list; the lost delivery stays counted.
pub const REDELIVER: &str = concat!(
    "UPDATE jobs SET state = 'ready', lease_until_ms = NULL, seq = ",
    tail_seq!(),
    " WHERE queue = ?1 AND id = ?2 AND state = 'running' AND attempt = ?3"
);

// Stats (one statement, so one snapshot).
pub const STATS: &str = "SELECT \
     (SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'ready') \
       + (SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'scheduled' AND run_at_ms <= ?2), \
     (SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'scheduled' AND run_at_ms > ?2), \
     (SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'running'), \
     (SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'dead'), \
     (SELECT enqueued_at_ms FROM jobs WHERE queue = ?1 AND state = 'ready' ORDER BY seq LIMIT 1), \
     (SELECT concurrency_limit FROM job_queues WHERE queue = ?1), \
     (SELECT processed FROM job_queues WHERE queue = ?1), \
     (SELECT failed FROM job_queues WHERE queue = ?1)";

// Dead set.
pub const DEAD_LIST: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM jobs WHERE queue = ?1 AND state = 'dead' ORDER BY died_at_ms DESC, id DESC LIMIT ?2"
);
/// Next to run first: the `jobs_scheduled` index in order.
pub const SCHEDULED_LIST: &str = concat!(
    "SELECT ",
    job_cols!(),
    " FROM jobs WHERE queue = ?1 AND state = 'scheduled' ORDER BY run_at_ms, id LIMIT ?2"
);
pub const DEAD_RETRY: &str = concat!(
    "UPDATE jobs SET state = 'ready', attempt = 0, died_at_ms = NULL, error = NULL, seq = ",
    tail_seq!(),
    " WHERE queue = ?1 AND id = ?2 AND state = 'dead'"
);
/// Makes up to ?3 scheduled jobs of queue ?1 due at ?2, earliest first.
pub const RELEASE_SCHEDULED: &str = "UPDATE jobs SET run_at_ms = ?2 WHERE id IN \
     (SELECT id FROM jobs WHERE queue = ?1 AND state = 'scheduled' AND run_at_ms > ?2 \
      ORDER BY run_at_ms, id LIMIT ?3)";
pub const DEAD_DISCARD: &str = "DELETE FROM jobs WHERE queue = ?1 AND id = ?2 AND state = 'dead'";
pub const DEAD_COUNT: &str = "SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = 'dead'";
/// How many dead jobs died before ?2, counting at most ?3.
pub const DEAD_COUNT_BEFORE: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 'dead' AND died_at_ms < ?2 LIMIT ?3)";
pub const DEAD_DROP_OLDEST: &str = "DELETE FROM jobs WHERE id IN \
     (SELECT id FROM jobs WHERE queue = ?1 AND state = 'dead' ORDER BY died_at_ms, id LIMIT ?2)";

// Cron.
pub const CRON_LAST: &str = "SELECT last_tick_ms FROM job_cron WHERE queue = ?1 AND schedule = ?2";
pub const CRON_SET: &str = "INSERT INTO job_cron (queue, schedule, last_tick_ms) VALUES (?1, ?2, ?3) \
     ON CONFLICT (queue, schedule) DO UPDATE SET last_tick_ms = excluded.last_tick_ms";
