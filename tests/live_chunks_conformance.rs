//! The live chunk store contract (`src/traces/live.rs`), run against each implementation:
//! Redis now; the SQL database store joins with the embedded stack.

mod support;

use std::sync::Arc;

use buildlogs::stores::redis_live::RedisLiveChunks;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::live::{AppendOutcome, LiveChunkStore, LiveStoreError};

const B: i64 = 42;
const C: usize = CHUNK_SIZE as usize;

struct Fixture {
    store: Arc<dyn LiveChunkStore>,
    redis_prefix: String,
}

impl Fixture {
    async fn redis(test: &str) -> Self {
        let prefix = support::unique_prefix(test);
        let client = redis::Client::open(support::redis_url()).unwrap();
        let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
        Self {
            store: Arc::new(RedisLiveChunks::new(conn, &prefix)),
            redis_prefix: prefix,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        support::delete_prefix(&support::redis_url(), &self.redis_prefix);
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
            AppendOutcome::Mismatch { length: 3 },
            "offset {offset}"
        );
    }
    assert_eq!(f.store.read_chunk(B, 0).await.unwrap().unwrap(), b"abc");
}

async fn a_retried_append_changes_nothing(f: &Fixture) {
    appended(f, 0, b"line 1\n").await;
    assert_eq!(
        f.store.append(B, 0, b"line 1\n").await.unwrap(),
        AppendOutcome::Mismatch { length: 7 }
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
            AppendOutcome::Mismatch { length } => assert_eq!(length, 100),
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

macro_rules! on_every_live_store {
    ($($name:ident),* $(,)?) => {
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::redis(stringify!($name)).await;
                    super::$name(&f).await;
                }
            )*
        }
    };
}

on_every_live_store!(
    appends_at_the_end_and_reads_back,
    a_gap_or_an_overlap_is_refused_and_writes_nothing,
    a_retried_append_changes_nothing,
    of_concurrent_appends_at_one_offset_exactly_one_wins,
    an_append_across_chunk_boundaries_splits_exactly,
    any_byte_values_are_kept_exactly,
    the_length_survives_flushed_chunks_being_dropped,
    a_missing_partial_chunk_is_an_error_not_a_silent_hole,
    deleting_a_build_drops_its_chunks_and_length,
);
