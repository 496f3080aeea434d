//! Trace metadata (`TraceMetadataStore`): checksums, archival attempts, lost bytes.

use buildlogs::traces::metadata::TraceMetadataStore;
use buildlogs::traces::model::TraceMetadata;

use crate::{Fixture, UNKNOWN, is_no_build};

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

on_every_sql_store!(
    checksums_are_recorded_and_a_mismatch_flags_the_log_for_good,
    archival_attempts_are_counted_and_stamped,
    concurrent_archival_attempts_are_all_counted,
    lost_bytes_make_a_trace_partial,
);
