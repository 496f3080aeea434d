//! Riding out an object-store outage, in-process on both stacks (embedded: SQLite + a local
//! folder; production: PostgreSQL + Redis + S3): the circuit breaker (database fallback for
//! flushes, archives refused while open, state shared through the database, waiting archives
//! released when it closes) and stale-trace recovery (bounded batches under the archive queue's
//! capacity, a resumable cursor, no duplicates). The outage is a `FaultyObjectStore` around the
//! real store. Process-level scenarios (kill -9, a stopped S3 server) are in
//! `workers/tests/outage.rs`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use buildlogs::jobs::broker::Ack;
use buildlogs::jobs::clock::ManualClock;
use buildlogs::jobs::limited_capacity::LimitedCapacityHandler;
use buildlogs::jobs::{Clock, Job, JobClient, SystemClock};
use buildlogs::stores::fault_injection::FaultyObjectStore;
use buildlogs::traces::archive::{ArchiveError, ArchiveOutcome};
use buildlogs::traces::breaker::{BreakerConfig, OBJECT_STORE_BREAKER, ObjectStoreBreaker};
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::flush::FlushOutcome;
use buildlogs::traces::jobs::ArchiveTrace;
use buildlogs::traces::jobs::WalkStaleTraces;
use buildlogs::traces::model::{BuildStatus, DataStore, NewArtifact};
use buildlogs::traces::recovery::{
    RECOVERY_CURSOR, RecoveryConfig, RecoveryMetadata, StaleTraceWalk, Step, TraceRecovery,
};
use support::app::TestApp;
use support::runtime;

const LEASE: Duration = Duration::from_secs(30);

fn log_bytes(len: usize) -> Vec<u8> {
    // Non-UTF-8 bytes throughout, so nothing on the way may treat the log as text.
    (0..len).map(|i| (i * 7 % 251) as u8 | 0x80).collect()
}

fn breaker(app: &TestApp, clock: Arc<dyn Clock>, failures: u32) -> Arc<ObjectStoreBreaker> {
    Arc::new(ObjectStoreBreaker::new(
        app.parts.meta.clone(),
        clock,
        BreakerConfig {
            failure_threshold: failures,
            ..BreakerConfig::default()
        },
    ))
}

