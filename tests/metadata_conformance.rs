//! The metadata repository contract (`src/traces/metadata/`), run against `SqlMetadata` on
//! SQLite (a file per test) and PostgreSQL (a schema per test); the last tests check that it and
//! the SQL live chunk store agree on one database's chunk rows.

mod support;

use std::sync::Arc;

use buildlogs::stores::sql_live::{SqlLiveChunks, migrate_sqlite};
use buildlogs::stores::sql_metadata::SqlMetadata;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::live::{AppendOutcome, LiveChunkStore};
use buildlogs::traces::metadata::{
    ArtifactRowStore, BuildStore, ChunkFlip, ChunkRowStore, LeaseStore, MetadataError,
    PendingStateStore, StuckBuildStore, TraceMetadataStore,
};
use buildlogs::traces::model::{
    Artifact, Build, BuildListFilter, BuildStatus, BuildSummary, ChunkRow, DataStore, IdleBuild,
    NewArtifact, PendingState, TraceMetadata, TraceState,
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

// --- Builds ----------------------------------------------------------------------------------

async fn a_created_build_is_running_and_reads_back(f: &Fixture) {
    let a = f.store.create_build("digest-a", 1_234).await.unwrap();
    assert_eq!(
        a,
        Build {
            id: a.id,
            token_digest: "digest-a".into(),
            status: BuildStatus::Running,
            failure_reason: None,
            finished_at_ms: None,
            created_at_ms: 1_234,
        }
    );
    let b = f.store.create_build("digest-b", 1_235).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(f.store.build(a.id).await.unwrap(), Some(a));
    assert_eq!(f.store.build(b.id).await.unwrap(), Some(b));
    assert_eq!(f.store.build(UNKNOWN).await.unwrap(), None);
}

async fn a_build_finishes_once_and_later_calls_change_nothing(f: &Fixture) {
    let b = f.build().await;
    let failed = f
        .store
        .finish_build(b.id, BuildStatus::Failed, Some("script_failure"), 2_000)
        .await
        .unwrap();
    let want = Build {
        status: BuildStatus::Failed,
        failure_reason: Some("script_failure".into()),
        finished_at_ms: Some(2_000),
        ..b.clone()
    };
    assert_eq!(failed, want);
    // A repeated PUT, another final state, and `running` itself: the committed build, as is.
    for (status, reason) in [
        (BuildStatus::Failed, Some("script_failure")),
        (BuildStatus::Success, None),
        (BuildStatus::Canceled, Some("other")),
        (BuildStatus::Running, None),
    ] {
        assert_eq!(
            f.store
                .finish_build(b.id, status, reason, 3_000)
                .await
                .unwrap(),
            want,
            "{status}"
        );
    }
    assert_eq!(f.store.build(b.id).await.unwrap(), Some(want));
}

async fn finishing_with_running_leaves_a_running_build_running(f: &Fixture) {
    let b = f.build().await;
    assert_eq!(
        f.store
            .finish_build(b.id, BuildStatus::Running, None, 2_000)
            .await
            .unwrap(),
        b
    );
    let done = f
        .store
        .finish_build(b.id, BuildStatus::Success, None, 2_500)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.finished_at_ms),
        (BuildStatus::Success, Some(2_500))
    );
}

async fn of_concurrent_finishes_exactly_one_commits(f: &Fixture) {
    let b = f.build().await;
    let statuses = [
        BuildStatus::Success,
        BuildStatus::Failed,
        BuildStatus::Canceled,
    ];
    let tasks: Vec<_> = (0..9)
        .map(|i| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store
                    .finish_build(b.id, statuses[i % 3], None, 2_000 + i as i64)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    let committed = f.store.build(b.id).await.unwrap().unwrap();
    assert!(committed.status.is_finished());
    // Every call returned the build as it was after its own update: the one committed state.
    assert!(seen.iter().all(|s| *s == committed), "{seen:?}");
}

async fn finishing_an_unknown_build_is_no_build(f: &Fixture) {
    let result = f
        .store
        .finish_build(UNKNOWN, BuildStatus::Success, None, 2_000)
        .await;
    assert!(is_no_build(result, UNKNOWN));
}

// --- Chunk rows ------------------------------------------------------------------------------

async fn ensure_chunks_creates_missing_rows_in_index_order(f: &Fixture) {
    let b = f.build().await;
    assert!(f.store.chunks(b.id).await.unwrap().is_empty());
    f.store
        .ensure_chunks(b.id, &[2, 0, 2, 1], DataStore::Redis, 3_000)
        .await
        .unwrap();
    let want: Vec<_> = (0..3)
        .map(|i| ChunkRow {
            build_id: b.id,
            chunk_index: i,
            data_store: DataStore::Redis,
            size: 0,
            crc32: None,
            lock_version: 0,
        })
        .collect();
    assert_eq!(f.store.chunks(b.id).await.unwrap(), want);
    f.store
        .ensure_chunks(b.id, &[], DataStore::Redis, 3_000)
        .await
        .unwrap();
    assert_eq!(f.store.chunks(b.id).await.unwrap(), want);
    assert!(f.store.chunks(UNKNOWN).await.unwrap().is_empty());
}

async fn ensure_chunks_is_idempotent_and_leaves_existing_rows_alone(f: &Fixture) {
    let b = f.build().await;
    f.store
        .ensure_chunks(b.id, &[0, 1], DataStore::Redis, 3_000)
        .await
        .unwrap();
    let zero = f.chunk(b.id, 0).await;
    assert!(
        f.store
            .flip_chunk(&flip(&zero, DataStore::Object, CHUNK_SIZE, None), 3_100)
            .await
            .unwrap()
    );
    let flushed = f.chunk(b.id, 0).await;
    f.store
        .ensure_chunks(b.id, &[0, 1], DataStore::Redis, 3_200)
        .await
        .unwrap();
    f.store
        .ensure_chunks(b.id, &[0, 1, 2], DataStore::Database, 3_300)
        .await
        .unwrap();
    let rows = f.store.chunks(b.id).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], flushed, "store, size, crc32 and version kept");
    assert_eq!(
        (rows[0].data_store, rows[0].size),
        (DataStore::Object, CHUNK_SIZE)
    );
    assert_eq!(
        (rows[1].data_store, rows[1].size, rows[1].lock_version),
        (DataStore::Redis, 0, 0),
        "the second call does not re-store chunk 1"
    );
    assert_eq!(
        (rows[2].data_store, rows[2].size, rows[2].lock_version),
        (DataStore::Database, 0, 0)
    );
}

