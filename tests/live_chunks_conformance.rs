//! The live chunk store contract (`src/traces/live.rs`), run against each implementation:
//! Redis (a key prefix per test), and the SQL database store on SQLite (a file per test) and
//! PostgreSQL (a schema per test). A second list checks what only the SQL store has: its rows.

mod support;

use std::sync::Arc;
use std::time::Duration;

use buildlogs::jobs::Clock;
use buildlogs::jobs::clock::ManualClock;
use buildlogs::stores::redis_live::RedisLiveChunks;
use buildlogs::stores::sql_live::SqlLiveChunks;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::live::{AppendOutcome, LiveChunkStore, LiveStoreError};
use support::sql::{TestPostgres, TestSql, TestSqlite};

const B: i64 = 42;
const C: usize = CHUNK_SIZE as usize;

/// The SQL store writes only builds the API registered: the fixture registers `B` (42).
const REGISTER_B: &str = "INSERT INTO builds (id, token_digest, status, trace_length, created_at) \
     VALUES (42, 'test-digest', 'running', 0, 0)";

/// Where the fixture's clock starts (the stores stamp activity with it).
const START_MS: i64 = 1_000_000;

struct Fixture {
    store: Arc<dyn LiveChunkStore>,
    clock: ManualClock,
    /// Dropped after the store: the Redis prefix's keys are deleted, the SQL database dropped.
    backend: Backend,
}

enum Backend {
    Redis { prefix: String },
    Sql(TestSql),
}

impl Fixture {
    async fn redis(test: &str) -> Self {
        let prefix = support::unique_prefix(test);
        let client = redis::Client::open(support::redis_url()).unwrap();
        let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
        let clock = ManualClock::new(START_MS);
        Self {
            store: Arc::new(
                RedisLiveChunks::new(conn, &prefix).with_clock(Arc::new(clock.clone())),
            ),
            clock,
            backend: Backend::Redis { prefix },
        }
    }

    async fn sqlite(_test: &str) -> Self {
        let db = TestSqlite::new().await;
        let store = SqlLiveChunks::sqlite(db.pool.clone());
        Self::sql(store, TestSql::Sqlite(db)).await
    }

    async fn postgres(test: &str) -> Self {
        let db = TestPostgres::new(test).await;
        let store = SqlLiveChunks::postgres(db.pool.clone());
        Self::sql(store, TestSql::Postgres(db)).await
    }

    async fn sql(store: SqlLiveChunks, db: TestSql) -> Self {
        db.execute(REGISTER_B).await;
        assert_eq!(
            db.scalar_i64("SELECT id FROM builds").await,
            Some(B),
            "REGISTER_B registers B"
        );
        let clock = ManualClock::new(START_MS);
        Self {
            store: Arc::new(store.with_clock(Arc::new(clock.clone()))),
            clock,
            backend: Backend::Sql(db),
        }
    }

