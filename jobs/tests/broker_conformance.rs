//! One conformance suite for every queue broker: each test runs against real Redis (own key
//! prefix) and a real SQLite file. Time is passed explicitly, so schedules need no sleeping.

mod support;

use std::time::Duration;

use buildlogs_jobs::broker::{Ack, DeadSetBounds, EnqueueOutcome, NewJob};
use buildlogs_jobs::{DedupMode, Envelope};
use support::TestBroker;

const Q: &str = "conformance";
const T0: i64 = 1_800_000_000_000;
const LEASE: Duration = Duration::from_secs(30);

fn job(payload: &str) -> NewJob {
    NewJob {
        envelope: Envelope::new(Q, payload.into(), 3, T0),
        run_at_ms: None,
        dedup_ttl: Duration::from_secs(3600),
    }
}

fn deduped(payload: &str, mode: DedupMode, key: &str) -> NewJob {
    let mut j = job(payload);
    j.envelope = j.envelope.with_dedup(mode, key.into());
    j
}

fn at(mut j: NewJob, run_at_ms: i64) -> NewJob {
    j.run_at_ms = Some(run_at_ms);
    j
}

fn payloads(d: &[buildlogs_jobs::Delivery]) -> Vec<String> {
    d.iter().map(|d| d.envelope.payload.clone()).collect()
}

async fn enqueue_then_fetch_delivers_in_order_as_attempt_one(b: &TestBroker) {
    let out = b
        .broker
        .enqueue(vec![job("a"), job("b|with bar"), job("c")], T0)
        .await
        .unwrap();
    assert_eq!(out, vec![EnqueueOutcome::Enqueued; 3]);
    let got = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap();
    assert_eq!(payloads(&got), vec!["a", "b|with bar", "c"]);
    assert!(
        got.iter()
            .all(|d| d.envelope.attempt == 1 && d.lease_until_ms == T0 + 30_000)
    );
    assert!(
        b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().is_empty(),
        "a leased job is not delivered twice"
    );
}

async fn fetch_takes_at_most_max(b: &TestBroker) {
    b.broker
        .enqueue((0..5).map(|i| job(&i.to_string())).collect(), T0)
        .await
        .unwrap();
    assert_eq!(b.broker.fetch(Q, 2, LEASE, T0).await.unwrap().len(), 2);
    assert_eq!(b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().len(), 3);
}

async fn scheduled_job_waits_for_its_time(b: &TestBroker) {
    b.broker
        .enqueue(vec![at(job("later"), T0 + 5_000)], T0)
        .await
        .unwrap();
    assert!(
        b.broker
            .fetch(Q, 10, LEASE, T0 + 4_999)
            .await
            .unwrap()
            .is_empty()
    );
    let s = b.broker.stats(Q, T0).await.unwrap();
    assert_eq!((s.ready, s.scheduled), (0, 1));
    assert_eq!(
        payloads(&b.broker.fetch(Q, 10, LEASE, T0 + 5_000).await.unwrap()),
        vec!["later"]
    );
}