async fn ensure_chunks_for_an_unknown_build_is_no_build_and_writes_nothing(f: &Fixture) {
    let result = f
        .store
        .ensure_chunks(UNKNOWN, &[0, 1], DataStore::Redis, 3_000)
        .await;
    assert!(is_no_build(result, UNKNOWN));
    assert_eq!(
        f.db.scalar_i64("SELECT COUNT(*) FROM build_trace_chunks")
            .await,
        Some(0)
    );
}

async fn a_flip_applies_with_the_read_lock_version_and_not_with_a_stale_one(f: &Fixture) {
    let b = f.build().await;
    f.store
        .ensure_chunks(b.id, &[0], DataStore::Redis, 3_000)
        .await
        .unwrap();
    let read = f.chunk(b.id, 0).await;
    let data = vec![7u8; 100];
    let to_object = ChunkFlip {
        crc32: crc32fast::hash(&data),
        ..flip(&read, DataStore::Object, 100, None)
    };
    assert!(f.store.flip_chunk(&to_object, 3_100).await.unwrap());
    let flipped = f.chunk(b.id, 0).await;
    assert_eq!(
        flipped,
        ChunkRow {
            data_store: DataStore::Object,
            size: 100,
            crc32: Some(crc32fast::hash(&data)),
            lock_version: read.lock_version + 1,
            ..read.clone()
        }
    );
    // The same flip again (a retried flush that read the old version) matches nothing.
    assert!(!f.store.flip_chunk(&to_object, 3_200).await.unwrap());
    let stale = flip(&read, DataStore::Database, 3, Some(b"abc".to_vec()));
    assert!(!f.store.flip_chunk(&stale, 3_200).await.unwrap());
    assert_eq!(f.chunk(b.id, 0).await, flipped, "nothing changed");
    assert_eq!(f.store.chunk_data(b.id, 0).await.unwrap(), None);
    // A row that is not there does not flip either.
    let missing = ChunkFlip {
        chunk_index: 9,
        ..to_object.clone()
    };
    assert!(!f.store.flip_chunk(&missing, 3_300).await.unwrap());
    let unknown = ChunkFlip {
        build_id: UNKNOWN,
        ..to_object
    };
    assert!(!f.store.flip_chunk(&unknown, 3_300).await.unwrap());
}