    /// The SQL store's database (SQL-only tests).
    fn db(&self) -> &TestSql {
        match &self.backend {
            Backend::Sql(db) => db,
            Backend::Redis { .. } => panic!("not a SQL store"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Backend::Redis { prefix } = &self.backend {
            support::delete_prefix(&support::redis_url(), prefix);
        }
    }
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn appended(f: &Fixture, offset: u64, data: &[u8]) -> (u64, Vec<u64>, Vec<u64>) {
    match f.store.append(B, offset, data).await.unwrap() {
        AppendOutcome::Appended {
            length,
            started,
            filled,
            ..
        } => (length, started, filled),
        other => panic!("append at {offset} refused: {other:?}"),
    }
}

async fn appends_at_the_end_and_reads_back(f: &Fixture) {
    assert_eq!(f.store.length(B).await.unwrap(), 0);
    assert_eq!(appended(f, 0, b"hello ").await, (6, vec![0], vec![]));
    assert_eq!(appended(f, 6, b"world").await, (11, vec![], vec![]));
    assert_eq!(f.store.length(B).await.unwrap(), 11);
    assert_eq!(
        f.store.read_chunk(B, 0).await.unwrap().unwrap(),
        b"hello world"
    );
    assert_eq!(f.store.read_chunk(B, 1).await.unwrap(), None);
}

async fn a_gap_or_an_overlap_is_refused_and_writes_nothing(f: &Fixture) {
    appended(f, 0, b"abc").await;
    for offset in [4, 100, 2, 0] {
        assert_eq!(
            f.store.append(B, offset, b"xyz").await.unwrap(),
            AppendOutcome::Mismatch {
                length: 3,
                unflushed: vec![]
            },
            "offset {offset}"
        );
    }
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap().unwrap(), b"abc");
}

async fn a_retried_append_changes_nothing(f: &Fixture) {
    appended(f, 0, b"line 1\n").await;
    assert_eq!(
        f.store.append(B, 0, b"line 1\n").await.unwrap(),
        AppendOutcome::Mismatch {
            length: 7,
            unflushed: vec![]
        }
    );
    assert_eq!(f.store.length(B).await.unwrap(), 7);
}

async fn of_concurrent_appends_at_one_offset_exactly_one_wins(f: &Fixture) {
    let tasks: Vec<_> = (0..20u8)
        .map(|i| {
            let store = f.store.clone();
            tokio::spawn(async move { store.append(B, 0, &[i; 100]).await.unwrap() })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            AppendOutcome::Appended { length, .. } => {
                wins += 1;
                assert_eq!(length, 100);
            }
            AppendOutcome::Mismatch { length, .. } => assert_eq!(length, 100),
            AppendOutcome::Closed => panic!("nobody closed this trace"),
        }
    }
    assert_eq!(wins, 1);
    let chunk = f.store.read_chunk(B, 0).await.unwrap().unwrap();
    assert!(
        chunk.iter().all(|b| *b == chunk[0]),
        "one writer's bytes only"
    );
}

async fn an_append_across_chunk_boundaries_splits_exactly(f: &Fixture) {
    let head = bytes(C - 3, 1);
    let big = bytes(2 * C + 5, 2);
    assert_eq!(
        appended(f, 0, &head).await,
        ((C - 3) as u64, vec![0], vec![])
    );
    assert_eq!(
        appended(f, (C - 3) as u64, &big).await,
        ((3 * C + 2) as u64, vec![1, 2, 3], vec![0, 1, 2])
    );
    let mut all = head.clone();
    all.extend_from_slice(&big);
    for i in 0..4u64 {
        let chunk = f.store.read_chunk(B, i).await.unwrap().unwrap();
        let from = i as usize * C;
        assert_eq!(chunk, all[from..(from + C).min(all.len())], "chunk {i}");
    }
}

async fn any_byte_values_are_kept_exactly(f: &Fixture) {
    let data: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0x00, 0xc3, 0x28]).collect();
    appended(f, 0, &data).await;
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap().unwrap(), data);
}

async fn the_length_survives_flushed_chunks_being_dropped(f: &Fixture) {
    appended(f, 0, &bytes(C + 10, 3)).await;
    f.store.delete_chunk(B, 0).await.unwrap();
    assert_eq!(f.store.length(B).await.unwrap(), (C + 10) as u64);
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap(), None);
    assert_eq!(
        appended(f, (C + 10) as u64, b"more").await.0,
        (C + 14) as u64
    );
}

async fn a_missing_partial_chunk_is_an_error_not_a_silent_hole(f: &Fixture) {
    appended(f, 0, b"partial").await;
    f.store.delete_chunk(B, 0).await.unwrap();
    let err = f.store.append(B, 7, b"more").await.unwrap_err();
    assert!(
        matches!(err, LiveStoreError::Inconsistent { build: B, .. }),
        "{err}"
    );
    assert_eq!(f.store.length(B).await.unwrap(), 7, "nothing written");
}