async fn put_success(app: &TestApp, id: i64, token: &str, log: &[u8]) -> u16 {
    let crc = crc32fast::hash(log);
    use axum::body::Body;
    use axum::http::Request;
    let body = serde_json::json!({
        "token": token,
        "state": "success",
        "output": { "checksum": format!("crc32:{crc:08x}"), "bytesize": log.len() },
    });
    app.send(
        Request::put(format!("/api/v4/jobs/{id}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
    .status
    .as_u16()
}

/// The whole outage on one build: flushes fail until the breaker opens, then go to the
/// database (the live copies go, the final PUT completes with a valid checksum), the archive
/// refuses to start, reads stay whole; storage back: the archive moves the bytes on.
async fn an_outage_sends_flushes_to_the_database_and_the_archive_waits_for_storage(app: &TestApp) {
    let (store, switch) = FaultyObjectStore::wrap(app.parts.store.clone());
    let breaker = breaker(app, Arc::new(SystemClock), 2);
    let (flush, archive) = app.parts.services_over(store);
    let (flush, archive) = (
        flush.with_breaker(breaker.clone()),
        archive.with_breaker(breaker.clone()),
    );
    let (id, token) = app.create_job().await;
    let log = log_bytes(2 * CHUNK_SIZE as usize + 5_000);
    for (n, piece) in log.chunks(100_000).enumerate() {
        let reply = app.patch(id, &token, n as u64 * 100_000, piece).await;
        assert_eq!(reply.status, 202);
    }
    switch.fail();

    // Storage errors count until the breaker opens; from then on flushes go to the database.
    for index in 0..2 {
        let err = flush.flush(id, index).await.unwrap_err();
        assert!(err.to_string().contains("object store"), "{err}");
    }
    assert!(breaker.is_open_locally(), "two failures open the breaker");
    let shared = app.parts.meta.breaker(OBJECT_STORE_BREAKER).await.unwrap();
    assert!(shared.is_some_and(|b| b.open), "the open state is shared");
    let calls_before = switch.total_calls();
    for index in 0..2 {
        let outcome = flush.flush(id, index).await.unwrap();
        assert!(
            matches!(outcome, FlushOutcome::FlushedToDatabase { size, .. } if size == CHUNK_SIZE),
            "{outcome:?}"
        );
    }
    assert_eq!(
        switch.total_calls(),
        calls_before,
        "an open breaker spares the store"
    );

    // The final PUT: the last chunk flushes to the database too, and the PUT completes.
    let crc = crc32fast::hash(&log);
    assert_eq!(put_success(app, id, &token, &log).await, 202);
    assert!(matches!(
        flush.flush(id, 2).await.unwrap(),
        FlushOutcome::FlushedToDatabase { size: 5_000, .. }
    ));
    assert_eq!(put_success(app, id, &token, &log).await, 200);
    let meta = app.parts.meta.trace_metadata(id).await.unwrap().unwrap();
    assert_eq!(meta.checksum_valid, Some(true), "{meta:?}");
    let rows = app.parts.meta.chunks(id).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows.iter()
            .all(|r| r.data_store == DataStore::Database && r.crc32.is_some())
    );
    if app.parts.live.data_store() == DataStore::Redis {
        for index in 0..3 {
            assert_eq!(
                app.parts.live.read_chunk(id, index).await.unwrap(),
                None,
                "chunk {index} left Redis"
            );
        }
    }
    assert_eq!(app.trace(id, &token).await.body, log, "reads stay whole");

    // The archive does not even try while the breaker is open.
    assert!(matches!(
        archive.archive(id).await,
        Err(ArchiveError::StorageUnavailable)
    ));
    assert_eq!(switch.total_calls(), calls_before);
    let meta = app.parts.meta.trace_metadata(id).await.unwrap().unwrap();
    assert_eq!(meta.archival_attempts, 0, "no attempt spent while waiting");

    // Storage is back: the probe sees it, the breaker closes, the archive moves the bytes on.
    switch.heal();
    assert!(breaker.probe(app.parts.store.as_ref()).await);
    let jobs = JobClient::new(app.broker.clone(), Arc::new(SystemClock));
    breaker.close(&jobs).await.unwrap();
    assert!(!breaker.is_open().await);
    let ArchiveOutcome::Archived(artifact) = archive.archive(id).await.unwrap() else {
        panic!("archived")
    };
    assert_eq!((artifact.size, artifact.crc32), (log.len() as u64, crc));
    assert!(app.parts.meta.chunks(id).await.unwrap().is_empty());
    let stored = app
        .parts
        .store
        .get(&object_store::path::Path::from(
            artifact.object_path.as_str(),
        ))
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), log.as_slice());
    assert_eq!(app.trace(id, &token).await.body, log);
}

