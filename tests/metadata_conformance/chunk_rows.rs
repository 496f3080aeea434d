//! Chunk rows (`ChunkRowStore`): `ensure_chunks` leaves existing rows alone; of two flips read
//! at one `lock_version` exactly one applies.

use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::metadata::{ChunkFlip, ChunkRowStore};
use buildlogs::traces::model::{ChunkRow, DataStore};

use crate::{C, Fixture, UNKNOWN, flip, is_no_build};

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

on_every_sql_store!(
    ensure_chunks_creates_missing_rows_in_index_order,
    ensure_chunks_is_idempotent_and_leaves_existing_rows_alone,
    ensure_chunks_for_an_unknown_build_is_no_build_and_writes_nothing,
    a_flip_applies_with_the_read_lock_version_and_not_with_a_stale_one,
    of_two_concurrent_flips_of_one_chunk_exactly_one_wins,
    a_flip_to_the_database_keeps_the_bytes_and_a_flip_to_object_clears_them,
    deleting_chunks_drops_every_row_of_the_build_and_no_other,
);