async fn deleting_a_build_drops_its_chunks_and_length(f: &Fixture) {
    appended(f, 0, &bytes(C * 2 + 1, 4)).await;
    f.store.delete_build(B).await.unwrap();
    assert_eq!(f.store.length(B).await.unwrap(), 0);
    for i in 0..3 {
        assert_eq!(f.store.read_chunk(B, i).await.unwrap(), None);
    }
}

async fn appends_continuing_a_chunk_keep_any_bytes(f: &Fixture) {
    let parts: [&[u8]; 4] = [
        b"\x00",
        b"\xff\x00\xc3",
        b"\x28\x00\x00",
        b"\xfe\x80 text \x00",
    ];
    let mut all = Vec::new();
    for part in parts {
        appended(f, all.len() as u64, part).await;
        all.extend_from_slice(part);
    }
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap().unwrap(), all);
    assert_eq!(f.store.length(B).await.unwrap(), all.len() as u64);
}

async fn an_append_filling_a_chunk_exactly_reports_it_and_the_next_starts_one(f: &Fixture) {
    assert_eq!(
        appended(f, 0, &bytes(C, 5)).await,
        (C as u64, vec![0], vec![0])
    );
    assert_eq!(
        appended(f, C as u64, b"x").await,
        (C as u64 + 1, vec![1], vec![])
    );
    assert_eq!(
        f.store.read_chunk(B, 0).await.unwrap().unwrap(),
        bytes(C, 5)
    );
    assert_eq!(f.store.read_chunk(B, 1).await.unwrap().unwrap(), b"x");
}

async fn an_empty_append_at_the_end_is_accepted_and_writes_nothing(f: &Fixture) {
    assert_eq!(appended(f, 0, b"").await, (0, vec![], vec![]));
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap(), None);
    appended(f, 0, b"abc").await;
    assert_eq!(appended(f, 3, b"").await, (3, vec![], vec![]));
    assert_eq!(
        f.store.append(B, 5, b"").await.unwrap(),
        AppendOutcome::Mismatch {
            length: 3,
            unflushed: vec![]
        }
    );
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap().unwrap(), b"abc");
}

// --- The SQL store's rows -------------------------------------------------------------------

async fn an_append_for_an_unregistered_build_is_refused(f: &Fixture) {
    let err = f.store.append(7, 0, b"x").await.unwrap_err();
    assert!(
        matches!(err, LiveStoreError::Inconsistent { build: 7, .. }),
        "{err}"
    );
    assert_eq!(f.store.length(7).await.unwrap(), 0);
    assert_eq!(
        f.db()
            .scalar_i64("SELECT COUNT(*) FROM build_trace_chunks WHERE build_id = 7")
            .await,
        Some(0)
    );
}

async fn chunk_rows_are_database_rows_sized_as_their_bytes(f: &Fixture) {
    appended(f, 0, &bytes(C + 5, 6)).await;
    let db = f.db();
    for (sql, want) in [
        (
            "SELECT COUNT(*) FROM build_trace_chunks WHERE build_id = 42 AND data_store = 'database'",
            2,
        ),
        (
            "SELECT size FROM build_trace_chunks WHERE build_id = 42 AND chunk_index = 1",
            5,
        ),
        (
            "SELECT trace_length FROM builds WHERE id = 42",
            C as i64 + 5,
        ),
    ] {
        assert_eq!(db.scalar_i64(sql).await, Some(want), "{sql}");
    }
    assert_eq!(
        db.scalar_i64(
            "SELECT crc32 FROM build_trace_chunks WHERE build_id = 42 AND chunk_index = 0"
        )
        .await,
        None,
        "the CRC32 is the flush's"
    );
}