/// One process opens the breaker, another sees it; closing it makes the archives waiting in the
/// queue (snoozed or backing off) due at once.
async fn the_breaker_is_shared_and_closing_it_releases_waiting_archives(app: &TestApp) {
    let clock = ManualClock::new(SystemClock.now_ms());
    let one = breaker(app, Arc::new(clock.clone()), 3);
    let other = breaker(app, Arc::new(clock.clone()), 3);
    assert!(!other.is_open().await);
    for _ in 0..2 {
        one.record_failure(&"timeout").await;
    }
    one.record_success();
    one.record_failure(&"timeout").await;
    assert!(!one.is_open_locally(), "a success resets the count");
    for _ in 0..3 {
        one.record_failure(&"connection refused").await;
    }
    assert!(one.is_open_locally());
    assert!(
        !other.is_open().await,
        "within its sync interval a process keeps its view"
    );
    clock.advance_ms(1_000);
    assert!(other.is_open().await, "then it reads the shared state");
    let record = app
        .parts
        .meta
        .breaker(OBJECT_STORE_BREAKER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.reason.as_deref(), Some("connection refused"));

    // Archives waiting out a snooze or a backoff, and one of another queue that must stay.
    let jobs = JobClient::new(app.broker.clone(), Arc::new(clock.clone()));
    for build_id in [1, 2, 3] {
        jobs.enqueue_in(&ArchiveTrace { build_id }, Duration::from_secs(3_600))
            .await
            .unwrap();
    }
    jobs.enqueue_in(
        &buildlogs::traces::jobs::RecoverStaleTraces {},
        Duration::from_secs(3_600),
    )
    .await
    .unwrap();
    let now = clock.now_ms();
    assert!(
        app.broker
            .fetch(ArchiveTrace::NAME, 10, LEASE, now)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(other.close(&jobs).await.unwrap(), 3);
    let due = app
        .broker
        .fetch(ArchiveTrace::NAME, 10, LEASE, clock.now_ms())
        .await
        .unwrap();
    assert_eq!(due.len(), 3, "released at once");
    let recover = app
        .broker
        .stats(buildlogs::traces::jobs::RecoverStaleTraces::NAME, now)
        .await
        .unwrap();
    assert_eq!(recover.scheduled, 1, "other queues are left alone");
    clock.advance_ms(1_000);
    assert!(
        !one.is_open().await,
        "the close reaches the first process too"
    );
}

/// The process that closes the breaker releases the waiting archives at once, retries that
/// release while the queue is unreachable, and releases once more after a sync interval or two:
/// a process that had not yet read the close may have snoozed an archive (for the snooze's
/// five minutes) after the first release.
async fn archives_snoozed_after_the_close_are_released_by_a_later_probe_tick(app: &TestApp) {
    let clock = ManualClock::new(SystemClock.now_ms());
    let closer = breaker(app, Arc::new(clock.clone()), 1);
    closer.record_failure(&"connection refused").await;
    assert!(closer.is_open_locally());
    let jobs = JobClient::new(app.broker.clone(), Arc::new(clock.clone()));
    let due = || async {
        app.broker
            .fetch(ArchiveTrace::NAME, 10, LEASE, clock.now_ms())
            .await
            .unwrap()
            .len()
    };
    jobs.enqueue_in(&ArchiveTrace { build_id: 1 }, Duration::from_secs(3_600))
        .await
        .unwrap();
    closer.tick(app.parts.store.as_ref(), &jobs).await;
    assert!(!closer.is_open_locally(), "the probe worked: closed");
    assert_eq!(due().await, 1, "released at the close");

    jobs.enqueue_in(&ArchiveTrace { build_id: 2 }, Duration::from_secs(300))
        .await
        .unwrap();
    closer.tick(app.parts.store.as_ref(), &jobs).await;
    assert_eq!(due().await, 0, "the others may not have seen the close yet");
    clock.advance_ms(2_000);
    closer.tick(app.parts.store.as_ref(), &jobs).await;
    assert_eq!(
        due().await,
        1,
        "the snooze that came after the close, released"
    );

    jobs.enqueue_in(&ArchiveTrace { build_id: 3 }, Duration::from_secs(300))
        .await
        .unwrap();
    clock.advance_ms(60_000);
    closer.tick(app.parts.store.as_ref(), &jobs).await;
    assert_eq!(due().await, 0, "once more, not for ever");
}

/// Failures too few to open the breaker still send archives into their backoff: once the
/// store answered and then stayed quiet, they are released (once); a store still failing, or
/// one that never answered, releases nothing.
async fn a_blip_that_never_opened_the_breaker_releases_waiting_archives_once_quiet(app: &TestApp) {
    let clock = ManualClock::new(SystemClock.now_ms());
    let breaker = breaker(app, Arc::new(clock.clone()), 5);
    let jobs = JobClient::new(app.broker.clone(), Arc::new(clock.clone()));
    for build_id in [1, 2] {
        jobs.enqueue_in(&ArchiveTrace { build_id }, Duration::from_secs(3_600))
            .await
            .unwrap();
    }
    assert_eq!(
        breaker.release_if_recovered(&jobs).await.unwrap(),
        None,
        "no failure, nothing to release"
    );
    breaker.record_failure(&"connection refused").await;
    breaker.record_failure(&"connection refused").await;
    assert!(!breaker.is_open_locally());
    clock.advance_ms(60_000);
    assert_eq!(
        breaker.release_if_recovered(&jobs).await.unwrap(),
        None,
        "the store has not answered since"
    );
    breaker.record_failure(&"connection refused").await;
    breaker.record_success();
    assert_eq!(
        breaker.release_if_recovered(&jobs).await.unwrap(),
        None,
        "answered, but failed a moment ago"
    );
    clock.advance_ms(5_000);
    breaker.record_failure(&"connection reset").await;
    breaker.record_success();
    clock.advance_ms(9_000);
    assert_eq!(
        breaker.release_if_recovered(&jobs).await.unwrap(),
        None,
        "a failure within the quiet time: still flapping"
    );
    clock.advance_ms(1_000);
    assert_eq!(breaker.release_if_recovered(&jobs).await.unwrap(), Some(2));
    let due = app
        .broker
        .fetch(ArchiveTrace::NAME, 10, LEASE, clock.now_ms())
        .await
        .unwrap();
    assert_eq!(due.len(), 2, "released at once");
    clock.advance_ms(60_000);
    assert_eq!(
        breaker.release_if_recovered(&jobs).await.unwrap(),
        None,
        "once per recovery"
    );
}

/// Finishes `n` builds at `finished_at` (no logs needed: recovery goes by the builds table).
async fn finished_builds(app: &TestApp, n: usize, finished_at: i64) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let b = app
            .parts
            .meta
            .create_build("digest", finished_at - 1_000)
            .await
            .unwrap();
        app.parts
            .meta
            .finish_build(b.id, BuildStatus::Success, None, finished_at)
            .await
            .unwrap();
        ids.push(b.id);
    }
    ids
}