async fn released_scheduled_jobs_are_due_at_once_earliest_first(b: &TestBroker) {
    b.broker
        .enqueue(
            vec![
                at(job("in-an-hour"), T0 + 3_600_000),
                at(job("in-a-minute"), T0 + 60_000),
                at(job("in-a-day"), T0 + 86_400_000),
                job("now"),
            ],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        payloads(&b.broker.fetch(Q, 10, LEASE, T0).await.unwrap()),
        vec!["now"]
    );
    // The two due soonest are released (all due at once: their order among themselves is not
    // kept).
    assert_eq!(b.broker.release_scheduled(Q, 2, T0 + 1).await.unwrap(), 2);
    let mut released = payloads(&b.broker.fetch(Q, 10, LEASE, T0 + 1).await.unwrap());
    released.sort();
    assert_eq!(released, vec!["in-a-minute", "in-an-hour"]);
    assert_eq!(b.broker.release_scheduled(Q, 2, T0 + 2).await.unwrap(), 1);
    assert_eq!(b.broker.release_scheduled(Q, 2, T0 + 2).await.unwrap(), 0);
    assert_eq!(
        payloads(&b.broker.fetch(Q, 10, LEASE, T0 + 2).await.unwrap()),
        vec!["in-a-day"]
    );
    // Another queue's jobs stay where they are.
    b.broker
        .enqueue(
            vec![NewJob {
                envelope: Envelope::new("other", "elsewhere".into(), 3, T0),
                run_at_ms: Some(T0 + 60_000),
                dedup_ttl: Duration::from_secs(3600),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(b.broker.release_scheduled(Q, 10, T0 + 3).await.unwrap(), 0);
    assert_eq!(b.broker.stats("other", T0 + 3).await.unwrap().scheduled, 1);
}

async fn global_limit_caps_leased_jobs_and_changes_at_runtime(b: &TestBroker) {
    b.broker
        .enqueue((0..10).map(|i| job(&i.to_string())).collect(), T0)
        .await
        .unwrap();
    b.broker.set_limit(Q, Some(3)).await.unwrap();
    let first = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap();
    assert_eq!(first.len(), 3);
    assert!(
        b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().is_empty(),
        "limit reached"
    );
    let d = &first[0];
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: d.lease.clone(),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().len(),
        1,
        "one slot freed"
    );
    b.broker.set_limit(Q, Some(5)).await.unwrap();
    assert_eq!(
        b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().len(),
        2,
        "raised limit applies on the next fetch"
    );
    b.broker.set_limit(Q, None).await.unwrap();
    assert_eq!(
        b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().len(),
        4,
        "no limit: the other 4"
    );
    assert_eq!(b.broker.stats(Q, T0).await.unwrap().limit, None);
}

/// A worker running short jobs leases `ahead` more, but only from a queue without a global
/// limit: with one, a job waiting in a worker would hold a slot another worker could run.
async fn jobs_are_leased_ahead_only_without_a_global_limit(b: &TestBroker) {
    b.broker
        .enqueue((0..20).map(|i| job(&i.to_string())).collect(), T0)
        .await
        .unwrap();
    let first = b
        .broker
        .ack_and_fetch(Q, Vec::new(), 2, 3, LEASE, T0)
        .await
        .unwrap();
    assert_eq!(
        payloads(&first),
        ["0", "1", "2", "3", "4"],
        "max + ahead, in order"
    );
    b.broker.set_limit(Q, Some(8)).await.unwrap();
    let acks = vec![Ack::Complete {
        lease: first[0].lease.clone(),
    }];
    let limited = b
        .broker
        .ack_and_fetch(Q, acks, 2, 3, LEASE, T0)
        .await
        .unwrap();
    assert_eq!(
        limited.len(),
        2,
        "with a limit, only max (4 + 2 running of 8)"
    );
    let last = b
        .broker
        .ack_and_fetch(Q, Vec::new(), 5, 3, LEASE, T0)
        .await
        .unwrap();
    assert_eq!(last.len(), 2, "and within the limit (6 running of 8)");
    let s = b.broker.stats(Q, T0).await.unwrap();
    assert_eq!((s.running, s.processed, s.ready), (8, 1, 11));
}

async fn complete_removes_the_job_and_counts_it(b: &TestBroker) {
    b.broker.enqueue(vec![job("x")], T0).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    assert_eq!(b.broker.stats(Q, T0).await.unwrap().running, 1);
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: d.lease.clone(),
            }],
            T0,
        )
        .await
        .unwrap();
    let s = b.broker.stats(Q, T0).await.unwrap();
    assert_eq!(
        (s.ready, s.scheduled, s.running, s.dead, s.processed),
        (0, 0, 0, 0, 1)
    );
    assert!(
        b.broker
            .fetch(Q, 1, LEASE, T0 + 1_000_000)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn retry_is_scheduled_and_the_next_delivery_is_the_next_attempt(b: &TestBroker) {
    b.broker.enqueue(vec![job("x")], T0).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    let retry = Ack::Retry {
        lease: d.lease.clone(),
        run_at_ms: T0 + 1_000,
        error: "boom".into(),
    };
    b.broker.ack(Q, vec![retry], T0).await.unwrap();
    let s = b.broker.stats(Q, T0).await.unwrap();
    assert_eq!(
        (s.scheduled, s.running, s.failed),
        (1, 0, 1),
        "a waiting retry holds no slot"
    );
    assert!(
        b.broker
            .fetch(Q, 1, LEASE, T0 + 999)
            .await
            .unwrap()
            .is_empty()
    );
    let again = b
        .broker
        .fetch(Q, 1, LEASE, T0 + 1_000)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (again.envelope.id, again.envelope.attempt),
        (d.envelope.id, 2)
    );
}

