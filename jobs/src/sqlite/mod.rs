//! The embedded broker (the default without Redis): the whole queue in one SQLite file.
//!
//! Observable semantics are those of [`RedisBroker`](super::redis::RedisBroker), the reference;
//! each operation below does what the Lua script of the same name does, in one transaction:
//! - `enqueue` applies dedup per job (a held, unexpired key makes a duplicate; with
//!   `reschedule_once`, a duplicate of a *running* holder stores the one pending rerun), then
//!   stores the job ready at the tail or scheduled at its `run_at_ms`;
//! - `fetch` first promotes up to [`PROMOTE_BATCH`] due scheduled jobs (by `run_at_ms`) behind the
//!   ready tail, then leases the head of the ready list FIFO within `limit - running` (a lease
//!   counts until it is reaped), burning one attempt per delivery and releasing
//!   `until_executing` keys;
//! - `ack` settles only the live delivery (`state = 'running'` with that attempt): complete
//!   deletes, retry/snooze reschedule, release puts the job at the *front* of the ready list,
//!   dead buries; completing or dying releases `until_executed` keys and enqueues a pending rerun;
//! - `reap_expired` re-delivers lost leases at the tail, or buries those on their last attempt.
//!
//! Storage (`migrations/sqlite/0001_job_queue.sql`): one `jobs` row per job with the envelope's
//! fields as columns and a `state`; a partial index per state keeps fetch, promotion, reaping and
//! trimming O(log n) per job in the backlog (the counts of `stats` walk one index range each).
//!
//! Nothing per job outlives the job: its `jobs` row is deleted when it completes or is
//! discarded from the dead set (or trimmed); its `job_dedup` row when it is fetched
//! (`until_executing`) or completes or dies; its `job_reruns` row is taken when it completes or
//! dies. `job_queues` (limit, counters) and `job_cron` (last tick) are per queue and stay.
//!
//! Guarantees: every multi-statement operation is one `BEGIN IMMEDIATE` transaction, so writers
//! (pooled connections or other processes on the same file) queue on `busy_timeout` instead of
//! failing to upgrade a read lock, and each operation is atomic like a Lua script. Batches are
//! bounded by the caller (`max`, `limit`) or by [`PROMOTE_BATCH`] / [`TRIM_BUDGET`].
//!
//! Differences from Redis: dedup keys and reruns expire on the caller's clock (`now_ms`), not on
//! a server clock; `stats` counts due scheduled jobs not yet promoted as ready (Redis counts them
//! as scheduled until a fetch promotes them); job ids are unique, so enqueueing an id that is
//! still stored (in any state) is a `Duplicate` where Redis would store a second copy.

pub mod migration_lock;
mod queries;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use sqlx::{Sqlite, Transaction};

pub use self::migration_lock::{MigrationLock, lock_for_migrations};
use self::queries as q;
use super::broker::{
    Ack, Broker, BrokerError, DeadJob, DeadSetBounds, Delivery, EnqueueOutcome, Lease, NewJob,
    QueueStats, ReapReport, ScheduledJob,
};
use super::dedup::DedupMode;
use super::envelope::Envelope;

/// Due scheduled jobs one fetch promotes at most (as in the Redis broker).
pub const PROMOTE_BATCH: i64 = 1000;

/// Dead jobs one `dead_trim` call removes at most (as in the Redis broker).
pub const TRIM_BUDGET: i64 = 1000;

/// SQLite has one writer at a time; a few connections let reads (stats) run beside it.
const MAX_CONNECTIONS: u32 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the queue's applied migrations are recorded (sqlx's default table is the application's).
const MIGRATIONS_TABLE: &str = "_buildlogs_jobs_migrations";

pub struct SqliteBroker {
    pool: SqlitePool,
}

