//! Live chunks in the SQL database (GitLab's `database` chunk store): the embedded default's
//! live store (SQLite), and the same code on PostgreSQL for the outage fallback.
//!
//! Duties:
//! 1. `append`: in one write transaction, move `builds.trace_length` from `offset` to
//!    `offset + len` with a conditional UPDATE (`… WHERE id = $1 AND trace_length = $2`), then
//!    write each piece (see [`chunk::split`]): a piece starting a chunk inserts its
//!    `build_trace_chunks` row (`data_store = 'database'`, `raw_data` = the piece); a piece
//!    continuing a chunk appends to the row's `raw_data`, but only if the row is live here and
//!    holds exactly the bytes the trace length implies.
//! 2. The append's conditional UPDATE also stamps `builds.activity_at` (the build's last
//!    activity, which the stuck-build sweep reads): no statement of its own. `touch` stamps it
//!    alone; `last_activity` reads it.
//! 3. `read_chunk` / `delete_chunk`: a chunk is live while its row's `data_store` is `database`
//!    and `raw_data` is set; deleting clears `raw_data` (the row and its `size` stay: the flush
//!    flips `data_store` and keeps the metadata). A row the flush sealed (`crc32` set: flushed
//!    to the database while the object store was down) is not a live copy: deleting leaves it.
//! 4. `delete_build`: deletes the build's `database` chunk rows, resets its length to 0 and
//!    its watch mark, and closes the trace (for good: the flag is a column of the build's own
//!    row, which stays as the build's record). Called once the log is archived: by then a
//!    `database` row is either live or a chunk flushed to the database while the object store
//!    was down, and both are in the archive. Nothing of the live log is left behind.
//!
//! Callers: the runner API's append path (`append`, `length`), readers (`read_chunk`), the
//! chunk flush (`delete_chunk`) and the archiver (`delete_build`).
//!
//! Guarantees (those of [`LiveChunkStore`], the Redis store being the reference):
//! - Of concurrent appends at one offset exactly one wins: the conditional UPDATE of the build
//!   row serializes them (PostgreSQL: the row lock, re-checked after the winner commits; SQLite:
//!   `BEGIN IMMEDIATE` takes the write lock first, writers wait on `busy_timeout`).
//! - An append is atomic: a chunk that is not where the length says (missing, flushed away, or
//!   holding another byte count) is [`LiveStoreError::Inconsistent`] and the transaction rolls
//!   back, length included. So is an append for a build without a `builds` row (the API creates
//!   builds before their runners write).
//! - Every write of a chunk's live bytes bumps `lock_version`, so a flush that read the chunk
//!   before a late append cannot flip it to another store and lose the appended bytes.
//! - A row starting a chunk that already exists replaces it only if it is a `database` row
//!   (stale bytes past the trace length, as Redis' `SET` replaces a stale key); a row in another
//!   store is `Inconsistent`, never overwritten.
//!
//! Every transaction locks the build row before chunk rows (one lock order, no deadlocks on
//! PostgreSQL). The statements, one set per database, are the `SQLITE` and `POSTGRES` constants
//! below; the code using them is written once and expanded per driver by `on_db!`
//! (runtime-checked `sqlx::query`, no `DATABASE_URL` at build time).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::migrate::MigrateError;
use sqlx::{PgPool, SqlitePool};

use super::sql::{Db, on_db};

use crate::jobs::BrokerError;
use crate::jobs::clock::{Clock, SystemClock};
use crate::jobs::sqlite::{SqliteBroker, lock_for_migrations};
use crate::traces::chunk::{self, CHUNK_SIZE};
use crate::traces::live::{AppendOutcome, LiveChunkStore, LiveStoreError};
use crate::traces::model::DataStore;

/// Applies `migrations/postgres` (idempotent; concurrent callers wait on sqlx's advisory lock).
pub async fn migrate_postgres(pool: &PgPool) -> Result<(), MigrateError> {
    sqlx::migrate!("migrations/postgres").run(pool).await
}