async fn scheduled_jobs_are_listed_next_first_with_their_last_error(b: &TestBroker) {
    let later = at(job("later"), T0 + 5_000);
    b.broker
        .enqueue(vec![job("failing"), job("snoozing"), later], T0)
        .await
        .unwrap();
    let got = b.broker.fetch(Q, 2, LEASE, T0).await.unwrap();
    assert_eq!(payloads(&got), ["failing", "snoozing"]);
    let acks = vec![
        Ack::Retry {
            lease: got[0].lease.clone(),
            run_at_ms: T0 + 1_000,
            error: "boom: storage down".into(),
        },
        Ack::Snooze {
            lease: got[1].lease.clone(),
            run_at_ms: T0 + 3_000,
        },
    ];
    b.broker.ack(Q, acks, T0).await.unwrap();

    let listed = b.broker.scheduled_list(Q, 10).await.unwrap();
    let seen: Vec<(&str, i64, Option<&str>, u32)> = listed
        .iter()
        .map(|s| {
            (
                s.envelope.payload.as_str(),
                s.run_at_ms,
                s.last_error.as_deref(),
                s.envelope.attempt,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("failing", T0 + 1_000, Some("boom: storage down"), 1),
            ("snoozing", T0 + 3_000, None, 0),
            ("later", T0 + 5_000, None, 0),
        ]
    );
    let first = b.broker.scheduled_list(Q, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].envelope.payload, "failing");
    assert!(b.broker.scheduled_list(Q, 0).await.unwrap().is_empty());

    // Run again and completed: no longer waiting, its error gone with it.
    complete_next(b, T0 + 1_000).await;
    let left: Vec<String> = b
        .broker
        .scheduled_list(Q, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.envelope.payload)
        .collect();
    assert_eq!(left, ["snoozing", "later"]);
}

async fn snooze_does_not_burn_an_attempt(b: &TestBroker) {
    b.broker.enqueue(vec![job("x")], T0).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    b.broker
        .ack(
            Q,
            vec![Ack::Snooze {
                lease: d.lease.clone(),
                run_at_ms: T0 + 10,
            }],
            T0,
        )
        .await
        .unwrap();
    assert!(
        b.broker
            .fetch(Q, 1, LEASE, T0 + 9)
            .await
            .unwrap()
            .is_empty()
    );
    let again = b
        .broker
        .fetch(Q, 1, LEASE, T0 + 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.envelope.attempt, 1);
}

async fn release_hands_the_job_back_first_without_burning_an_attempt(b: &TestBroker) {
    b.broker
        .enqueue(vec![job("first"), job("second")], T0)
        .await
        .unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    b.broker
        .ack(
            Q,
            vec![Ack::Release {
                lease: d.lease.clone(),
            }],
            T0,
        )
        .await
        .unwrap();
    let got = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    assert_eq!(
        (got.envelope.payload.as_str(), got.envelope.attempt),
        ("first", 1)
    );
}

async fn dead_jobs_can_be_listed_retried_and_discarded(b: &TestBroker) {
    b.broker
        .enqueue(vec![job("p1"), job("p2")], T0)
        .await
        .unwrap();
    let got = b.broker.fetch(Q, 2, LEASE, T0).await.unwrap();
    let acks = got
        .iter()
        .enumerate()
        .map(|(i, d)| Ack::Dead {
            lease: d.lease.clone(),
            error: format!("fatal {i}"),
        })
        .collect();
    b.broker.ack(Q, acks, T0 + 5).await.unwrap();
    let dead = b.broker.dead_list(Q, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].died_at_ms, T0 + 5);
    assert!(
        dead.iter()
            .any(|d| d.error == "fatal 0" && d.envelope.payload == "p1")
    );
    let s = b.broker.stats(Q, T0).await.unwrap();
    assert_eq!((s.dead, s.running, s.failed), (2, 0, 2));

    let p1 = dead
        .iter()
        .find(|d| d.envelope.payload == "p1")
        .unwrap()
        .envelope
        .id
        .clone();
    let p2 = dead
        .iter()
        .find(|d| d.envelope.payload == "p2")
        .unwrap()
        .envelope
        .id
        .clone();
    assert!(b.broker.dead_retry(Q, &p1, T0).await.unwrap());
    assert!(
        !b.broker.dead_retry(Q, &p1, T0).await.unwrap(),
        "already retried"
    );
    let rerun = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    assert_eq!(
        (rerun.envelope.id, rerun.envelope.attempt),
        (p1, 1),
        "a re-run dead job starts its attempts afresh"
    );
    assert!(b.broker.dead_discard(Q, &p2).await.unwrap());
    assert!(!b.broker.dead_discard(Q, &p2).await.unwrap());
    assert!(b.broker.dead_list(Q, 10).await.unwrap().is_empty());
}

