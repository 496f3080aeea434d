//! Leases (`LeaseStore`): one holder at a time, until it expires or is released.

use buildlogs::traces::metadata::LeaseStore;

use crate::Fixture;

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

on_every_sql_store!(
    a_lease_has_one_holder_until_it_expires_or_is_released,
    of_concurrent_takers_of_a_lease_exactly_one_holds_it,
);