/// Applies the job queue's migrations (`buildlogs-jobs`, which records them apart) and then
/// `migrations/sqlite`, the build-log tables; idempotent. Processes starting together on one
/// file take turns (the job system's migration lock), so each applies a migration once.
pub async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), MigrateError> {
    let broker_error = |e| match e {
        BrokerError::Migrate(e) => e,
        other => MigrateError::Source(Box::new(other)),
    };
    SqliteBroker::new(pool.clone())
        .migrate()
        .await
        .map_err(broker_error)?;
    let _lock = lock_for_migrations(pool).await.map_err(broker_error)?;
    let mut migrator = sqlx::migrate!("migrations/sqlite");
    // Files made before the job system had its own migrations list its 0001 here too.
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// Opens the append's write transaction.
    begin: &'static str,
    /// $1 build, $2 expected length, $3 new length, $4 now → the row's `trace_watched_until`
    /// if the length was $2 (no row otherwise); stamps `activity_at`.
    advance_length: &'static str,
    /// $1 build → trace_length (no row: no build).
    length: &'static str,
    /// $1 build, $2 index, $3 bytes, $4 their length, $5 now → 1 row unless the chunk exists
    /// in another store.
    start_chunk: &'static str,
    /// $1 build, $2 index, $3 bytes, $4 their length, $5 now, $6 bytes the chunk must hold →
    /// 1 row if it is live here and holds exactly $6 bytes.
    extend_chunk: &'static str,
    /// $1 build, $2 index → the live bytes' count (for the error of a refused extension).
    live_chunk_size: &'static str,
    /// $1 build, $2 first index, $3 last index → the indexes of live, unflushed chunks.
    unflushed: &'static str,
    /// $1 build, $2 index → raw_data of a live row.
    read_chunk: &'static str,
    /// $1 build, $2 index, $3 now.
    delete_chunk: &'static str,
    /// $1 build.
    delete_build_chunks: &'static str,
    /// $1 build: length 0, closed, not watched.
    reset_length: &'static str,
    /// $1 build → trace_closed (0/1).
    closed: &'static str,
    /// $1 build.
    close: &'static str,
    /// $1 build, $2 watched until.
    watch: &'static str,
    /// $1 build, $2 now.
    touch: &'static str,
    /// $1 build → activity_at.
    activity: &'static str,
}

/// SQLite: `BEGIN IMMEDIATE` takes the write lock at once (a deferred transaction that read
/// first could fail to upgrade); `||` on blobs yields text, hence the `CAST … AS BLOB` (the
/// STRICT table would refuse text); `length()` of a blob counts bytes.
const SQLITE: Statements = Statements {
    begin: "BEGIN IMMEDIATE",
    advance_length: "UPDATE builds SET trace_length = $3, activity_at = $4 \
         WHERE id = $1 AND trace_length = $2 AND trace_closed = 0 \
         RETURNING trace_watched_until",
    length: "SELECT trace_length FROM builds WHERE id = $1",
    closed: "SELECT trace_closed FROM builds WHERE id = $1",
    close: "UPDATE builds SET trace_closed = 1 WHERE id = $1",
    watch: "UPDATE builds SET trace_watched_until = $2 WHERE id = $1",
    touch: "UPDATE builds SET activity_at = $2 WHERE id = $1 AND activity_at < $2",
    activity: "SELECT activity_at FROM builds WHERE id = $1",
    start_chunk: "INSERT INTO build_trace_chunks \
         (build_id, chunk_index, data_store, raw_data, size, created_at, updated_at) \
         VALUES ($1, $2, 'database', $3, $4, $5, $5) \
         ON CONFLICT (build_id, chunk_index) DO UPDATE SET \
         raw_data = excluded.raw_data, size = excluded.size, crc32 = NULL, \
         lock_version = build_trace_chunks.lock_version + 1, updated_at = excluded.updated_at \
         WHERE build_trace_chunks.data_store = 'database'",
    extend_chunk: "UPDATE build_trace_chunks SET raw_data = CAST(raw_data || $3 AS BLOB), \
         size = size + $4, lock_version = lock_version + 1, updated_at = $5 \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database' \
         AND length(raw_data) = $6",
    live_chunk_size: "SELECT length(raw_data) FROM build_trace_chunks \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database'",
    unflushed: "SELECT chunk_index FROM build_trace_chunks \
         WHERE build_id = $1 AND chunk_index BETWEEN $2 AND $3 AND data_store = 'database' \
         AND raw_data IS NOT NULL AND crc32 IS NULL ORDER BY chunk_index",
    read_chunk: "SELECT raw_data FROM build_trace_chunks \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database'",
    delete_chunk: "UPDATE build_trace_chunks SET raw_data = NULL, \
         lock_version = lock_version + 1, updated_at = $3 \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database' \
         AND raw_data IS NOT NULL AND crc32 IS NULL",
    delete_build_chunks: "DELETE FROM build_trace_chunks \
         WHERE build_id = $1 AND data_store = 'database'",
    reset_length: "UPDATE builds SET trace_length = 0, trace_closed = 1, \
         trace_watched_until = NULL WHERE id = $1",
};