async fn dead_set_is_trimmed_by_count_and_age(b: &TestBroker) {
    b.broker
        .enqueue((0..6).map(|i| job(&i.to_string())).collect(), T0)
        .await
        .unwrap();
    for (i, d) in b
        .broker
        .fetch(Q, 6, LEASE, T0)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let ack = Ack::Dead {
            lease: d.lease.clone(),
            error: "x".into(),
        };
        b.broker
            .ack(Q, vec![ack], T0 + i as i64 * 1_000)
            .await
            .unwrap();
    }
    // Older than 2.5 s at T0 + 5 s: the jobs that died at T0, T0+1s, T0+2s.
    let bounds = DeadSetBounds {
        max_jobs: 100,
        max_age: Duration::from_millis(2_500),
    };
    assert_eq!(b.broker.dead_trim(Q, bounds, T0 + 5_000).await.unwrap(), 3);
    let bounds = DeadSetBounds {
        max_jobs: 1,
        max_age: Duration::from_secs(3600),
    };
    assert_eq!(b.broker.dead_trim(Q, bounds, T0 + 5_000).await.unwrap(), 2);
    let left = b.broker.dead_list(Q, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].envelope.payload, "5", "the newest is kept");
}

async fn expired_lease_is_redelivered_and_the_lost_run_counts_as_an_attempt(b: &TestBroker) {
    b.broker.enqueue(vec![job("x")], T0).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    assert_eq!(
        b.broker
            .reap_expired(Q, 100, T0 + 29_999)
            .await
            .unwrap()
            .redelivered,
        0,
        "lease still valid"
    );
    let r = b.broker.reap_expired(Q, 100, T0 + 30_001).await.unwrap();
    assert_eq!((r.redelivered, r.dead), (1, 0));
    let again = b
        .broker
        .fetch(Q, 1, LEASE, T0 + 30_001)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (again.envelope.id.as_str(), again.envelope.attempt),
        (d.envelope.id.as_str(), 2)
    );
}

async fn stale_ack_from_a_lost_worker_is_ignored(b: &TestBroker) {
    b.broker.enqueue(vec![job("x")], T0).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    b.broker.reap_expired(Q, 100, T0 + 60_000).await.unwrap();
    let again = b
        .broker
        .fetch(Q, 1, LEASE, T0 + 60_000)
        .await
        .unwrap()
        .remove(0);
    // The first worker comes back and acks its old delivery: the new one must stay leased.
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: d.lease.clone(),
            }],
            T0 + 60_001,
        )
        .await
        .unwrap();
    let s = b.broker.stats(Q, T0 + 60_001).await.unwrap();
    assert_eq!((s.running, s.processed), (1, 0));
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: again.lease.clone(),
            }],
            T0 + 60_002,
        )
        .await
        .unwrap();
    assert_eq!(b.broker.stats(Q, T0).await.unwrap().processed, 1);
}

async fn job_that_kills_its_worker_every_time_ends_in_the_dead_set(b: &TestBroker) {
    b.broker.enqueue(vec![job("poison")], T0).await.unwrap(); // max_attempts = 3
    let mut now = T0;
    for attempt in 1..=3 {
        let got = b.broker.fetch(Q, 1, LEASE, now).await.unwrap();
        assert_eq!(got.len(), 1, "attempt {attempt} delivered");
        assert_eq!(got[0].envelope.attempt, attempt);
        now += 31_000;
        b.broker.reap_expired(Q, 100, now).await.unwrap();
    }
    assert!(
        b.broker.fetch(Q, 1, LEASE, now).await.unwrap().is_empty(),
        "no fourth run"
    );
    let dead = b.broker.dead_list(Q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("lease expired"), "{}", dead[0].error);
}