impl SqliteBroker {
    /// Opens (creating if missing) the database at `url` (`sqlite://path` or `sqlite::memory:`)
    /// in WAL mode and runs the migrations. An in-memory database lives in one pooled
    /// connection that is never closed.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let mut options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT);
        let mut pool = SqlitePoolOptions::new();
        if in_memory {
            pool = pool
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else {
            options = options.journal_mode(SqliteJournalMode::Wal);
            pool = pool.max_connections(MAX_CONNECTIONS);
        }
        // Opening a new file (the switch to WAL) and migrating it, one process at a time.
        let path = options.get_filename().to_owned();
        let _lock = if in_memory || migration_lock::is_in_memory(&path) {
            None
        } else {
            Some(migration_lock::lock_file(path).await?)
        };
        let broker = Self::new(pool.connect_with(options).await?);
        broker.run_migrations().await?;
        Ok(broker)
    }

    /// Uses an existing pool; call [`migrate`](Self::migrate) before the first operation.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Creates the queue's tables (`migrations/sqlite`, idempotent). Their versions are kept in a
    /// table of their own, so an application can keep its own migrations in the same file.
    /// One process migrates a file at a time ([`migration_lock`]).
    pub async fn migrate(&self) -> Result<(), BrokerError> {
        let _lock = lock_for_migrations(&self.pool).await?;
        self.run_migrations().await
    }