/// PostgreSQL (READ COMMITTED): the conditional UPDATE locks the build row; a concurrent append
/// waits for it and re-evaluates `trace_length = $2` against the committed row.
const POSTGRES: Statements = Statements {
    begin: "BEGIN",
    advance_length: SQLITE.advance_length,
    length: SQLITE.length,
    closed: SQLITE.closed,
    close: SQLITE.close,
    watch: SQLITE.watch,
    touch: SQLITE.touch,
    activity: SQLITE.activity,
    start_chunk: SQLITE.start_chunk,
    extend_chunk: "UPDATE build_trace_chunks SET raw_data = raw_data || $3, \
         size = size + $4, lock_version = lock_version + 1, updated_at = $5 \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database' \
         AND octet_length(raw_data) = $6",
    live_chunk_size: "SELECT octet_length(raw_data)::BIGINT FROM build_trace_chunks \
         WHERE build_id = $1 AND chunk_index = $2 AND data_store = 'database'",
    unflushed: SQLITE.unflushed,
    read_chunk: SQLITE.read_chunk,
    delete_chunk: SQLITE.delete_chunk,
    delete_build_chunks: SQLITE.delete_build_chunks,
    reset_length: SQLITE.reset_length,
};

pub struct SqlLiveChunks {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl SqlLiveChunks {
    /// Over a migrated SQLite pool (see [`migrate_sqlite`]); give it a `busy_timeout`, since
    /// appends queue for SQLite's one writer.
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self {
            db: Db::Sqlite(pool),
            clock: Arc::new(SystemClock),
        }
    }

    /// Over a migrated PostgreSQL pool (see [`migrate_postgres`]).
    pub fn postgres(pool: PgPool) -> Self {
        Self {
            db: Db::Postgres(pool),
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock stamping `created_at` / `updated_at`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Applies this store's database's migrations.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match &self.db {
            Db::Sqlite(pool) => migrate_sqlite(pool).await,
            Db::Postgres(pool) => migrate_postgres(pool).await,
        }
    }
}

fn inconsistent(build: i64, detail: String) -> LiveStoreError {
    LiveStoreError::Inconsistent { build, detail }
}

/// A trace position as stored (BIGINT).
fn to_sql(build: i64, what: &str, value: u64) -> Result<i64, LiveStoreError> {
    i64::try_from(value).map_err(|_| inconsistent(build, format!("{what} {value} out of range")))
}

/// A stored length or size (never negative: CHECK constraints).
fn from_sql(build: i64, what: &str, value: i64) -> Result<u64, LiveStoreError> {
    u64::try_from(value).map_err(|_| inconsistent(build, format!("negative {what} {value}")))
}

#[async_trait]
impl LiveChunkStore for SqlLiveChunks {
    fn data_store(&self) -> DataStore {
        DataStore::Database
    }