async fn heartbeat_extends_a_lease(b: &TestBroker) {
    b.broker.enqueue(vec![job("long")], T0).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, T0).await.unwrap().remove(0);
    b.broker
        .extend_leases(Q, std::slice::from_ref(&d.lease), LEASE, T0 + 20_000)
        .await
        .unwrap();
    assert_eq!(
        b.broker
            .reap_expired(Q, 100, T0 + 40_000)
            .await
            .unwrap()
            .redelivered,
        0
    );
    assert_eq!(
        b.broker
            .reap_expired(Q, 100, T0 + 50_001)
            .await
            .unwrap()
            .redelivered,
        1
    );
    // Renewing a lease that was reaped does not resurrect it.
    b.broker
        .extend_leases(Q, std::slice::from_ref(&d.lease), LEASE, T0 + 50_002)
        .await
        .unwrap();
    assert_eq!(b.broker.stats(Q, T0).await.unwrap().running, 0);
}

async fn until_executing_drops_duplicates_only_while_waiting(b: &TestBroker) {
    let j = || deduped("x", DedupMode::UntilExecuting, "k");
    assert_eq!(
        b.broker.enqueue(vec![j(), j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Enqueued, EnqueueOutcome::Duplicate]
    );
    b.broker.fetch(Q, 10, LEASE, T0).await.unwrap();
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Enqueued],
        "running: key released"
    );
}

async fn until_executed_drops_duplicates_until_the_job_finishes(b: &TestBroker) {
    let j = || deduped("x", DedupMode::UntilExecuted, "k");
    b.broker.enqueue(vec![j()], T0).await.unwrap();
    let d = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().remove(0);
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Duplicate]
    );
    // A retry keeps the key.
    b.broker
        .ack(
            Q,
            vec![Ack::Retry {
                lease: d.lease.clone(),
                run_at_ms: T0,
                error: "e".into(),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Duplicate]
    );
    let d = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().remove(0);
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: d.lease.clone(),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Enqueued]
    );
}

async fn dead_job_releases_its_until_executed_key(b: &TestBroker) {
    let j = || deduped("x", DedupMode::UntilExecuted, "k");
    b.broker.enqueue(vec![j()], T0).await.unwrap();
    let d = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().remove(0);
    b.broker
        .ack(
            Q,
            vec![Ack::Dead {
                lease: d.lease.clone(),
                error: "e".into(),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Enqueued]
    );
}

async fn no_dedup_keeps_every_copy(b: &TestBroker) {
    assert_eq!(
        b.broker
            .enqueue(vec![job("x"), job("x")], T0)
            .await
            .unwrap(),
        vec![EnqueueOutcome::Enqueued; 2]
    );
}

async fn dedup_key_expires_after_its_ttl(b: &TestBroker) {
    // Key TTLs run on the store's own clock, so this one test waits for real time.
    let mut j = deduped("x", DedupMode::UntilExecuted, "ttl");
    j.dedup_ttl = Duration::from_millis(200);
    b.broker.enqueue(vec![j.clone()], T0).await.unwrap();
    let mut dup = deduped("x", DedupMode::UntilExecuted, "ttl");
    dup.dedup_ttl = j.dedup_ttl;
    assert_eq!(
        b.broker.enqueue(vec![dup.clone()], T0).await.unwrap(),
        vec![EnqueueOutcome::Duplicate]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        b.broker.enqueue(vec![dup], T0 + 400).await.unwrap(),
        vec![EnqueueOutcome::Enqueued]
    );
}

async fn reschedule_once_runs_the_job_exactly_once_more(b: &TestBroker) {
    let j = || deduped("flush", DedupMode::UntilExecutedRescheduleOnce, "chunk-1");
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Enqueued]
    );
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::Duplicate],
        "waiting: plain duplicate"
    );
    let d = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().remove(0);
    for _ in 0..3 {
        assert_eq!(
            b.broker.enqueue(vec![j()], T0).await.unwrap(),
            vec![EnqueueOutcome::RescheduledOnce]
        );
    }
    assert!(
        b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().is_empty(),
        "the rerun waits for the running job"
    );
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: d.lease.clone(),
            }],
            T0,
        )
        .await
        .unwrap();
    let rerun = b.broker.fetch(Q, 10, LEASE, T0).await.unwrap();
    assert_eq!(rerun.len(), 1, "exactly one rerun");
    assert_ne!(rerun[0].envelope.id, d.envelope.id);
    // The rerun holds the key again: a duplicate now asks for one more run after it.
    assert_eq!(
        b.broker.enqueue(vec![j()], T0).await.unwrap(),
        vec![EnqueueOutcome::RescheduledOnce]
    );
    b.broker
        .ack(
            Q,
            vec![Ack::Complete {
                lease: rerun[0].lease.clone(),
            }],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(b.broker.fetch(Q, 10, LEASE, T0).await.unwrap().len(), 1);
}