/// Completes every ready archive job; returns their build ids.
async fn drain_archives(app: &TestApp) -> Vec<i64> {
    let now = SystemClock.now_ms();
    let got = app
        .broker
        .fetch(ArchiveTrace::NAME, 10_000, LEASE, now)
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut acks = Vec::new();
    for d in got {
        let job: ArchiveTrace = serde_json::from_str(&d.envelope.payload).unwrap();
        ids.push(job.build_id);
        acks.push(Ack::Complete { lease: d.lease });
    }
    app.broker.ack(ArchiveTrace::NAME, acks, now).await.unwrap();
    ids
}

fn recovery(app: &TestApp, batch: u32, capacity: u32) -> TraceRecovery {
    TraceRecovery::new(
        RecoveryMetadata::from_one(&app.parts.meta),
        JobClient::new(app.broker.clone(), Arc::new(SystemClock)),
        Arc::new(SystemClock),
        RecoveryConfig {
            stale_after: Duration::from_secs(3_600),
            batch,
            default_capacity: capacity,
            wait: Duration::from_secs(30),
            poll: Duration::from_millis(10),
        },
    )
}

/// Stale = finished over an hour ago and not archived: found in id order, a batch at a time,
/// only while the archive queue is below its capacity, never twice while queued, and the walk
/// resumes from its cursor in a new process.
async fn recovery_enqueues_stale_traces_in_batches_under_the_archive_capacity(app: &TestApp) {
    let now = SystemClock.now_ms();
    let stale = finished_builds(app, 25, now - 2 * 3_600_000).await;
    // Not stale: running, finished recently, already archived.
    app.parts.meta.create_build("digest", now).await.unwrap();
    finished_builds(app, 2, now - 60_000).await;
    let archived = finished_builds(app, 1, now - 3 * 3_600_000).await[0];
    app.parts
        .meta
        .record_archive(
            &NewArtifact {
                build_id: archived,
                object_path: "traces/x/job.log".into(),
                size: 0,
                crc32: 0,
                sha256: String::new(),
                expire_at_ms: None,
            },
            now,
        )
        .await
        .unwrap();

    // Nor one whose archive used every attempt (it is in the dead set, for an operator).
    let gave_up = finished_builds(app, 1, now - 3 * 3_600_000).await[0];
    for _ in 0..ArchiveTrace::options().max_attempts {
        app.parts
            .meta
            .increment_archival_attempts(gave_up, now)
            .await
            .unwrap();
    }

    let first = recovery(app, 10, 5);
    assert_eq!(
        first.dry_run(1_000).await.unwrap(),
        stale,
        "dry run sees them all"
    );
    assert_eq!(
        app.parts.meta.cursor(RECOVERY_CURSOR).await.unwrap(),
        None,
        "a dry run moves nothing"
    );
    let (step, _) = first.step().await.unwrap();
    assert_eq!(
        step,
        Step::Batch {
            enqueued: 10,
            duplicates: 0,
            end_of_walk: false
        }
    );
    let (step, backlog) = first.step().await.unwrap();
    assert_eq!(
        step,
        Step::QueueFull {
            backlog: 10,
            capacity: 5
        }
    );
    assert_eq!(backlog, 10);
    let mut archived_ids = drain_archives(app).await;

    // Another process picks the walk up where the cursor is.
    let second = recovery(app, 10, 5);
    assert_eq!(second.dry_run(1_000).await.unwrap(), stale[10..].to_vec());
    let (step, _) = second.step().await.unwrap();
    assert!(matches!(step, Step::Batch { enqueued: 10, .. }), "{step:?}");
    archived_ids.extend(drain_archives(app).await);
    let (step, _) = second.step().await.unwrap();
    assert_eq!(
        step,
        Step::Batch {
            enqueued: 5,
            duplicates: 0,
            end_of_walk: true
        }
    );
    assert_eq!(
        app.parts.meta.cursor(RECOVERY_CURSOR).await.unwrap(),
        Some(0)
    );

    // Those 5 are still queued: the queue is at capacity.
    let (step, _) = second.step().await.unwrap();
    assert_eq!(
        step,
        Step::QueueFull {
            backlog: 5,
            capacity: 5
        }
    );
    // An operator widens the archive queue (its global limit is the capacity); the next walk
    // starts over, and the 5 still queued are not enqueued twice.
    app.broker
        .set_limit(ArchiveTrace::NAME, Some(100))
        .await
        .unwrap();
    for expected in [
        Step::Batch {
            enqueued: 10,
            duplicates: 0,
            end_of_walk: false,
        },
        Step::Batch {
            enqueued: 10,
            duplicates: 0,
            end_of_walk: false,
        },
        Step::Batch {
            enqueued: 0,
            duplicates: 5,
            end_of_walk: true,
        },
    ] {
        assert_eq!(second.step().await.unwrap().0, expected);
    }
    let mut queued = drain_archives(app).await;
    queued.sort_unstable();
    assert_eq!(queued, stale, "every stale build queued once");
    archived_ids.sort_unstable();
    assert_eq!(archived_ids, stale[..20].to_vec());
}