    async fn append(
        &self,
        build: i64,
        offset: u64,
        data: &[u8],
    ) -> Result<AppendOutcome, LiveStoreError> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| inconsistent(build, format!("append at {offset} overflows")))?;
        let (from, to) = (to_sql(build, "offset", offset)?, to_sql(build, "end", end)?);
        let pieces = chunk::split(offset, data.len());
        let now = self.clock.now_ms();
        on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            let moved: Option<Option<i64>> = sqlx::query_scalar(q.advance_length)
                .bind(build)
                .bind(from)
                .bind(to)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(watched_until) = moved else {
                let closed: Option<i64> = sqlx::query_scalar(q.closed)
                    .bind(build)
                    .fetch_optional(&mut *tx)
                    .await?;
                if closed == Some(1) {
                    tx.rollback().await?;
                    return Ok(AppendOutcome::Closed);
                }
                let length: Option<i64> = sqlx::query_scalar(q.length)
                    .bind(build)
                    .fetch_optional(&mut *tx)
                    .await?;
                // As the Redis store: the refused range's full chunks still live (a resent
                // PATCH whose first copy landed but whose flush enqueue may have failed).
                let mut unflushed: Vec<i64> = Vec::new();
                if let Some(length) = length
                    && from < length
                {
                    let size = to_sql(build, "chunk size", CHUNK_SIZE)?;
                    let last = to.min(length) / size - 1;
                    if last >= from / size {
                        unflushed = sqlx::query_scalar(q.unflushed)
                            .bind(build)
                            .bind(from / size)
                            .bind(last)
                            .fetch_all(&mut *tx)
                            .await?;
                    }
                }
                tx.rollback().await?;
                return match length {
                    Some(length) => Ok(AppendOutcome::Mismatch {
                        length: from_sql(build, "trace length", length)?,
                        unflushed: unflushed.into_iter().map(|i| i as u64).collect(),
                    }),
                    None => Err(inconsistent(
                        build,
                        "no builds row (a build is registered before its trace is written)".into(),
                    )),
                };
            };
            let (mut started, mut filled) = (Vec::new(), Vec::new());
            for piece in &pieces {
                let bytes = &data[piece.start..piece.end];
                let index = to_sql(build, "chunk index", piece.chunk_index)?;
                let len = to_sql(build, "piece length", bytes.len() as u64)?;
                if piece.offset_in_chunk == 0 {
                    let written = sqlx::query(q.start_chunk)
                        .bind(build)
                        .bind(index)
                        .bind(bytes)
                        .bind(len)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if written != 1 {
                        // Dropping `tx` rolls the whole append back.
                        return Err(inconsistent(
                            build,
                            format!("chunk {index} to start already exists in another store"),
                        ));
                    }
                    started.push(piece.chunk_index);
                } else {
                    let within = to_sql(build, "offset in chunk", piece.offset_in_chunk)?;
                    let written = sqlx::query(q.extend_chunk)
                        .bind(build)
                        .bind(index)
                        .bind(bytes)
                        .bind(len)
                        .bind(now)
                        .bind(within)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if written != 1 {
                        let have: Option<Option<i64>> = sqlx::query_scalar(q.live_chunk_size)
                            .bind(build)
                            .bind(index)
                            .fetch_optional(&mut *tx)
                            .await?;
                        let have = match have.flatten() {
                            Some(n) => format!("holds {n} bytes"),
                            None => "is not live in the database".to_owned(),
                        };
                        return Err(inconsistent(
                            build,
                            format!("chunk {index} {have}, the trace length implies {within}"),
                        ));
                    }
                }
                if piece.offset_in_chunk + bytes.len() as u64 == CHUNK_SIZE {
                    filled.push(piece.chunk_index);
                }
            }
            tx.commit().await?;
            Ok(AppendOutcome::Appended {
                length: end,
                started,
                filled,
                watched: watched_until.is_some_and(|until| until > now),
            })
        })
    }

    async fn length(&self, build: i64) -> Result<u64, LiveStoreError> {
        let length: Option<i64> = on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.length)
                .bind(build)
                .fetch_optional(pool)
                .await?
        });
        from_sql(build, "trace length", length.unwrap_or(0))
    }

    async fn read_chunk(
        &self,
        build: i64,
        chunk_index: u64,
    ) -> Result<Option<Vec<u8>>, LiveStoreError> {
        let index = to_sql(build, "chunk index", chunk_index)?;
        let data: Option<Option<Vec<u8>>> = on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.read_chunk)
                .bind(build)
                .bind(index)
                .fetch_optional(pool)
                .await?
        });
        Ok(data.flatten())
    }

    async fn watch(&self, build: i64, ttl: std::time::Duration) -> Result<(), LiveStoreError> {
        let until = self
            .clock
            .now_ms()
            .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.watch)
                .bind(build)
                .bind(until)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn touch(&self, build: i64) -> Result<(), LiveStoreError> {
        let now = self.clock.now_ms();
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.touch)
                .bind(build)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn last_activity(&self, builds: &[i64]) -> Result<Vec<Option<i64>>, LiveStoreError> {
        let mut out = Vec::with_capacity(builds.len());
        for &build in builds {
            let at: Option<i64> = on_db!(&self.db, |pool, q| {
                sqlx::query_scalar(q.activity)
                    .bind(build)
                    .fetch_optional(pool)
                    .await?
            });
            out.push(at);
        }
        Ok(out)
    }

    async fn close(&self, build: i64) -> Result<(), LiveStoreError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.close).bind(build).execute(pool).await?;
        });
        Ok(())
    }

    async fn delete_chunk(&self, build: i64, chunk_index: u64) -> Result<(), LiveStoreError> {
        let index = to_sql(build, "chunk index", chunk_index)?;
        let now = self.clock.now_ms();
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.delete_chunk)
                .bind(build)
                .bind(index)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    async fn delete_build(&self, build: i64) -> Result<(), LiveStoreError> {
        on_db!(&self.db, |pool, q| {
            // The build row first, as `append` does: one lock order, no deadlock between them.
            let mut tx = pool.begin_with(q.begin).await?;
            sqlx::query(q.reset_length)
                .bind(build)
                .execute(&mut *tx)
                .await?;
            sqlx::query(q.delete_build_chunks)
                .bind(build)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