async fn cron_tick_fires_once_and_never_goes_back(b: &TestBroker) {
    let tick = T0 + 60_000;
    assert_eq!(b.broker.cron_last("sweep", Q).await.unwrap(), None);
    assert!(
        b.broker
            .cron_fire("sweep", tick, job("t1"), tick)
            .await
            .unwrap()
    );
    assert!(
        !b.broker
            .cron_fire("sweep", tick, job("t1 again"), tick)
            .await
            .unwrap()
    );
    assert!(
        !b.broker
            .cron_fire("sweep", T0, job("older"), tick)
            .await
            .unwrap()
    );
    assert!(
        b.broker
            .cron_fire("sweep", tick + 60_000, job("t2"), tick)
            .await
            .unwrap()
    );
    assert_eq!(
        b.broker.cron_last("sweep", Q).await.unwrap(),
        Some(tick + 60_000)
    );
    assert_eq!(
        payloads(&b.broker.fetch(Q, 10, LEASE, tick).await.unwrap()),
        vec!["t1", "t2"]
    );
}

async fn stats_report_depths_latency_and_queues(b: &TestBroker) {
    b.broker
        .enqueue(vec![job("a"), job("b"), at(job("c"), T0 + 1_000_000)], T0)
        .await
        .unwrap();
    b.broker.fetch(Q, 1, LEASE, T0).await.unwrap();
    let s = b.broker.stats(Q, T0 + 2_500).await.unwrap();
    assert_eq!(
        (s.ready, s.scheduled, s.running, s.latency_ms),
        (1, 1, 1, 2_500)
    );
    b.broker.set_limit("other", Some(2)).await.unwrap();
    assert_eq!(
        b.broker.queues().await.unwrap(),
        vec![Q.to_string(), "other".into()]
    );
}

async fn invalid_envelope_is_refused_and_nothing_is_stored(b: &TestBroker) {
    let bad = deduped("x", DedupMode::UntilExecuted, "has|bar");
    let err = b
        .broker
        .enqueue(vec![job("ok"), bad], T0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("dedup key"), "{err}");
    assert_eq!(
        b.broker.stats(Q, T0).await.unwrap().ready,
        0,
        "no partial write"
    );
}

async fn twenty_thousand_retries_due_at_once_drain_without_errors(b: &TestBroker) {
    // Past the ~8,000 values where Lua's unpack() fails (apalis-redis 1.0's fetch bug).
    let jobs: Vec<NewJob> = (0..20_000)
        .map(|i| at(job(&i.to_string()), T0 + 1_000))
        .collect();
    for chunk in jobs.chunks(1_000) {
        b.broker.enqueue(chunk.to_vec(), T0).await.unwrap();
    }
    let mut seen = 0;
    while seen < 20_000 {
        let got = b.broker.fetch(Q, 500, LEASE, T0 + 1_000).await.unwrap();
        assert!(!got.is_empty(), "stalled at {seen}");
        seen += got.len();
        let acks = got
            .into_iter()
            .map(|d| Ack::Complete {
                lease: d.lease.clone(),
            })
            .collect();
        b.broker.ack(Q, acks, T0 + 1_000).await.unwrap();
    }
    let s = b.broker.stats(Q, T0 + 1_000).await.unwrap();
    assert_eq!(
        (s.ready, s.scheduled, s.running, s.processed),
        (0, 0, 0, 20_000)
    );
}

