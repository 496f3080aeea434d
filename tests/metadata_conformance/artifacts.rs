//! Artifact rows (`ArtifactRowStore`): an archive is recorded once per build; expired artifacts
//! and deleting one.

use buildlogs::traces::metadata::{ArtifactRowStore, BuildStore, TraceMetadataStore};
use buildlogs::traces::model::{Artifact, BuildStatus, NewArtifact, TraceMetadata};

use crate::{Fixture, UNKNOWN, is_no_build, new_artifact};

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

async fn the_newest_trace_artifact_is_the_last_written(f: &Fixture) {
    assert_eq!(f.store.newest_trace_artifact().await.unwrap(), None);
    archived(f, Some(30_000)).await;
    let newest = archived(f, None).await;
    assert_eq!(f.store.newest_trace_artifact().await.unwrap(), Some(newest));
}

on_every_sql_store!(
    record_archive_writes_the_artifact_and_the_metadata,
    record_archive_happens_once_per_build,
    concurrent_record_archives_write_one_artifact,
    record_archive_for_an_unknown_build_is_no_build_and_writes_nothing,
    expired_artifacts_are_the_unlocked_ones_due_oldest_first,
    deleting_an_artifact_keeps_the_build_archived_without_it,
    the_newest_trace_artifact_is_the_last_written,
);