async fn every_write_of_a_live_chunk_bumps_its_lock_version(f: &Fixture) {
    const VERSION: &str =
        "SELECT lock_version FROM build_trace_chunks WHERE build_id = 42 AND chunk_index = 0";
    appended(f, 0, b"ab").await;
    let first = f.db().scalar_i64(VERSION).await.unwrap();
    appended(f, 2, b"c").await;
    assert_eq!(f.db().scalar_i64(VERSION).await, Some(first + 1), "append");
    f.store.delete_chunk(B, 0).await.unwrap();
    assert_eq!(f.db().scalar_i64(VERSION).await, Some(first + 2), "delete");
    f.store.delete_chunk(B, 0).await.unwrap();
    assert_eq!(
        f.db().scalar_i64(VERSION).await,
        Some(first + 2),
        "a repeated delete writes nothing"
    );
    assert_eq!(
        f.db()
            .scalar_i64(
                "SELECT size FROM build_trace_chunks WHERE build_id = 42 AND chunk_index = 0"
            )
            .await,
        Some(3),
        "the row and its size outlive the live bytes"
    );
}

async fn a_chunk_flushed_elsewhere_is_not_live_and_outlives_deleting_the_build(f: &Fixture) {
    appended(f, 0, &bytes(C + 5, 7)).await;
    f.db()
        .execute(
            "UPDATE build_trace_chunks SET data_store = 'object', raw_data = NULL, crc32 = 1, \
             lock_version = lock_version + 1 WHERE build_id = 42 AND chunk_index = 0",
        )
        .await;
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap(), None);
    assert_eq!(
        f.store.read_chunk(B, 1).await.unwrap().unwrap(),
        bytes(C + 5, 7)[C..]
    );
    f.store.delete_build(B).await.unwrap();
    assert_eq!(f.store.length(B).await.unwrap(), 0);
    assert_eq!(
        f.db()
            .scalar_i64("SELECT chunk_index FROM build_trace_chunks WHERE build_id = 42")
            .await,
        Some(0),
        "only the flushed chunk's row remains"
    );
}

/// A chunk the flush sealed in the database while the object store was down (its row keeps
/// the bytes, with their CRC32) is no longer a live copy: dropping the live copy after the
/// flip must leave those bytes for the archive.
async fn deleting_the_live_copy_keeps_a_chunk_sealed_in_the_database(f: &Fixture) {
    appended(f, 0, &bytes(C, 9)).await;
    f.db()
        .execute(
            "UPDATE build_trace_chunks SET crc32 = 7, lock_version = lock_version + 1 \
             WHERE build_id = 42 AND chunk_index = 0",
        )
        .await;
    f.store.delete_chunk(B, 0).await.unwrap();
    assert_eq!(
        f.db()
            .scalar_i64(
                "SELECT CAST(length(raw_data) AS BIGINT) FROM build_trace_chunks \
                 WHERE build_id = 42 AND chunk_index = 0"
            )
            .await,
        Some(C as i64),
        "the sealed bytes stay"
    );
}

async fn a_chunk_to_start_that_exists_in_another_store_refuses_the_whole_append(f: &Fixture) {
    appended(f, 0, &bytes(C - 2, 8)).await;
    f.db()
        .execute(
            "INSERT INTO build_trace_chunks \
             (build_id, chunk_index, data_store, size, created_at, updated_at) \
             VALUES (42, 1, 'object', 0, 0, 0)",
        )
        .await;
    let err = f
        .store
        .append(B, (C - 2) as u64, b"spans 0 and 1")
        .await
        .unwrap_err();
    assert!(
        matches!(err, LiveStoreError::Inconsistent { build: B, .. }),
        "{err}"
    );
    assert_eq!(
        f.store.length(B).await.unwrap(),
        (C - 2) as u64,
        "rolled back"
    );
    assert_eq!(
        f.store.read_chunk(B, 0).await.unwrap().unwrap(),
        bytes(C - 2, 8),
        "chunk 0 rolled back too"
    );
}

/// One module of tests against one store, each test with a fixture of its own.
macro_rules! tests_on {
    ($module:ident, $fixture:ident, $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::$fixture(stringify!($name)).await;
                    super::$name(&f).await;
                }
            )*
        }
    };
}

