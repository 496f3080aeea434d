//! Pending final states (`PendingStateStore`): the first one stored wins.

use buildlogs::traces::metadata::PendingStateStore;
use buildlogs::traces::model::{BuildStatus, PendingState};

use crate::{Fixture, UNKNOWN, is_no_build, pending};

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

on_every_sql_store!(
    the_first_pending_state_wins,
    of_concurrent_pending_states_one_is_stored_and_all_get_it,
    a_pending_state_for_an_unknown_build_is_no_build,
);
