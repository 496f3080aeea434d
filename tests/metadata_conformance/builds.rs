//! Builds (`BuildStore`): a build finishes once; the dashboard's builds list.

use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::metadata::{ArtifactRowStore, BuildStore, TraceMetadataStore};
use buildlogs::traces::model::{Build, BuildListFilter, BuildStatus, BuildSummary, TraceState};

use crate::{Fixture, UNKNOWN, is_no_build, new_artifact};

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

on_every_sql_store!(
    a_created_build_is_running_and_reads_back,
    a_build_finishes_once_and_later_calls_change_nothing,
    finishing_with_running_leaves_a_running_build_running,
    of_concurrent_finishes_exactly_one_commits,
    finishing_an_unknown_build_is_no_build,
    builds_pages_list_newest_first_by_filter_with_their_trace_state,
);