    /// The migrations, with the file's migration lock held by the caller.
    async fn run_migrations(&self) -> Result<(), BrokerError> {
        let mut migrator = sqlx::migrate!("migrations/sqlite");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// A write transaction holding the database's write lock from its first statement.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, BrokerError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A fetch: promotes due scheduled jobs, then leases up to `max` within the queue's limit,
    /// or `max + ahead` when it has none (see [`Broker::ack_and_fetch`]).
    async fn lease_jobs(
        &self,
        queue: &str,
        max: usize,
        ahead: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        let mut tx = self.begin().await?;
        let tail: i64 = sqlx::query_scalar(q::READY_TAIL)
            .bind(queue)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(q::PROMOTE_DUE)
            .bind(queue)
            .bind(now_ms)
            .bind(tail)
            .bind(PROMOTE_BATCH)
            .execute(&mut *tx)
            .await?;
        let mut max = int(max);
        let limit: Option<Option<i64>> = sqlx::query_scalar(q::GET_LIMIT)
            .bind(queue)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(limit) = limit.flatten() {
            let running: i64 = sqlx::query_scalar(q::RUNNING_COUNT)
                .bind(queue)
                .fetch_one(&mut *tx)
                .await?;
            max = max.min(limit - running);
        } else {
            max = max.saturating_add(int(ahead));
        }
        let lease_until_ms = now_ms.saturating_add(millis(lease));
        let mut rows: Vec<JobRow> = Vec::new();
        if max > 0 {
            rows = sqlx::query_as(q::LEASE)
                .bind(queue)
                .bind(max)
                .bind(lease_until_ms)
                .fetch_all(&mut *tx)
                .await?;
            rows.sort_by_key(|row| row.seq);
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope = row.into_envelope()?;
            if envelope.dedup_mode.releases_on_start() {
                sqlx::query(q::RELEASE_KEY)
                    .bind(queue)
                    .bind(&envelope.dedup_key)
                    .bind(&envelope.id)
                    .execute(&mut *tx)
                    .await?;
            }
            // SQLite identifies a delivery by (id, attempt); the token is unused.
            let lease = Lease {
                id: envelope.id.clone(),
                attempt: envelope.attempt,
                token: String::new(),
            };
            out.push(Delivery {
                envelope,
                lease,
                lease_until_ms,
            });
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// A `jobs` row as read back: the envelope plus what the dead set and fetch ordering need.
#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    queue: String,
    attempt: i64,
    max_attempts: i64,
    dedup_mode: String,
    dedup_key: String,
    enqueued_at_ms: i64,
    payload: String,
    seq: i64,
    run_at_ms: Option<i64>,
    died_at_ms: Option<i64>,
    error: Option<String>,
}

impl JobRow {
    fn into_envelope(self) -> Result<Envelope, BrokerError> {
        Ok(Envelope {
            attempt: to_u32(&self.queue, "attempt", self.attempt)?,
            max_attempts: to_u32(&self.queue, "max_attempts", self.max_attempts)?,
            dedup_mode: parse_mode(&self.queue, &self.dedup_mode)?,
            id: self.id,
            dedup_key: self.dedup_key,
            enqueued_at_ms: self.enqueued_at_ms,
            queue: self.queue,
            payload: self.payload,
        })
    }
}

fn corrupt(queue: &str, detail: String) -> BrokerError {
    BrokerError::Corrupt {
        queue: queue.to_owned(),
        detail,
    }
}

fn to_u32(queue: &str, field: &str, value: i64) -> Result<u32, BrokerError> {
    u32::try_from(value).map_err(|_| corrupt(queue, format!("bad {field} {value}")))
}

fn parse_mode(queue: &str, code: &str) -> Result<DedupMode, BrokerError> {
    DedupMode::from_code(code).ok_or_else(|| corrupt(queue, format!("bad dedup mode {code:?}")))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `q::STATS`: ready, scheduled, running, dead, head's enqueued_at, limit, processed, failed.
type StatsRow = (
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Lifetime counters added by one operation.
#[derive(Default)]
struct Tally {
    processed: i64,
    failed: i64,
    dead: i64,
}

impl Tally {
    async fn save(&self, conn: &mut SqliteConnection, queue: &str) -> Result<(), BrokerError> {
        if self.processed + self.failed + self.dead > 0 {
            sqlx::query(q::ADD_COUNTERS)
                .bind(queue)
                .bind(self.processed)
                .bind(self.failed)
                .bind(self.dead)
                .execute(conn)
                .await?;
        }
        Ok(())
    }
}

/// Stores one job, applying dedup (lib.lua's `enqueue_one`): ready now unless `run_at_ms` is
/// later than `now_ms`.
async fn enqueue_one(
    conn: &mut SqliteConnection,
    env: &Envelope,
    run_at_ms: i64,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<EnqueueOutcome, BrokerError> {
    let queue = env.queue.as_str();
    let expires_at_ms = now_ms.saturating_add(ttl_ms);
    if env.dedup_mode != DedupMode::None {
        let holder: Option<String> = sqlx::query_scalar(q::DEDUP_HOLDER)
            .bind(queue)
            .bind(&env.dedup_key)
            .bind(now_ms)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(holder) = holder {
            if env.dedup_mode == DedupMode::UntilExecutedRescheduleOnce {
                let running: i64 = sqlx::query_scalar(q::IS_RUNNING)
                    .bind(queue)
                    .bind(&holder)
                    .fetch_one(&mut *conn)
                    .await?;
                if running != 0 {
                    // Only the first duplicate is kept; every one of them reports RescheduledOnce.
                    sqlx::query(q::STORE_RERUN)
                        .bind(queue)
                        .bind(&holder)
                        .bind(env.encode())
                        .bind(ttl_ms)
                        .bind(expires_at_ms)
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await?;
                    return Ok(EnqueueOutcome::RescheduledOnce);
                }
            }
            return Ok(EnqueueOutcome::Duplicate);
        }
    }
    let exists: i64 = sqlx::query_scalar(q::JOB_EXISTS)
        .bind(&env.id)
        .fetch_one(&mut *conn)
        .await?;
    if exists != 0 {
        return Ok(EnqueueOutcome::Duplicate);
    }
    if env.dedup_mode != DedupMode::None {
        sqlx::query(q::TAKE_KEY)
            .bind(queue)
            .bind(&env.dedup_key)
            .bind(&env.id)
            .bind(expires_at_ms)
            .execute(&mut *conn)
            .await?;
    }
    let (state, run_at) = if run_at_ms > now_ms {
        ("scheduled", Some(run_at_ms))
    } else {
        ("ready", None)
    };
    sqlx::query(q::INSERT_JOB)
        .bind(queue)
        .bind(&env.id)
        .bind(state)
        .bind(i64::from(env.attempt))
        .bind(i64::from(env.max_attempts))
        .bind(env.dedup_mode.code().to_string())
        .bind(&env.dedup_key)
        .bind(env.enqueued_at_ms)
        .bind(&env.payload)
        .bind(run_at)
        .execute(&mut *conn)
        .await?;
    Ok(EnqueueOutcome::Enqueued)
}

/// A job finished for good (completed or dead): release its `until_executed` key and enqueue
/// the rerun a `reschedule_once` duplicate asked for (lib.lua's `finish`).
async fn finish(
    conn: &mut SqliteConnection,
    queue: &str,
    id: &str,
    mode: &str,
    key: &str,
    now_ms: i64,
) -> Result<(), BrokerError> {
    let mode = parse_mode(queue, mode)?;
    if matches!(
        mode,
        DedupMode::UntilExecuted | DedupMode::UntilExecutedRescheduleOnce
    ) {
        sqlx::query(q::RELEASE_KEY)
            .bind(queue)
            .bind(key)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    if mode == DedupMode::UntilExecutedRescheduleOnce {
        let rerun: Option<(String, i64, i64)> = sqlx::query_as(q::TAKE_RERUN)
            .bind(queue)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some((raw, ttl_ms, expires_at_ms)) = rerun
            && expires_at_ms > now_ms
        {
            let env = Envelope::decode(&raw).map_err(|e| corrupt(queue, e.to_string()))?;
            enqueue_one(conn, &env, now_ms, ttl_ms, now_ms).await?;
        }
    }
    Ok(())
}

/// Settles one delivery; a stale one (reaped, maybe re-delivered) matches no row and is skipped.
async fn settle(
    conn: &mut SqliteConnection,
    queue: &str,
    ack: &Ack,
    now_ms: i64,
    tally: &mut Tally,
) -> Result<(), BrokerError> {
    match ack {
        Ack::Complete {
            lease: Lease { id, attempt, .. },
        } => {
            let row: Option<(String, String)> = sqlx::query_as(q::COMPLETE)
                .bind(queue)
                .bind(id)
                .bind(i64::from(*attempt))
                .fetch_optional(&mut *conn)
                .await?;
            if let Some((mode, key)) = row {
                tally.processed += 1;
                finish(conn, queue, id, &mode, &key, now_ms).await?;
            }
        }
        Ack::Retry {
            lease: Lease { id, attempt, .. },
            run_at_ms,
            error,
        } => {
            let done = sqlx::query(q::RETRY)
                .bind(queue)
                .bind(id)
                .bind(i64::from(*attempt))
                .bind(*run_at_ms)
                .bind(error)
                .execute(&mut *conn)
                .await?;
            tally.failed += i64::try_from(done.rows_affected()).unwrap_or(0);
        }
        Ack::Snooze {
            lease: Lease { id, attempt, .. },
            run_at_ms,
        } => {
            sqlx::query(q::SNOOZE)
                .bind(queue)
                .bind(id)
                .bind(i64::from(*attempt))
                .bind(*run_at_ms)
                .execute(&mut *conn)
                .await?;
        }
        Ack::Release {
            lease: Lease { id, attempt, .. },
        } => {
            sqlx::query(q::RELEASE)
                .bind(queue)
                .bind(id)
                .bind(i64::from(*attempt))
                .execute(&mut *conn)
                .await?;
        }
        Ack::Dead {
            lease: Lease { id, attempt, .. },
            error,
        } => {
            if bury(conn, queue, id, i64::from(*attempt), error, now_ms).await? {
                tally.failed += 1;
                tally.dead += 1;
            }
        }
    }
    Ok(())
}

/// Moves a live delivery to the dead set and finishes it; false if it is not live.
async fn bury(
    conn: &mut SqliteConnection,
    queue: &str,
    id: &str,
    attempt: i64,
    error: &str,
    now_ms: i64,
) -> Result<bool, BrokerError> {
    let row: Option<(String, String)> = sqlx::query_as(q::BURY)
        .bind(queue)
        .bind(id)
        .bind(attempt)
        .bind(now_ms)
        .bind(error)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((mode, key)) = row else {
        return Ok(false);
    };
    finish(conn, queue, id, &mode, &key, now_ms).await?;
    Ok(true)
}

#[async_trait]
impl Broker for SqliteBroker {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        now_ms: i64,
    ) -> Result<Vec<EnqueueOutcome>, BrokerError> {
        for job in &jobs {
            job.envelope.validate()?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let mut registered: Vec<&str> = Vec::new();
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let env = &job.envelope;
            if !registered.contains(&env.queue.as_str()) {
                sqlx::query(q::REGISTER_QUEUE)
                    .bind(&env.queue)
                    .execute(&mut *tx)
                    .await?;
                registered.push(&env.queue);
            }
            let ttl_ms = millis(job.dedup_ttl).max(1);
            outcomes
                .push(enqueue_one(&mut tx, env, job.run_at_ms.unwrap_or(0), ttl_ms, now_ms).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn fetch(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.lease_jobs(queue, max, 0, lease, now_ms).await
    }

    async fn ack_and_fetch(
        &self,
        queue: &str,
        acks: Vec<Ack>,
        max: usize,
        ahead: usize,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.ack(queue, acks, now_ms).await?;
        self.lease_jobs(queue, max, ahead, lease, now_ms).await
    }

    async fn ack(&self, queue: &str, acks: Vec<Ack>, now_ms: i64) -> Result<(), BrokerError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut tally = Tally::default();
        for ack in &acks {
            settle(&mut tx, queue, ack, now_ms, &mut tally).await?;
        }
        tally.save(&mut tx, queue).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn extend_leases(
        &self,
        queue: &str,
        leases: &[Lease],
        lease: Duration,
        now_ms: i64,
    ) -> Result<(), BrokerError> {
        if leases.is_empty() {
            return Ok(());
        }
        let deadline = now_ms.saturating_add(millis(lease));
        let mut tx = self.begin().await?;
        for Lease { id, attempt, .. } in leases {
            // Matches only a delivery not yet reaped: a lost lease stays lost.
            sqlx::query(q::EXTEND)
                .bind(queue)
                .bind(id)
                .bind(i64::from(*attempt))
                .bind(deadline)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reap_expired(
        &self,
        queue: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<ReapReport, BrokerError> {
        let mut tx = self.begin().await?;
        let expired: Vec<(String, i64, i64)> = sqlx::query_as(q::EXPIRED)
            .bind(queue)
            .bind(now_ms)
            .bind(int(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut report = ReapReport::default();
        for (id, attempt, max_attempts) in expired {
            if attempt >= max_attempts {
                let error = format!(
                    "worker lost during attempt {attempt} of {max_attempts} (lease expired)"
                );
                bury(&mut tx, queue, &id, attempt, &error, now_ms).await?;
                report.dead += 1;
            } else {
                sqlx::query(q::REDELIVER)
                    .bind(queue)
                    .bind(&id)
                    .bind(attempt)
                    .execute(&mut *tx)
                    .await?;
                report.redelivered += 1;
            }
        }
        let dead = i64::try_from(report.dead).unwrap_or(i64::MAX);
        Tally {
            processed: 0,
            failed: dead,
            dead,
        }
        .save(&mut tx, queue)
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<(), BrokerError> {
        sqlx::query(q::SET_LIMIT)
            .bind(queue)
            .bind(limit.map(i64::from))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<String>, BrokerError> {
        Ok(sqlx::query_scalar(q::QUEUES).fetch_all(&self.pool).await?)
    }

    async fn stats(&self, queue: &str, now_ms: i64) -> Result<QueueStats, BrokerError> {
        let (ready, scheduled, running, dead, head, limit, processed, failed): StatsRow =
            sqlx::query_as(q::STATS)
                .bind(queue)
                .bind(now_ms)
                .fetch_one(&self.pool)
                .await?;
        Ok(QueueStats {
            queue: queue.to_owned(),
            ready: count(ready),
            scheduled: count(scheduled),
            running: count(running),
            dead: count(dead),
            limit: limit.map(|n| to_u32(queue, "limit", n)).transpose()?,
            latency_ms: head.map_or(0, |enqueued_at_ms| (now_ms - enqueued_at_ms).max(0)),
            processed: processed.map_or(0, count),
            failed: failed.map_or(0, count),
        })
    }

    async fn dead_list(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, BrokerError> {
        let rows: Vec<JobRow> = sqlx::query_as(q::DEAD_LIST)
            .bind(queue)
            .bind(int(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|mut row| {
                let died_at_ms = row.died_at_ms.unwrap_or(0);
                let error = row.error.take().unwrap_or_default();
                Ok(DeadJob {
                    envelope: row.into_envelope()?,
                    died_at_ms,
                    error,
                })
            })
            .collect()
    }

    async fn scheduled_list(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<ScheduledJob>, BrokerError> {
        let rows: Vec<JobRow> = sqlx::query_as(q::SCHEDULED_LIST)
            .bind(queue)
            .bind(int(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|mut row| {
                let run_at_ms = row.run_at_ms.unwrap_or(0);
                let last_error = row.error.take();
                Ok(ScheduledJob {
                    envelope: row.into_envelope()?,
                    run_at_ms,
                    last_error,
                })
            })
            .collect()
    }

    async fn dead_retry(&self, queue: &str, id: &str, _now_ms: i64) -> Result<bool, BrokerError> {
        // Like Redis: back to the ready tail with a fresh attempt count, no dedup key taken.
        let done = sqlx::query(q::DEAD_RETRY)
            .bind(queue)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn dead_discard(&self, queue: &str, id: &str) -> Result<bool, BrokerError> {
        let done = sqlx::query(q::DEAD_DISCARD)
            .bind(queue)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_scheduled(
        &self,
        queue: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        let done = sqlx::query(q::RELEASE_SCHEDULED)
            .bind(queue)
            .bind(now_ms)
            .bind(i64::try_from(max).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn dead_trim(
        &self,
        queue: &str,
        bounds: DeadSetBounds,
        now_ms: i64,
    ) -> Result<u64, BrokerError> {
        let cutoff = now_ms.saturating_sub(millis(bounds.max_age));
        let keep = i64::try_from(bounds.max_jobs).unwrap_or(i64::MAX);
        let mut tx = self.begin().await?;
        // Too old first (within the budget), then the oldest beyond `keep` with what is left.
        let old: i64 = sqlx::query_scalar(q::DEAD_COUNT_BEFORE)
            .bind(queue)
            .bind(cutoff)
            .bind(TRIM_BUDGET)
            .fetch_one(&mut *tx)
            .await?;
        let total: i64 = sqlx::query_scalar(q::DEAD_COUNT)
            .bind(queue)
            .fetch_one(&mut *tx)
            .await?;
        let drop = old + (total - old - keep).min(TRIM_BUDGET - old).max(0);
        let mut removed = 0;
        if drop > 0 {
            removed = sqlx::query(q::DEAD_DROP_OLDEST)
                .bind(queue)
                .bind(drop)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn cron_fire(
        &self,
        schedule: &str,
        tick_ms: i64,
        job: NewJob,
        now_ms: i64,
    ) -> Result<bool, BrokerError> {
        job.envelope.validate()?;
        super::broker::validate_schedule_name(schedule)?;
        let queue = job.envelope.queue.as_str();
        let mut tx = self.begin().await?;
        sqlx::query(q::REGISTER_QUEUE)
            .bind(queue)
            .execute(&mut *tx)
            .await?;
        let last: Option<i64> = sqlx::query_scalar(q::CRON_LAST)
            .bind(queue)
            .bind(schedule)
            .fetch_optional(&mut *tx)
            .await?;
        // As in Redis, "never fired" reads as -1.
        let fired = tick_ms > last.unwrap_or(-1);
        if fired {
            sqlx::query(q::CRON_SET)
                .bind(queue)
                .bind(schedule)
                .bind(tick_ms)
                .execute(&mut *tx)
                .await?;
            let ttl_ms = millis(job.dedup_ttl).max(1);
            enqueue_one(
                &mut tx,
                &job.envelope,
                job.run_at_ms.unwrap_or(0),
                ttl_ms,
                now_ms,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(fired)
    }

    async fn cron_last(&self, schedule: &str, queue: &str) -> Result<Option<i64>, BrokerError> {
        Ok(sqlx::query_scalar(q::CRON_LAST)
            .bind(queue)
            .bind(schedule)
            .fetch_optional(&self.pool)
            .await?)
    }
}
