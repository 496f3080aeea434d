//! Stuck builds (`StuckBuildStore`): quiet running builds by activity, overdue pending states.

use buildlogs::traces::metadata::{BuildStore, PendingStateStore, StuckBuildStore};
use buildlogs::traces::model::{BuildStatus, IdleBuild};

use crate::{Fixture, pending};

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

on_every_sql_store!(stuck_build_queries_see_running_builds_by_activity_and_overdue_pending_states,);
