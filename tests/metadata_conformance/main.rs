//! The metadata repository contract (`src/traces/metadata/`), run against `SqlMetadata` on
//! SQLite (a file per test) and PostgreSQL (a schema per test): one file per concern, as the
//! traits are split, each registering its tests on both databases with `on_every_sql_store!`;
//! `live_chunks.rs` checks that the metadata and the SQL live chunk store agree on one
//! database's chunk rows. Store-wide checks are here.

#[path = "../support/mod.rs"]
mod support;

use std::sync::Arc;

use buildlogs::jobs::sqlite::SqliteBroker;
use buildlogs::stores::sql_live::{SqlLiveChunks, migrate_sqlite};
use buildlogs::stores::sql_metadata::SqlMetadata;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::metadata::{
    ArtifactRowStore, BuildStore, ChunkFlip, ChunkRowStore, MetadataError, PendingStateStore,
};
use buildlogs::traces::model::{
    Build, BuildStatus, ChunkRow, DataStore, NewArtifact, PendingState,
};
use support::sql::{TestPostgres, TestSql, TestSqlite};

const C: usize = CHUNK_SIZE as usize;
/// A build id no test registers.
const UNKNOWN: i64 = 987_654;

struct Fixture {
    store: Arc<SqlMetadata>,
    /// Dropped after the store: the file or schema goes with it.
    db: TestSql,
}

impl Fixture {
    async fn sqlite(_test: &str) -> Self {
        let db = TestSqlite::new().await;
        Self::new(SqlMetadata::sqlite(db.pool.clone()), TestSql::Sqlite(db)).await
    }

    async fn postgres(test: &str) -> Self {
        let db = TestPostgres::new(test).await;
        Self::new(
            SqlMetadata::postgres(db.pool.clone()),
            TestSql::Postgres(db),
        )
        .await
    }

    async fn new(store: SqlMetadata, db: TestSql) -> Self {
        // The database is migrated already: migrating again changes nothing.
        store.migrate().await.expect("migrations are idempotent");
        Self {
            store: Arc::new(store),
            db,
        }
    }

    /// The SQL live chunk store over the same database.
    fn live(&self) -> SqlLiveChunks {
        match &self.db {
            TestSql::Sqlite(db) => SqlLiveChunks::sqlite(db.pool.clone()),
            TestSql::Postgres(db) => SqlLiveChunks::postgres(db.pool.clone()),
        }
    }

    async fn build(&self) -> Build {
        self.store.create_build("digest", 1_000).await.unwrap()
    }

    async fn chunk(&self, build: i64, index: u64) -> ChunkRow {
        self.store
            .chunks(build)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.chunk_index == index)
            .unwrap_or_else(|| panic!("no row for chunk {index}"))
    }
}

fn flip(row: &ChunkRow, to: DataStore, size: u64, raw_data: Option<Vec<u8>>) -> ChunkFlip {
    ChunkFlip {
        build_id: row.build_id,
        chunk_index: row.chunk_index,
        expected_lock_version: row.lock_version,
        to,
        size,
        crc32: crc32fast::hash(raw_data.as_deref().unwrap_or(b"")),
        raw_data,
    }
}

fn pending(build_id: i64, state: BuildStatus, checksum: u32) -> PendingState {
    PendingState {
        build_id,
        state,
        failure_reason: (state == BuildStatus::Failed).then(|| "script_failure".to_owned()),
        exit_code: Some(if state == BuildStatus::Failed { -1 } else { 0 }),
        trace_checksum: Some(checksum),
        trace_bytesize: Some(3 * CHUNK_SIZE + 17),
        created_at_ms: 5_000,
    }
}

fn new_artifact(build_id: i64, path: &str) -> NewArtifact {
    NewArtifact {
        build_id,
        object_path: path.to_owned(),
        size: 5 * CHUNK_SIZE,
        crc32: 0xdead_beef,
        sha256: "ab".repeat(32),
        expire_at_ms: Some(99_000),
    }
}

