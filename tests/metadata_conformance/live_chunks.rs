//! The SQL live chunk store and the metadata on one database agree on its chunk rows.

use buildlogs::stores::sql_live::SqlLiveChunks;
use buildlogs::traces::live::{AppendOutcome, LiveChunkStore};
use buildlogs::traces::metadata::{ChunkFlip, ChunkRowStore};
use buildlogs::traces::model::DataStore;

use crate::{C, Fixture, flip};

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

on_every_sql_store!(
    rows_the_live_store_writes_are_the_rows_the_metadata_lists,
    a_flush_that_read_a_chunk_before_an_append_loses,
);