macro_rules! on_every_live_store {
    ($($name:ident),* $(,)?) => {
        tests_on!(redis_store, redis, $($name),*);
        tests_on!(sqlite_store, sqlite, $($name),*);
        tests_on!(postgres_store, postgres, $($name),*);
    };
}

macro_rules! on_every_sql_store {
    ($($name:ident),* $(,)?) => {
        tests_on!(sqlite_sql, sqlite, $($name),*);
        tests_on!(postgres_sql, postgres, $($name),*);
    };
}

async fn a_closed_trace_takes_no_more_bytes_even_after_deletion(f: &Fixture) {
    appended(f, 0, b"final").await;
    f.store.close(B).await.unwrap();
    f.store.close(B).await.unwrap();
    assert_eq!(
        f.store.append(B, 5, b"late").await.unwrap(),
        AppendOutcome::Closed
    );
    assert_eq!(f.store.length(B).await.unwrap(), 5, "nothing written");
    f.store.delete_build(B).await.unwrap();
    assert_eq!(
        f.store.append(B, 0, b"again").await.unwrap(),
        AppendOutcome::Closed
    );
}

/// Deleting a build's live data closes its trace even if nothing closed it before (an archived
/// log takes no more bytes), and drops the tail's mark.
async fn deleting_a_build_closes_it_and_drops_its_watch_mark(f: &Fixture) {
    appended(f, 0, b"never closed").await;
    f.store.watch(B, Duration::from_secs(60)).await.unwrap();
    f.store.delete_build(B).await.unwrap();
    assert_eq!(
        f.store.append(B, 0, b"late").await.unwrap(),
        AppendOutcome::Closed
    );
    assert_eq!(f.store.length(B).await.unwrap(), 0);
    if let Backend::Redis { prefix } = &f.backend {
        let keys = support::redis_keys_with_ttl(&support::redis_url(), prefix).await;
        assert_eq!(keys.len(), 1, "only the closed flag: {keys:?}");
        assert!(
            keys[0].starts_with(&format!(":trace:{{{B}}}:closed ttl ")),
            "{keys:?}"
        );
    }
}