fn is_no_build<T: std::fmt::Debug>(result: Result<T, MetadataError>, id: i64) -> bool {
    matches!(result, Err(MetadataError::NoBuild(b)) if b == id)
}

fn is_corrupt<T>(result: &Result<T, MetadataError>) -> bool {
    matches!(result, Err(MetadataError::Corrupt { .. }))
}

/// One module of tests against one database, each test with a fixture of its own.
macro_rules! tests_on {
    ($module:ident, $fixture:ident, $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = crate::Fixture::$fixture(stringify!($name)).await;
                    super::$name(&f).await;
                }
            )*
        }
    };
}

/// The tests of the calling module, on SQLite (`<module>::sqlite::<test>`) and PostgreSQL
/// (`<module>::postgres::<test>`).
macro_rules! on_every_sql_store {
    ($($name:ident),* $(,)?) => {
        tests_on!(sqlite, sqlite, $($name),*);
        tests_on!(postgres, postgres, $($name),*);
    };
}

// After the macros: a module sees only the macros defined before it.
mod artifacts;
mod breakers;
mod builds;
mod chunk_rows;
mod leases;
mod live_chunks;
mod pending_states;
mod stuck;
mod trace_metadata;

// --- Store-wide: integers checked both ways -----------------------------------------------

async fn values_beyond_bigint_are_refused_and_write_nothing(f: &Fixture) {
    let b = f.build().await;
    let too_big = u64::MAX;
    let r = f
        .store
        .ensure_chunks(b.id, &[0, too_big], DataStore::Redis, 3_000)
        .await;
    assert!(is_corrupt(&r), "{r:?}");
    assert!(f.store.chunks(b.id).await.unwrap().is_empty());
    let state = PendingState {
        trace_bytesize: Some(too_big),
        ..pending(b.id, BuildStatus::Success, 1)
    };
    let r = f.store.upsert_pending_state(&state).await;
    assert!(is_corrupt(&r), "{r:?}");
    assert_eq!(f.store.pending_state(b.id).await.unwrap(), None);
    let art = NewArtifact {
        size: too_big,
        ..new_artifact(b.id, "x.log")
    };
    let r = f.store.record_archive(&art, 21_000).await;
    assert!(is_corrupt(&r), "{r:?}");
    assert_eq!(f.store.trace_artifact(b.id).await.unwrap(), None);
}

on_every_sql_store!(values_beyond_bigint_are_refused_and_write_nothing);

/// A SQLite file made before the job system had migrations of its own lists the queue's tables
/// as buildlogs' version 1 in `_sqlx_migrations` and has no `_buildlogs_jobs_migrations`: it
/// migrates, keeps its queue rows, and the queue's migration is recorded where it now belongs.
#[tokio::test]
async fn a_sqlite_file_from_before_the_job_crate_migrates() {
    let db = TestSqlite::new().await;
    for statement in [
        "DROP TABLE _buildlogs_jobs_migrations",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (1, 'job queue', 1, x'00', 0)",
        "INSERT INTO job_queues (queue, concurrency_limit) VALUES ('old_queue', 3)",
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }

    migrate_sqlite(&db.pool)
        .await
        .expect("a file from before the split migrates");

    let limit: Option<i64> =
        sqlx::query_scalar("SELECT concurrency_limit FROM job_queues WHERE queue = 'old_queue'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(limit, Some(3), "the queue's rows survive");
    let recorded: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _buildlogs_jobs_migrations WHERE success")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(recorded, vec![1]);
}

/// Processes that start at once on a new SQLite file (`web` and `worker` on the embedded stack)
/// each open it (the job queue's connect switches it to WAL and migrates the queue) and then
/// migrate the build-log tables, as `open_stack` does: they take turns, and every one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_opening_one_new_sqlite_file_at_once_all_succeed() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    let broker = SqliteBroker::connect(&url).await?;
                    migrate_sqlite(broker.pool()).await?;
                    broker.pool().close().await;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .collect();
        for task in tasks {
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: opening the new file failed: {e}"));
        }
    }
}