/// Settles one job along `path`, from its enqueue to its end (completed, or discarded from the
/// dead set). `now` moves forward as the job's time passes.
async fn drive(b: &TestBroker, new: NewJob, path: &str, now: &mut i64) {
    let mut next = |step: i64| {
        *now += step;
        *now
    };
    let t = next(1);
    assert_eq!(
        b.broker.enqueue(vec![new], t).await.unwrap(),
        vec![EnqueueOutcome::Enqueued],
        "{path}"
    );
    let t = next(1);
    let d = b.broker.fetch(Q, 1, LEASE, t).await.unwrap().remove(0);
    let lease = d.lease.clone();
    let settle = match path {
        "complete" => Ack::Complete { lease },
        "retry" | "retry-dead" => Ack::Retry {
            lease,
            run_at_ms: t + 1_000,
            error: "boom".into(),
        },
        "snooze" => Ack::Snooze {
            lease,
            run_at_ms: t + 1_000,
        },
        "release" => Ack::Release { lease },
        "dead" | "dead-retried" => Ack::Dead {
            lease,
            error: "fatal".into(),
        },
        "lost" | "lost-last" => {
            // The worker died: nothing acks; the reaper finds the lease expired.
            let t = next(LEASE.as_millis() as i64 + 1);
            let report = b.broker.reap_expired(Q, 10, t).await.unwrap();
            assert_eq!(
                (report.redelivered, report.dead),
                if path == "lost" { (1, 0) } else { (0, 1) },
                "{path}"
            );
            if path == "lost-last" {
                assert!(b.broker.dead_discard(Q, &d.envelope.id).await.unwrap());
            } else {
                complete_next(b, next(1)).await;
            }
            return;
        }
        other => panic!("unknown path {other}"),
    };
    let t = next(1);
    b.broker.ack(Q, vec![settle], t).await.unwrap();
    match path {
        "complete" => {}
        "dead" => assert!(b.broker.dead_discard(Q, &d.envelope.id).await.unwrap()),
        "retry-dead" => {
            // Failed once (its error kept while it waits), then for good on the next run.
            let t = next(1_000);
            let again = b.broker.fetch(Q, 1, LEASE, t).await.unwrap().remove(0);
            let dead = Ack::Dead {
                lease: again.lease,
                error: "fatal".into(),
            };
            b.broker.ack(Q, vec![dead], t).await.unwrap();
            assert!(b.broker.dead_discard(Q, &d.envelope.id).await.unwrap());
        }
        "dead-retried" => {
            assert!(b.broker.dead_retry(Q, &d.envelope.id, t).await.unwrap());
            complete_next(b, next(1)).await;
        }
        _ => complete_next(b, next(1_000)).await,
    }
}

/// Fetches the one due job and completes it.
async fn complete_next(b: &TestBroker, t: i64) {
    let got = b.broker.fetch(Q, 10, LEASE, t).await.unwrap();
    assert_eq!(got.len(), 1, "one job due");
    let acks = vec![Ack::Complete {
        lease: got[0].lease.clone(),
    }];
    b.broker.ack(Q, acks, t).await.unwrap();
}

/// What a queue may keep once every job is gone: per-queue bookkeeping only (the registry of
/// queue names and the lifetime counters; limits and cron ticks too, unused here).
fn per_queue(line: &str) -> bool {
    line == ":queues no ttl"
        || line == format!(":{{{Q}}}:stats no ttl")
        || line == format!("job_queues: {Q}")
}