/// While a reader tails the log, appends say so (the runner is told to PATCH sooner); the mark
/// lapses after its TTL.
async fn appends_report_a_tailed_log_until_the_mark_lapses(f: &Fixture) {
    let watched = |o: AppendOutcome| match o {
        AppendOutcome::Appended { watched, .. } => watched,
        other => panic!("append refused: {other:?}"),
    };
    assert!(!watched(f.store.append(B, 0, b"a").await.unwrap()));
    f.store.watch(B, Duration::from_secs(60)).await.unwrap();
    assert!(watched(f.store.append(B, 1, b"b").await.unwrap()));
    f.store.watch(B, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Redis expires the mark by its own clock; the SQL store compares with the injected one.
    f.clock.advance_ms(20);
    assert!(!watched(f.store.append(B, 2, b"c").await.unwrap()));
}

/// A refused append reports the full chunks of its range that are still live (the caller
/// enqueues their flushes again: see `AppendOutcome::Mismatch`), never a partial chunk, one
/// already flushed, or one past the range.
async fn a_refused_append_reports_the_full_live_chunks_it_covers(f: &Fixture) {
    let log = vec![7u8; 2 * C + 100];
    appended(f, 0, &log).await;
    let refused = |offset: u64, len: usize| {
        let store = f.store.clone();
        let data = vec![7u8; len];
        async move {
            match store.append(B, offset, &data).await.unwrap() {
                AppendOutcome::Mismatch { length, unflushed } => {
                    assert_eq!(length, (2 * C + 100) as u64);
                    unflushed
                }
                other => panic!("append at {offset} accepted: {other:?}"),
            }
        }
    };
    assert_eq!(
        refused(0, log.len()).await,
        vec![0, 1],
        "the whole log resent"
    );
    assert_eq!(
        refused(C as u64 + 5, 10).await,
        Vec::<u64>::new(),
        "no chunk filled"
    );
    assert_eq!(
        refused(C as u64 + 5, C).await,
        vec![1],
        "the range ends in chunk 2"
    );
    assert_eq!(refused(10, C).await, vec![0], "the range ends in chunk 1");
    f.store.delete_chunk(B, 0).await.unwrap();
    assert_eq!(refused(0, log.len()).await, vec![1], "chunk 0 was flushed");
    assert_eq!(
        refused(3 * C as u64, 10).await,
        Vec::<u64>::new(),
        "past the end"
    );
}

/// What the stuck-build sweep reads: every append that lands, and every touch, is activity.
async fn appends_and_touches_record_the_last_activity(f: &Fixture) {
    const UNREGISTERED: i64 = 4_242;
    let start = f.clock.now_ms();
    let before = f.store.last_activity(&[B, UNREGISTERED]).await.unwrap();
    // Never written: nothing, or (the SQL store) no later than the build's registration.
    assert!(before[0].is_none_or(|at| at < start), "{before:?}");
    assert_eq!(before[1], None);
    appended(f, 0, b"hello").await;
    assert_eq!(
        f.store.last_activity(&[B]).await.unwrap(),
        vec![Some(start)]
    );
    f.clock.advance_ms(5_000);
    // A refused append wrote nothing, its time included.
    assert_eq!(
        f.store.append(B, 99, b"x").await.unwrap(),
        AppendOutcome::Mismatch {
            length: 5,
            unflushed: vec![]
        }
    );
    assert_eq!(
        f.store.last_activity(&[B]).await.unwrap(),
        vec![Some(start)]
    );
    f.store.touch(B).await.unwrap();
    assert_eq!(
        f.store.last_activity(&[B]).await.unwrap(),
        vec![Some(start + 5_000)]
    );
    f.clock.advance_ms(5_000);
    appended(f, 5, b" world").await;
    // Within a minute of the last write of it: exact, or (Redis) not rewritten yet.
    let at = f.store.last_activity(&[B]).await.unwrap()[0].unwrap();
    assert!((start + 5_000..=start + 10_000).contains(&at), "{at}");
    f.clock.advance_ms(61_000);
    appended(f, 11, b"!").await;
    assert_eq!(
        f.store.last_activity(&[B, UNREGISTERED]).await.unwrap(),
        vec![Some(start + 71_000), None]
    );
    assert!(f.store.last_activity(&[]).await.unwrap().is_empty());
}

on_every_live_store!(
    appends_and_touches_record_the_last_activity,
    appends_report_a_tailed_log_until_the_mark_lapses,
    a_closed_trace_takes_no_more_bytes_even_after_deletion,
    appends_at_the_end_and_reads_back,
    a_gap_or_an_overlap_is_refused_and_writes_nothing,
    a_retried_append_changes_nothing,
    of_concurrent_appends_at_one_offset_exactly_one_wins,
    an_append_across_chunk_boundaries_splits_exactly,
    any_byte_values_are_kept_exactly,
    the_length_survives_flushed_chunks_being_dropped,
    a_missing_partial_chunk_is_an_error_not_a_silent_hole,
    deleting_a_build_drops_its_chunks_and_length,
    appends_continuing_a_chunk_keep_any_bytes,
    an_append_filling_a_chunk_exactly_reports_it_and_the_next_starts_one,
    an_empty_append_at_the_end_is_accepted_and_writes_nothing,
    a_refused_append_reports_the_full_live_chunks_it_covers,
    deleting_a_build_closes_it_and_drops_its_watch_mark,
);

on_every_sql_store!(
    an_append_for_an_unregistered_build_is_refused,
    chunk_rows_are_database_rows_sized_as_their_bytes,
    every_write_of_a_live_chunk_bumps_its_lock_version,
    a_chunk_flushed_elsewhere_is_not_live_and_outlives_deleting_the_build,
    deleting_the_live_copy_keeps_a_chunk_sealed_in_the_database,
    a_chunk_to_start_that_exists_in_another_store_refuses_the_whole_append,
);
