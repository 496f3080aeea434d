//! Circuit breakers (`BreakerStore`): the shared state, and its history of changes, each kept
//! once however many processes report it, newest first, bounded.

use buildlogs::traces::metadata::{BREAKER_HISTORY_KEPT, BreakerRecord, BreakerStore};

use crate::Fixture;

fn breaker(open: bool, reason: Option<&str>, at: i64) -> BreakerRecord {
    BreakerRecord {
        name: "object_store".into(),
        open,
        reason: reason.map(str::to_owned),
        changed_at_ms: at,
    }
}

async fn breaker_changes_are_kept_once_each_newest_first_and_bounded(f: &Fixture) {
    let s = &f.store;
    assert!(
        s.breaker_history("object_store", 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Five processes see the same outage at about the same time: one change.
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.set_breaker(&breaker(true, Some("s3: refused"), 1_000 + i))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stored = s.breaker("object_store").await.unwrap().unwrap();
    s.set_breaker(&breaker(false, None, 9_000)).await.unwrap();
    s.set_breaker(&breaker(false, None, 9_500)).await.unwrap();
    let history = s.breaker_history("object_store", 10).await.unwrap();
    assert_eq!(
        history,
        [
            breaker(false, None, 9_000),
            breaker(true, Some("s3: refused"), stored.changed_at_ms),
        ],
        "a close, then the one open, newest first; repeats add nothing"
    );
    assert!(
        s.breaker_history("other", 10).await.unwrap().is_empty(),
        "per breaker"
    );
    // Many outages: the newest are kept, the limit caps an answer.
    for i in 0..i64::from(BREAKER_HISTORY_KEPT) {
        let at = 10_000 + 2 * i;
        s.set_breaker(&breaker(true, Some("down"), at))
            .await
            .unwrap();
        s.set_breaker(&breaker(false, None, at + 1)).await.unwrap();
    }
    let kept = s
        .breaker_history("object_store", BREAKER_HISTORY_KEPT + 10)
        .await
        .unwrap();
    assert_eq!(kept.len(), BREAKER_HISTORY_KEPT as usize);
    let newest = 10_000 + 2 * (i64::from(BREAKER_HISTORY_KEPT) - 1) + 1;
    assert_eq!(kept[0], breaker(false, None, newest));
    assert_eq!(s.breaker_history("object_store", 3).await.unwrap().len(), 3);
}

on_every_sql_store!(breaker_changes_are_kept_once_each_newest_first_and_bounded);