/// A walk keeps feeding the archive queue as it drains, one step per `walk_stale_traces` job
/// (the limited-capacity worker), and stops at its end; the queue never holds more than its
/// capacity plus a batch.
async fn a_recovery_walk_drains_the_backlog_with_a_bounded_queue_one_step_per_job(app: &TestApp) {
    let now = SystemClock.now_ms();
    let stale = finished_builds(app, 45, now - 2 * 3_600_000).await;
    let recovery = Arc::new(recovery(app, 10, 5));
    let client = JobClient::new(app.broker.clone(), Arc::new(SystemClock));
    let walker = LimitedCapacityHandler::new(
        Arc::new(StaleTraceWalk {
            recovery: recovery.clone(),
        }),
        client,
    );
    let (stop, done) =
        runtime::start(runtime::workers(&app.broker, runtime::config(2)).register(walker));

    // The tick: the walk's first batch, then one walker to go on with it.
    let (first, walkers) = recovery.start().await.unwrap();
    assert_eq!(
        first,
        Some(Step::Batch {
            enqueued: 10,
            duplicates: 0,
            end_of_walk: false,
        })
    );
    assert_eq!(walkers, 1);
    assert_eq!(
        recovery.start().await.unwrap(),
        (None, 0),
        "a tick during the walk neither steps nor adds a walker"
    );

    let mut archived = Vec::new();
    let mut max_queue = 0;
    let walking = || async {
        let s = app
            .broker
            .stats(WalkStaleTraces::NAME, SystemClock.now_ms())
            .await
            .unwrap();
        s.ready + s.scheduled + s.running > 0 || recovery.walk_goes_on().await.unwrap()
    };
    // A worker's stand-in for the archives: complete whatever is queued, watching the length.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while walking().await {
        assert!(std::time::Instant::now() < deadline, "the walk ended");
        let stats = app
            .broker
            .stats(ArchiveTrace::NAME, SystemClock.now_ms())
            .await
            .unwrap();
        max_queue = max_queue.max(stats.ready + stats.scheduled + stats.running);
        archived.extend(drain_archives(app).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    archived.extend(drain_archives(app).await);
    stop.cancel();
    done.await.unwrap();
    assert!(max_queue <= 5 + 10, "queue peaked at {max_queue}");
    archived.sort_unstable();
    assert_eq!(archived, stale, "each stale build once");
    let steps = app
        .broker
        .stats(WalkStaleTraces::NAME, SystemClock.now_ms())
        .await
        .unwrap();
    assert!(
        steps.processed >= 4,
        "the walk went on in steps of its own: {steps:?}"
    );
    assert_eq!(
        app.parts.meta.cursor(RECOVERY_CURSOR).await.unwrap(),
        Some(0),
        "ended: the next tick starts over"
    );
}

/// A job whose state was committed at the accept timeout (its runner's checksum unchecked)
/// and whose live length is gone (Redis keeps it 7 days from the last PATCH): the archive
/// takes the length from the flushed chunks, keeps every byte, and checks the runner's CRC32.
async fn a_late_archive_keeps_every_flushed_byte_and_checks_the_runners_checksum(app: &TestApp) {
    for runner_is_right in [true, false] {
        let (id, token) = app.create_job().await;
        let log = log_bytes(2 * CHUNK_SIZE as usize + 777);
        for (n, piece) in log.chunks(100_000).enumerate() {
            assert_eq!(
                app.patch(id, &token, n as u64 * 100_000, piece)
                    .await
                    .status,
                202
            );
        }
        let sent = if runner_is_right {
            log.clone()
        } else {
            b"not this log".to_vec()
        };
        assert_eq!(put_success(app, id, &token, &sent).await, 202);
        for index in 0..3 {
            assert!(matches!(
                app.flush.flush(id, index).await.unwrap(),
                FlushOutcome::Flushed { .. }
            ));
        }
        // The accept timeout's commit (no checksum check), then the live length is lost.
        app.parts
            .meta
            .finish_build(id, BuildStatus::Success, None, SystemClock.now_ms())
            .await
            .unwrap();
        app.parts.live.delete_build(id).await.unwrap();
        assert_eq!(app.parts.live.length(id).await.unwrap(), 0);

        let ArchiveOutcome::Archived(artifact) = app.archive.archive(id).await.unwrap() else {
            panic!("archived")
        };
        assert_eq!(artifact.size, log.len() as u64, "{}", app.kind);
        assert_eq!(artifact.crc32, crc32fast::hash(&log));
        assert_eq!(app.trace(id, &token).await.body, log);
        let meta = app.parts.meta.trace_metadata(id).await.unwrap().unwrap();
        assert_eq!(meta.checksum_valid, Some(runner_is_right), "{meta:?}");
        assert_eq!(meta.remote_checksum, Some(crc32fast::hash(&sent)));
        assert_eq!(meta.invalid, !runner_is_right);
    }
}

on_both_stacks!(
    a_late_archive_keeps_every_flushed_byte_and_checks_the_runners_checksum,
    an_outage_sends_flushes_to_the_database_and_the_archive_waits_for_storage,
    the_breaker_is_shared_and_closing_it_releases_waiting_archives,
    archives_snoozed_after_the_close_are_released_by_a_later_probe_tick,
    a_blip_that_never_opened_the_breaker_releases_waiting_archives_once_quiet,
    recovery_enqueues_stale_traces_in_batches_under_the_archive_capacity,
    a_recovery_walk_drains_the_backlog_with_a_bounded_queue_one_step_per_job,
);