async fn settled_jobs_leave_nothing_behind(b: &TestBroker) {
    let modes = [
        DedupMode::None,
        DedupMode::UntilExecuting,
        DedupMode::UntilExecuted,
        DedupMode::UntilExecutedRescheduleOnce,
    ];
    let paths = [
        "complete",
        "retry",
        "retry-dead",
        "snooze",
        "release",
        "dead",
        "dead-retried",
        "lost",
        "lost-last",
    ];
    let mut now = T0;
    for mode in modes {
        for path in paths {
            let key = format!("{mode:?}-{path}");
            let mut new = if mode == DedupMode::None {
                job(&key)
            } else {
                deduped(&key, mode, &key)
            };
            if path == "lost-last" {
                new.envelope.max_attempts = 1;
            }
            drive(b, new, path, &mut now).await;
        }
    }
    // A reschedule_once job asked to run again while it runs, and its rerun.
    let j = || deduped("flush", DedupMode::UntilExecutedRescheduleOnce, "rerun");
    b.broker.enqueue(vec![j()], now).await.unwrap();
    let d = b.broker.fetch(Q, 1, LEASE, now).await.unwrap().remove(0);
    let during = b.stored().await;
    assert!(
        during
            .iter()
            .filter(|k| k.contains(":active:") || k.contains(":dedup:"))
            .all(|k| !k.ends_with("no ttl")),
        "a running job's own keys expire by themselves if nothing deletes them: {during:#?}"
    );
    // The heartbeat renews the running job's own key with its lease: a long job keeps it.
    let long = Duration::from_secs(3600);
    b.broker
        .extend_leases(Q, std::slice::from_ref(&d.lease), long, now)
        .await
        .unwrap();
    let ttl_ms = |stored: &[String]| -> Vec<i64> {
        stored
            .iter()
            .filter(|k| k.contains(":active:"))
            .filter_map(|k| k.rsplit_once(" ttl ").and_then(|(_, ms)| ms.parse().ok()))
            .collect()
    };
    if b.kind == "redis" {
        assert_eq!(ttl_ms(&during).len(), 1, "{during:#?}");
        assert!(ttl_ms(&during)[0] <= 2 * LEASE.as_millis() as i64);
        let renewed = ttl_ms(&b.stored().await);
        assert!(
            renewed.len() == 1 && renewed[0] > 2 * LEASE.as_millis() as i64,
            "renewed with the lease: {renewed:?}"
        );
    }
    assert_eq!(
        b.broker.enqueue(vec![j()], now).await.unwrap(),
        vec![EnqueueOutcome::RescheduledOnce]
    );
    let acks = vec![Ack::Complete { lease: d.lease }];
    b.broker.ack(Q, acks, now).await.unwrap();
    complete_next(b, now + 1).await;

    let s = b.broker.stats(Q, now + 10_000).await.unwrap();
    assert_eq!((s.ready, s.scheduled, s.running, s.dead), (0, 0, 0, 0));
    let stored = b.stored().await;
    let left: Vec<&String> = stored.iter().filter(|l| !per_queue(l)).collect();
    assert!(
        left.is_empty(),
        "{}: jobs left keys or rows behind: {left:#?}",
        b.kind
    );
}

on_both_brokers!(
    enqueue_then_fetch_delivers_in_order_as_attempt_one,
    fetch_takes_at_most_max,
    scheduled_job_waits_for_its_time,
    released_scheduled_jobs_are_due_at_once_earliest_first,
    global_limit_caps_leased_jobs_and_changes_at_runtime,
    jobs_are_leased_ahead_only_without_a_global_limit,
    complete_removes_the_job_and_counts_it,
    retry_is_scheduled_and_the_next_delivery_is_the_next_attempt,
    scheduled_jobs_are_listed_next_first_with_their_last_error,
    snooze_does_not_burn_an_attempt,
    release_hands_the_job_back_first_without_burning_an_attempt,
    dead_jobs_can_be_listed_retried_and_discarded,
    dead_set_is_trimmed_by_count_and_age,
    expired_lease_is_redelivered_and_the_lost_run_counts_as_an_attempt,
    stale_ack_from_a_lost_worker_is_ignored,
    job_that_kills_its_worker_every_time_ends_in_the_dead_set,
    heartbeat_extends_a_lease,
    until_executing_drops_duplicates_only_while_waiting,
    until_executed_drops_duplicates_until_the_job_finishes,
    dead_job_releases_its_until_executed_key,
    no_dedup_keeps_every_copy,
    dedup_key_expires_after_its_ttl,
    reschedule_once_runs_the_job_exactly_once_more,
    cron_tick_fires_once_and_never_goes_back,
    stats_report_depths_latency_and_queues,
    invalid_envelope_is_refused_and_nothing_is_stored,
    twenty_thousand_retries_due_at_once_drain_without_errors,
    settled_jobs_leave_nothing_behind,
);