async fn of_two_concurrent_flips_of_one_chunk_exactly_one_wins(f: &Fixture) {
    let b = f.build().await;
    let indexes: Vec<u64> = (0..8).collect();
    f.store
        .ensure_chunks(b.id, &indexes, DataStore::Redis, 3_000)
        .await
        .unwrap();
    let rows = f.store.chunks(b.id).await.unwrap();
    // Per chunk, two flushers that read the same version: one to object, one to the database.
    let mut tasks = Vec::new();
    for row in &rows {
        let bytes = vec![row.chunk_index as u8; 50];
        for attempt in [
            flip(row, DataStore::Object, 40, None),
            flip(row, DataStore::Database, 50, Some(bytes.clone())),
        ] {
            let store = f.store.clone();
            tasks.push(tokio::spawn(async move {
                let won = store.flip_chunk(&attempt, 3_100).await.unwrap();
                (attempt, won)
            }));
        }
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    for row in &rows {
        let wins: Vec<_> = outcomes
            .iter()
            .filter(|(attempt, won)| *won && attempt.chunk_index == row.chunk_index)
            .map(|(attempt, _)| attempt)
            .collect();
        assert_eq!(wins.len(), 1, "chunk {}: {wins:?}", row.chunk_index);
        let winner = wins[0];
        let now = f.chunk(b.id, row.chunk_index).await;
        assert_eq!(
            (now.data_store, now.size, now.lock_version),
            (winner.to, winner.size, row.lock_version + 1),
            "the row is the winner's"
        );
        assert_eq!(
            f.store.chunk_data(b.id, row.chunk_index).await.unwrap(),
            winner.raw_data
        );
    }
}

async fn a_flip_to_the_database_keeps_the_bytes_and_a_flip_to_object_clears_them(f: &Fixture) {
    let b = f.build().await;
    f.store
        .ensure_chunks(b.id, &[0, 1], DataStore::Redis, 3_000)
        .await
        .unwrap();
    // Any byte values, a whole chunk of them.
    let data: Vec<u8> = (0..C).map(|i| (i as u8).wrapping_mul(151) ^ 0x80).collect();
    let row = f.chunk(b.id, 0).await;
    assert!(
        f.store
            .flip_chunk(
                &flip(&row, DataStore::Database, C as u64, Some(data.clone())),
                3_100
            )
            .await
            .unwrap()
    );
    assert_eq!(f.store.chunk_data(b.id, 0).await.unwrap(), Some(data));
    let row = f.chunk(b.id, 0).await;
    assert_eq!((row.data_store, row.size), (DataStore::Database, C as u64));
    // The outage is over: the chunk moves on to the object store and leaves no bytes behind,
    // even if the flip carried some.
    let to_object = ChunkFlip {
        raw_data: Some(b"ignored".to_vec()),
        ..flip(&row, DataStore::Object, C as u64, None)
    };
    assert!(f.store.flip_chunk(&to_object, 3_200).await.unwrap());
    assert_eq!(f.store.chunk_data(b.id, 0).await.unwrap(), None);
    assert_eq!(f.chunk(b.id, 0).await.data_store, DataStore::Object);
    assert_eq!(
        f.db.scalar_i64("SELECT COUNT(*) FROM build_trace_chunks WHERE raw_data IS NOT NULL")
            .await,
        Some(0)
    );
    // No bytes for a Redis row, a missing row or an unknown build.
    assert_eq!(f.store.chunk_data(b.id, 1).await.unwrap(), None);
    assert_eq!(f.store.chunk_data(b.id, 5).await.unwrap(), None);
    assert_eq!(f.store.chunk_data(UNKNOWN, 0).await.unwrap(), None);
}

async fn deleting_chunks_drops_every_row_of_the_build_and_no_other(f: &Fixture) {
    let (a, b) = (f.build().await, f.build().await);
    f.store
        .ensure_chunks(a.id, &[0, 1, 2], DataStore::Redis, 3_000)
        .await
        .unwrap();
    f.store
        .ensure_chunks(b.id, &[0], DataStore::Redis, 3_000)
        .await
        .unwrap();
    let row = f.chunk(a.id, 1).await;
    f.store
        .flip_chunk(
            &flip(&row, DataStore::Database, 2, Some(b"hi".to_vec())),
            3_100,
        )
        .await
        .unwrap();
    assert_eq!(f.store.delete_chunks(a.id).await.unwrap(), 3);
    assert!(f.store.chunks(a.id).await.unwrap().is_empty());
    assert_eq!(f.store.chunk_data(a.id, 1).await.unwrap(), None);
    assert_eq!(f.store.chunks(b.id).await.unwrap().len(), 1);
    assert_eq!(f.store.delete_chunks(a.id).await.unwrap(), 0);
    assert_eq!(f.store.delete_chunks(UNKNOWN).await.unwrap(), 0);
}

// --- Pending states --------------------------------------------------------------------------

async fn the_first_pending_state_wins(f: &Fixture) {
    let b = f.build().await;
    assert_eq!(f.store.pending_state(b.id).await.unwrap(), None);
    let first = pending(b.id, BuildStatus::Failed, u32::MAX);
    assert_eq!(f.store.upsert_pending_state(&first).await.unwrap(), first);
    let second = PendingState {
        trace_bytesize: None,
        trace_checksum: None,
        exit_code: None,
        created_at_ms: 6_000,
        ..pending(b.id, BuildStatus::Success, 1)
    };
    assert_eq!(
        f.store.upsert_pending_state(&second).await.unwrap(),
        first,
        "the stored one"
    );
    assert_eq!(f.store.pending_state(b.id).await.unwrap(), Some(first));
    f.store.delete_pending_state(b.id).await.unwrap();
    assert_eq!(f.store.pending_state(b.id).await.unwrap(), None);
    f.store.delete_pending_state(b.id).await.unwrap();
    assert_eq!(
        f.store.upsert_pending_state(&second).await.unwrap(),
        second,
        "after a delete the next one is stored"
    );
}

async fn of_concurrent_pending_states_one_is_stored_and_all_get_it(f: &Fixture) {
    let b = f.build().await;
    let states: Vec<_> = (0..6u32)
        .map(|i| pending(b.id, BuildStatus::Success, i))
        .collect();
    let tasks: Vec<_> = states
        .iter()
        .cloned()
        .map(|state| {
            let store = f.store.clone();
            tokio::spawn(async move { store.upsert_pending_state(&state).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let stored = f.store.pending_state(b.id).await.unwrap().unwrap();
    assert!(states.contains(&stored));
    assert!(got.iter().all(|g| *g == stored), "{got:?}");
}

async fn a_pending_state_for_an_unknown_build_is_no_build(f: &Fixture) {
    let state = pending(UNKNOWN, BuildStatus::Success, 1);
    assert!(is_no_build(
        f.store.upsert_pending_state(&state).await,
        UNKNOWN
    ));
    assert_eq!(f.store.pending_state(UNKNOWN).await.unwrap(), None);
    f.store.delete_pending_state(UNKNOWN).await.unwrap();
}

// --- Trace metadata and archives -------------------------------------------------------------

async fn checksums_are_recorded_and_a_mismatch_flags_the_log_for_good(f: &Fixture) {
    let b = f.build().await;
    assert_eq!(f.store.trace_metadata(b.id).await.unwrap(), None);
    f.store
        .record_checksums(b.id, u32::MAX, Some(u32::MAX), Some(true))
        .await
        .unwrap();
    assert_eq!(
        f.store.trace_metadata(b.id).await.unwrap(),
        Some(TraceMetadata {
            build_id: b.id,
            checksum: Some(u32::MAX),
            remote_checksum: Some(u32::MAX),
            checksum_valid: Some(true),
            ..TraceMetadata::default()
        })
    );
    f.store
        .record_checksums(b.id, 1, Some(2), Some(false))
        .await
        .unwrap();
    let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
    assert_eq!(
        (m.checksum, m.remote_checksum, m.checksum_valid, m.invalid),
        (Some(1), Some(2), Some(false), true)
    );
    // A later check that passes records itself, and the flag stays.
    f.store
        .record_checksums(b.id, 2, Some(2), Some(true))
        .await
        .unwrap();
    let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
    assert_eq!((m.checksum_valid, m.invalid), (Some(true), true));
    // No runner checksum: not checked.
    let c = f.build().await;
    f.store.record_checksums(c.id, 5, None, None).await.unwrap();
    let m = f.store.trace_metadata(c.id).await.unwrap().unwrap();
    assert_eq!(
        (m.checksum, m.remote_checksum, m.checksum_valid, m.invalid),
        (Some(5), None, None, false)
    );
    assert!(is_no_build(
        f.store.record_checksums(UNKNOWN, 1, None, None).await,
        UNKNOWN
    ));
    assert_eq!(f.store.trace_metadata(UNKNOWN).await.unwrap(), None);
}

async fn archival_attempts_are_counted_and_stamped(f: &Fixture) {
    let b = f.build().await;
    f.store
        .record_checksums(b.id, 9, Some(9), Some(true))
        .await
        .unwrap();
    for (n, now) in [(1, 10_000), (2, 20_000), (3, 30_000)] {
        assert_eq!(
            f.store
                .increment_archival_attempts(b.id, now)
                .await
                .unwrap(),
            n
        );
        let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
        assert_eq!(
            (m.archival_attempts, m.last_archival_attempt_at_ms),
            (n, Some(now))
        );
        assert_eq!(
            (m.checksum, m.checksum_valid),
            (Some(9), Some(true)),
            "kept"
        );
    }
    // The first attempt may create the row.
    let c = f.build().await;
    assert_eq!(
        f.store
            .increment_archival_attempts(c.id, 11_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        f.store.trace_metadata(c.id).await.unwrap(),
        Some(TraceMetadata {
            build_id: c.id,
            archival_attempts: 1,
            last_archival_attempt_at_ms: Some(11_000),
            ..TraceMetadata::default()
        })
    );
    assert!(is_no_build(
        f.store.increment_archival_attempts(UNKNOWN, 1).await,
        UNKNOWN
    ));
}

async fn concurrent_archival_attempts_are_all_counted(f: &Fixture) {
    let b = f.build().await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = f.store.clone();
            tokio::spawn(async move {
                store
                    .increment_archival_attempts(b.id, 10_000 + i)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=10).collect::<Vec<u32>>());
}

async fn record_archive_writes_the_artifact_and_the_metadata(f: &Fixture) {
    let b = f.build().await;
    f.store
        .record_checksums(b.id, 1, Some(0xdead_beef), Some(false))
        .await
        .unwrap();
    f.store
        .increment_archival_attempts(b.id, 20_000)
        .await
        .unwrap();
    assert_eq!(f.store.trace_artifact(b.id).await.unwrap(), None);
    let new = new_artifact(b.id, "traces/2026/01/02/1/job.log");
    let art = f.store.record_archive(&new, 21_000).await.unwrap();
    assert_eq!(
        art,
        Artifact {
            id: art.id,
            build_id: b.id,
            kind: "trace".into(),
            object_path: new.object_path.clone(),
            size: new.size,
            crc32: 0xdead_beef,
            sha256: new.sha256.clone(),
            expire_at_ms: Some(99_000),
            locked: false,
            created_at_ms: 21_000,
        }
    );
    assert_eq!(
        f.store.trace_artifact(b.id).await.unwrap(),
        Some(art.clone())
    );
    assert_eq!(
        f.store.trace_metadata(b.id).await.unwrap(),
        Some(TraceMetadata {
            build_id: b.id,
            checksum: Some(0xdead_beef),
            remote_checksum: Some(0xdead_beef),
            checksum_valid: Some(false),
            archival_attempts: 1,
            last_archival_attempt_at_ms: Some(20_000),
            archived_at_ms: Some(21_000),
            trace_artifact_id: Some(art.id),
            invalid: true,
            lost_bytes: 0,
        }),
        "the archive's CRC32 is now ours; the rest is kept"
    );
    // The metadata row may not exist yet.
    let c = f.build().await;
    let art_c = f
        .store
        .record_archive(&new_artifact(c.id, "c.log"), 22_000)
        .await
        .unwrap();
    let m = f.store.trace_metadata(c.id).await.unwrap().unwrap();
    assert_eq!(
        (m.trace_artifact_id, m.checksum, m.archived_at_ms),
        (Some(art_c.id), Some(0xdead_beef), Some(22_000))
    );
    assert_ne!(art.id, art_c.id);
    assert_eq!(f.store.trace_artifact(UNKNOWN).await.unwrap(), None);
}

async fn record_archive_happens_once_per_build(f: &Fixture) {
    let b = f.build().await;
    let first = f
        .store
        .record_archive(&new_artifact(b.id, "first.log"), 21_000)
        .await
        .unwrap();
    let again = NewArtifact {
        crc32: 1,
        size: 3,
        ..new_artifact(b.id, "second.log")
    };
    assert_eq!(
        f.store.record_archive(&again, 22_000).await.unwrap(),
        first,
        "the existing artifact, unchanged"
    );
    let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
    assert_eq!(
        (m.trace_artifact_id, m.checksum, m.archived_at_ms),
        (Some(first.id), Some(0xdead_beef), Some(21_000))
    );
    assert_eq!(
        f.db.scalar_i64("SELECT COUNT(*) FROM job_artifacts").await,
        Some(1)
    );
}

async fn concurrent_record_archives_write_one_artifact(f: &Fixture) {
    let b = f.build().await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = f.store.clone();
            let new = new_artifact(b.id, &format!("run-{i}.log"));
            tokio::spawn(async move { store.record_archive(&new, 21_000 + i).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        f.db.scalar_i64("SELECT COUNT(*) FROM job_artifacts").await,
        Some(1)
    );
    let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
    assert_eq!(m.trace_artifact_id, Some(ids[0]));
}

async fn record_archive_for_an_unknown_build_is_no_build_and_writes_nothing(f: &Fixture) {
    let result = f
        .store
        .record_archive(&new_artifact(UNKNOWN, "x.log"), 21_000)
        .await;
    assert!(is_no_build(result, UNKNOWN));
    assert_eq!(
        f.db.scalar_i64("SELECT COUNT(*) FROM job_artifacts").await,
        Some(0)
    );
}

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

// --- Artifact expiry: expired artifacts, deleting one, leases ---------------------------------

/// A build archived with `expire_at_ms` (`None`: kept forever).
async fn archived(f: &Fixture, expire_at_ms: Option<i64>) -> Artifact {
    let b = f.build().await;
    let new = NewArtifact {
        expire_at_ms,
        ..new_artifact(b.id, &format!("traces/{}/job.log", b.id))
    };
    f.store.record_archive(&new, 21_000).await.unwrap()
}

fn ids(artifacts: &[Artifact]) -> Vec<i64> {
    artifacts.iter().map(|a| a.id).collect()
}

async fn expired_artifacts_are_the_unlocked_ones_due_oldest_first(f: &Fixture) {
    let forever = archived(f, None).await;
    let later = archived(f, Some(50_000)).await;
    let due_late = archived(f, Some(40_000)).await;
    let due_early = archived(f, Some(30_000)).await;
    let due_same = archived(f, Some(30_000)).await;
    let due_exactly = archived(f, Some(45_000)).await;
    let locked = archived(f, Some(10_000)).await;
    f.db.execute("UPDATE job_artifacts SET locked = true WHERE expire_at = 10000")
        .await;
    let expired = f.store.expired_artifacts(45_000, 100).await.unwrap();
    // (expire_at, id) order; `expire_at <= now` includes now.
    assert_eq!(
        ids(&expired),
        vec![due_early.id, due_same.id, due_late.id, due_exactly.id]
    );
    assert_eq!(expired[0], due_early, "whole artifacts");
    for kept in [&forever, &later, &locked] {
        assert!(!ids(&expired).contains(&kept.id), "{kept:?}");
    }
    // The limit takes the oldest.
    assert_eq!(
        ids(&f.store.expired_artifacts(45_000, 2).await.unwrap()),
        vec![due_early.id, due_same.id]
    );
    assert!(
        f.store
            .expired_artifacts(29_999, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_newest_trace_artifact_is_the_last_written(f: &Fixture) {
    assert_eq!(f.store.newest_trace_artifact().await.unwrap(), None);
    archived(f, Some(30_000)).await;
    let newest = archived(f, None).await;
    assert_eq!(f.store.newest_trace_artifact().await.unwrap(), Some(newest));
}

async fn deleting_an_artifact_keeps_the_build_archived_without_it(f: &Fixture) {
    let gone = archived(f, Some(30_000)).await;
    let other = archived(f, Some(30_000)).await;
    assert!(f.store.delete_artifact(gone.id).await.unwrap());
    assert_eq!(f.store.trace_artifact(gone.build_id).await.unwrap(), None);
    let m = f
        .store
        .trace_metadata(gone.build_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.trace_artifact_id, m.archived_at_ms, m.checksum),
        (None, Some(21_000), Some(0xdead_beef)),
        "the metadata stays, without its artifact"
    );
    assert_eq!(
        ids(&f.store.expired_artifacts(30_000, 10).await.unwrap()),
        vec![other.id]
    );
    assert_eq!(
        f.store.trace_artifact(other.build_id).await.unwrap(),
        Some(other)
    );
    // Again, or an id that never was: nothing to delete.
    assert!(!f.store.delete_artifact(gone.id).await.unwrap());
    assert!(!f.store.delete_artifact(UNKNOWN).await.unwrap());
    // Stale-trace recovery does not see the build again: it stays archived.
    let finished = f
        .store
        .finish_build(gone.build_id, BuildStatus::Success, None, 2_000)
        .await
        .unwrap();
    assert_eq!(finished.status, BuildStatus::Success);
    assert!(
        f.store
            .stale_traces(0, i64::MAX, u32::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_lease_has_one_holder_until_it_expires_or_is_released(f: &Fixture) {
    let s = &f.store;
    assert!(s.take_lease("expiry", "a", 1_000, 61_000).await.unwrap());
    assert!(
        !s.take_lease("expiry", "b", 2_000, 62_000).await.unwrap(),
        "held by a"
    );
    assert!(
        s.take_lease("other", "b", 2_000, 62_000).await.unwrap(),
        "names are independent"
    );
    // The holder renews; until the renewed expiry nobody else takes it.
    assert!(s.take_lease("expiry", "a", 50_000, 110_000).await.unwrap());
    assert!(!s.take_lease("expiry", "b", 100_000, 160_000).await.unwrap());
    // Only the holder releases.
    assert!(!s.release_lease("expiry", "b").await.unwrap());
    assert!(!s.take_lease("expiry", "b", 100_000, 160_000).await.unwrap());
    assert!(s.release_lease("expiry", "a").await.unwrap());
    assert!(!s.release_lease("expiry", "a").await.unwrap(), "once");
    assert!(s.take_lease("expiry", "b", 100_000, 160_000).await.unwrap());
    // Expired at `now`: free for another holder, and the old holder can no longer renew or
    // release it.
    assert!(s.take_lease("expiry", "c", 160_000, 220_000).await.unwrap());
    assert!(!s.take_lease("expiry", "b", 160_001, 220_001).await.unwrap());
    assert!(!s.release_lease("expiry", "b").await.unwrap());
    assert!(s.release_lease("expiry", "c").await.unwrap());
}

async fn of_concurrent_takers_of_a_lease_exactly_one_holds_it(f: &Fixture) {
    // Free, then expired: each time, of ten takers one wins.
    for (round, now) in [(0, 1_000i64), (1, 100_000)] {
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = f.store.clone();
                tokio::spawn(async move {
                    let holder = format!("r{round}-{i}");
                    let won = store
                        .take_lease("expiry", &holder, now, now + 60_000)
                        .await
                        .unwrap();
                    (holder, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (holder, won) = t.await.unwrap();
            if won {
                winners.push(holder);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        // The winner holds it: it renews, others are refused.
        assert!(
            f.store
                .take_lease("expiry", &winners[0], now + 1, now + 60_000)
                .await
                .unwrap()
        );
        assert!(
            !f.store
                .take_lease("expiry", "late", now + 1, now + 60_000)
                .await
                .unwrap()
        );
    }
}

// --- The SQL live chunk store and the metadata on one database -------------------------------

async fn appended(live: &SqlLiveChunks, build: i64, offset: u64, data: &[u8]) {
    match live.append(build, offset, data).await.unwrap() {
        AppendOutcome::Appended { .. } => {}
        other => panic!("append at {offset} refused: {other:?}"),
    }
}

async fn rows_the_live_store_writes_are_the_rows_the_metadata_lists(f: &Fixture) {
    let live = f.live();
    let b = f.build().await;
    let data: Vec<u8> = (0..C + 10).map(|i| (i % 251) as u8).collect();
    appended(&live, b.id, 0, &data).await;
    let rows = f.store.chunks(b.id).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.chunk_index, r.data_store, r.size, r.crc32))
            .collect::<Vec<_>>(),
        vec![
            (0, DataStore::Database, C as u64, None),
            (1, DataStore::Database, 10, None)
        ]
    );
    // Live bytes are the database store's: `chunk_data` reads them as they are.
    assert_eq!(
        f.store.chunk_data(b.id, 1).await.unwrap().as_deref(),
        Some(&data[C..])
    );
    // ensure_chunks (the Redis path's) leaves the live store's rows alone.
    f.store
        .ensure_chunks(b.id, &[0, 1], DataStore::Redis, 3_000)
        .await
        .unwrap();
    assert_eq!(f.store.chunks(b.id).await.unwrap(), rows);

    // The full chunk is flushed to the object store: the live store no longer reads it.
    let full = &rows[0];
    let to_object = ChunkFlip {
        crc32: crc32fast::hash(&data[..C]),
        ..flip(full, DataStore::Object, C as u64, None)
    };
    assert!(f.store.flip_chunk(&to_object, 3_100).await.unwrap());
    assert_eq!(live.read_chunk(b.id, 0).await.unwrap(), None);
    assert_eq!(f.store.chunk_data(b.id, 0).await.unwrap(), None);
    assert_eq!(
        live.read_chunk(b.id, 1).await.unwrap().as_deref(),
        Some(&data[C..])
    );
    assert_eq!(live.length(b.id).await.unwrap(), (C + 10) as u64);
    let row = f.chunk(b.id, 0).await;
    assert_eq!(
        (row.data_store, row.size, row.crc32),
        (DataStore::Object, C as u64, Some(to_object.crc32))
    );
}

async fn a_flush_that_read_a_chunk_before_an_append_loses(f: &Fixture) {
    let live = f.live();
    let b = f.build().await;
    appended(&live, b.id, 0, b"first").await;
    let read = f.chunk(b.id, 0).await;
    // A runner appends after the flusher read the row (and the bytes).
    appended(&live, b.id, 5, b" second").await;
    let stale = flip(&read, DataStore::Object, 5, None);
    assert!(!f.store.flip_chunk(&stale, 3_100).await.unwrap());
    assert_eq!(
        live.read_chunk(b.id, 0).await.unwrap().as_deref(),
        Some(&b"first second"[..]),
        "the appended bytes are still live"
    );
    // Re-read, flip: now it applies.
    let fresh = f.chunk(b.id, 0).await;
    assert_eq!(fresh.size, 12);
    assert!(
        f.store
            .flip_chunk(&flip(&fresh, DataStore::Object, 12, None), 3_200)
            .await
            .unwrap()
    );
    assert_eq!(live.read_chunk(b.id, 0).await.unwrap(), None);
}

/// One module of tests against one database, each test with a fixture of its own.
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

// --- Stuck builds and partial traces -----------------------------------------------------------

async fn stuck_build_queries_see_running_builds_by_activity_and_overdue_pending_states(
    f: &Fixture,
) {
    let quiet = f.build().await;
    let active = f.build().await;
    let finishing = f.build().await;
    let done = f.build().await;
    f.store.record_activity(active.id, 50_000).await.unwrap();
    // Never back.
    f.store.record_activity(active.id, 40_000).await.unwrap();
    f.store
        .upsert_pending_state(&pending(finishing.id, BuildStatus::Success, 1))
        .await
        .unwrap();
    f.store
        .finish_build(done.id, BuildStatus::Success, None, 2_000)
        .await
        .unwrap();
    let ids = |builds: Vec<IdleBuild>| builds.into_iter().map(|b| b.id).collect::<Vec<_>>();
    let start = (i64::MIN, i64::MIN);

    // Registration counts as activity; a build with a pending state is finishing, not idle.
    assert_eq!(
        f.store
            .idle_running_builds(10_000, start, 10)
            .await
            .unwrap(),
        vec![IdleBuild {
            id: quiet.id,
            activity_at_ms: 1_000,
            created_at_ms: 1_000
        }]
    );
    assert_eq!(
        ids(f
            .store
            .idle_running_builds(60_000, start, 10)
            .await
            .unwrap()),
        vec![quiet.id, active.id]
    );
    assert_eq!(
        ids(f.store.idle_running_builds(60_000, start, 1).await.unwrap()),
        vec![quiet.id]
    );
    assert_eq!(
        ids(f
            .store
            .idle_running_builds(60_000, (1_000, quiet.id), 10)
            .await
            .unwrap()),
        vec![active.id],
        "pages by (activity_at, id)"
    );

    // The pending state was stored at 5,000: overdue strictly after.
    assert!(
        f.store
            .overdue_pending_states(5_000, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.store.overdue_pending_states(5_001, 0, 10).await.unwrap(),
        vec![finishing.id]
    );
    assert!(
        f.store
            .overdue_pending_states(5_001, finishing.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    f.store
        .finish_build(finishing.id, BuildStatus::Success, None, 6_000)
        .await
        .unwrap();
    assert!(
        f.store
            .overdue_pending_states(99_000, 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "a committed state is not pending any more"
    );
}

async fn lost_bytes_make_a_trace_partial(f: &Fixture) {
    let b = f.build().await;
    f.store.record_lost_bytes(b.id, 131_072).await.unwrap();
    let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
    assert_eq!((m.lost_bytes, m.partial()), (131_072, true));
    // Set, not added: a rerun finds the same gap.
    f.store.record_lost_bytes(b.id, 131_072).await.unwrap();
    f.store
        .record_checksums(b.id, 1, Some(2), Some(false))
        .await
        .unwrap();
    let m = f.store.trace_metadata(b.id).await.unwrap().unwrap();
    assert_eq!((m.lost_bytes, m.checksum_valid), (131_072, Some(false)));
    assert!(is_no_build(
        f.store.record_lost_bytes(UNKNOWN, 1).await,
        UNKNOWN
    ));
}

// --- The dashboard's builds list --------------------------------------------------------------

async fn builds_pages_list_newest_first_by_filter_with_their_trace_state(f: &Fixture) {
    let live = f.build().await;
    let flushing = f.build().await;
    let archived_ok = f.build().await;
    let partial = f.build().await;
    let expired = f.build().await;
    let mismatch = f.build().await;
    let running = f.build().await;
    for (b, status) in [
        (flushing.id, BuildStatus::Failed),
        (archived_ok.id, BuildStatus::Success),
        (partial.id, BuildStatus::Success),
        (expired.id, BuildStatus::Success),
        (mismatch.id, BuildStatus::Canceled),
    ] {
        let reason = (status == BuildStatus::Failed).then_some("script_failure");
        f.store
            .finish_build(b, status, reason, 2_000)
            .await
            .unwrap();
    }
    for b in [archived_ok.id, partial.id, expired.id] {
        f.store
            .record_archive(&new_artifact(b, &format!("traces/{b}/job.log")), 3_000)
            .await
            .unwrap();
    }
    f.store.record_lost_bytes(partial.id, 4_096).await.unwrap();
    let gone = f.store.trace_artifact(expired.id).await.unwrap().unwrap();
    assert!(f.store.delete_artifact(gone.id).await.unwrap());
    f.store
        .record_checksums(mismatch.id, 1, Some(2), Some(false))
        .await
        .unwrap();
    f.store
        .record_checksums(archived_ok.id, 1, Some(1), Some(true))
        .await
        .unwrap();

    let page = |filter, before, limit| {
        let store = f.store.clone();
        async move {
            store
                .builds_page(filter, before, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|b| b.id)
                .collect::<Vec<_>>()
        }
    };
    let all = vec![
        running.id,
        mismatch.id,
        expired.id,
        partial.id,
        archived_ok.id,
        flushing.id,
        live.id,
    ];
    assert_eq!(page(BuildListFilter::All, i64::MAX, 100).await, all);
    // Keyset pages: `before` the last id seen, `limit` at a time, nothing skipped or repeated.
    assert_eq!(page(BuildListFilter::All, i64::MAX, 3).await, all[..3]);
    assert_eq!(page(BuildListFilter::All, all[2], 3).await, all[3..6]);
    assert_eq!(page(BuildListFilter::All, all[5], 3).await, all[6..]);
    assert!(page(BuildListFilter::All, live.id, 3).await.is_empty());
    assert_eq!(
        page(BuildListFilter::Running, i64::MAX, 100).await,
        vec![running.id, live.id]
    );
    assert_eq!(
        page(BuildListFilter::Running, running.id, 100).await,
        vec![live.id]
    );
    assert_eq!(
        page(BuildListFilter::Finished, i64::MAX, 100).await,
        all[1..6]
    );
    assert_eq!(
        page(BuildListFilter::Partial, i64::MAX, 100).await,
        vec![partial.id]
    );
    assert!(
        page(BuildListFilter::Partial, partial.id, 100)
            .await
            .is_empty()
    );
    assert_eq!(
        page(BuildListFilter::Mismatch, i64::MAX, 100).await,
        vec![mismatch.id]
    );

    let rows = f
        .store
        .builds_page(BuildListFilter::All, i64::MAX, 100)
        .await
        .unwrap();
    let row = |id: i64| -> &BuildSummary { rows.iter().find(|r| r.id == id).unwrap() };
    assert_eq!(
        row(flushing.id),
        &BuildSummary {
            id: flushing.id,
            status: BuildStatus::Failed,
            failure_reason: Some("script_failure".into()),
            created_at_ms: 1_000,
            finished_at_ms: Some(2_000),
            trace_state: TraceState::Flushing,
            archived_size: None,
            checksum_valid: None,
            lost_bytes: 0,
        }
    );
    // (id, trace state, archive size, checksum valid, lost bytes)
    let states: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.id,
                r.trace_state,
                r.archived_size,
                r.checksum_valid,
                r.lost_bytes,
            )
        })
        .collect();
    let size = Some(5 * CHUNK_SIZE);
    assert_eq!(
        states,
        vec![
            (running.id, TraceState::Live, None, None, 0),
            (mismatch.id, TraceState::Flushing, None, Some(false), 0),
            (expired.id, TraceState::Expired, None, None, 0),
            (partial.id, TraceState::Archived, size, None, 4_096),
            (archived_ok.id, TraceState::Archived, size, Some(true), 0),
            (flushing.id, TraceState::Flushing, None, None, 0),
            (live.id, TraceState::Live, None, None, 0),
        ]
    );
}

macro_rules! on_every_sql_store {
    ($($name:ident),* $(,)?) => {
        tests_on!(sqlite, sqlite, $($name),*);
        tests_on!(postgres, postgres, $($name),*);
    };
}

on_every_sql_store!(
    a_created_build_is_running_and_reads_back,
    a_build_finishes_once_and_later_calls_change_nothing,
    finishing_with_running_leaves_a_running_build_running,
    of_concurrent_finishes_exactly_one_commits,
    finishing_an_unknown_build_is_no_build,
    ensure_chunks_creates_missing_rows_in_index_order,
    ensure_chunks_is_idempotent_and_leaves_existing_rows_alone,
    ensure_chunks_for_an_unknown_build_is_no_build_and_writes_nothing,
    a_flip_applies_with_the_read_lock_version_and_not_with_a_stale_one,
    of_two_concurrent_flips_of_one_chunk_exactly_one_wins,
    a_flip_to_the_database_keeps_the_bytes_and_a_flip_to_object_clears_them,
    deleting_chunks_drops_every_row_of_the_build_and_no_other,
    the_first_pending_state_wins,
    of_concurrent_pending_states_one_is_stored_and_all_get_it,
    a_pending_state_for_an_unknown_build_is_no_build,
    checksums_are_recorded_and_a_mismatch_flags_the_log_for_good,
    archival_attempts_are_counted_and_stamped,
    concurrent_archival_attempts_are_all_counted,
    record_archive_writes_the_artifact_and_the_metadata,
    record_archive_happens_once_per_build,
    concurrent_record_archives_write_one_artifact,
    record_archive_for_an_unknown_build_is_no_build_and_writes_nothing,
    values_beyond_bigint_are_refused_and_write_nothing,
    expired_artifacts_are_the_unlocked_ones_due_oldest_first,
    deleting_an_artifact_keeps_the_build_archived_without_it,
    the_newest_trace_artifact_is_the_last_written,
    a_lease_has_one_holder_until_it_expires_or_is_released,
    of_concurrent_takers_of_a_lease_exactly_one_holds_it,
    rows_the_live_store_writes_are_the_rows_the_metadata_lists,
    a_flush_that_read_a_chunk_before_an_append_loses,
    stuck_build_queries_see_running_builds_by_activity_and_overdue_pending_states,
    lost_bytes_make_a_trace_partial,
    builds_pages_list_newest_first_by_filter_with_their_trace_state,
);

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
