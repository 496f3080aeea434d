//! Artifact expiry (`src/traces/expiry.rs`) on SQLite (a file per test) and PostgreSQL (a schema
//! per test), with a real local object store and a manual clock: what goes and what stays, the
//! bounds of a run (loop limit, time budget), a backlog draining over runs, crashes, store
//! errors and the exclusive lease. The last tests read an expired log through the API, on both
//! stacks.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::jobs::Clock;
use buildlogs::jobs::clock::ManualClock;
use buildlogs::stores::fault_injection::{Fault, FaultSwitch, FaultyObjectStore, Op};
use buildlogs::stores::sql_metadata::SqlMetadata;
use buildlogs::traces::archive::{ArchiveOutcome, ArchiveService, archive_path};
use buildlogs::traces::archived_lines;
use buildlogs::traces::expiry::{
    ArtifactExpiry, EXPIRY_LEASE, ExpiryConfig, ExpiryError, ExpiryReport, StoppedBy,
};
use buildlogs::traces::line_index::LineIndex;
use buildlogs::traces::metadata::{ArtifactRowStore, BuildStore, LeaseStore, TraceMetadataStore};
use buildlogs::traces::model::{Artifact, BuildStatus, NewArtifact};
use buildlogs::traces::objects::{ObjectStorage, is_not_found};
use buildlogs::traces::stores::TraceStores;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use support::app::{ADMIN, TestApp};
use support::objects::TestObjects;
use support::sql::{TestPostgres, TestSql, TestSqlite};
use support::wait::wait_for;

/// The manual clock's start (2023-11-14).
const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

struct Fixture {
    meta: Arc<SqlMetadata>,
    objects: Arc<dyn ObjectStorage>,
    /// The same store through object_store's whole API (`head`, `list`).
    raw: Arc<dyn ObjectStore>,
    clock: ManualClock,
    /// Dropped after the stores: the folder, file or schema goes with them.
    _objects: TestObjects,
    db: TestSql,
}

impl Fixture {
    async fn sqlite(_test: &str) -> Self {
        let db = TestSqlite::new().await;
        Self::new(SqlMetadata::sqlite(db.pool.clone()), TestSql::Sqlite(db))
    }

    async fn postgres(test: &str) -> Self {
        let db = TestPostgres::new(test).await;
        Self::new(
            SqlMetadata::postgres(db.pool.clone()),
            TestSql::Postgres(db),
        )
    }

    fn new(meta: SqlMetadata, db: TestSql) -> Self {
        let test_objects = TestObjects::local();
        let opened = test_objects.open("");
        Self {
            meta: Arc::new(meta),
            objects: opened.store,
            raw: opened.raw,
            clock: ManualClock::new(T0),
            _objects: test_objects,
            db,
        }
    }

    fn expiry(&self, config: ExpiryConfig) -> ArtifactExpiry {
        self.expiry_over(self.objects.clone(), config)
    }

    /// Expiry over `objects` (e.g. a faulty wrapper of [`Self::objects`]), on the manual clock.
    fn expiry_over(&self, objects: Arc<dyn ObjectStorage>, config: ExpiryConfig) -> ArtifactExpiry {
        ArtifactExpiry::new(
            self.meta.clone(),
            self.meta.clone(),
            objects,
            Arc::new(self.clock.clone()),
            config,
        )
    }

    /// A finished build archived (object written, artifact recorded) with `expire_at_ms`.
    async fn archived(&self, expire_at_ms: Option<i64>) -> Artifact {
        let build = self
            .meta
            .create_build("digest", T0 - 30 * DAY)
            .await
            .unwrap();
        self.meta
            .finish_build(build.id, BuildStatus::Success, None, T0 - 30 * DAY)
            .await
            .unwrap();
        let path = archive_path(build.id, T0 - 30 * DAY);
        let log = format!("log of {}\n", build.id);
        self.objects.put(&path, log.clone().into()).await.unwrap();
        // And its line index, as the archiver stores it: expiry deletes both.
        let mut lines = LineIndex::new();
        lines.feed(log.as_bytes());
        lines.finish();
        archived_lines::store(self.objects.as_ref(), &path, 10, 1, lines)
            .await
            .unwrap();
        let new = NewArtifact {
            build_id: build.id,
            object_path: path.to_string(),
            size: 10,
            crc32: 1,
            sha256: "ab".repeat(32),
            expire_at_ms,
        };
        self.meta.record_archive(&new, T0 - 30 * DAY).await.unwrap()
    }

    /// `n` archived builds expired an hour before `T0` (a few at a time, as archivers would).
    async fn expired_backlog(&self, n: usize) -> Vec<Artifact> {
        futures::stream::iter(0..n)
            .map(|_| self.archived(Some(T0 - HOUR)))
            .buffer_unordered(8)
            .collect()
            .await
    }

    /// Whether the artifact's object is stored; its line index must be stored with it, or
    /// gone with it.
    async fn object_exists(&self, artifact: &Artifact) -> bool {
        let archive = Path::from(artifact.object_path.as_str());
        let (log, index) = (
            self.exists(&archive).await,
            self.exists(&archived_lines::path_for(&archive)).await,
        );
        assert_eq!(log, index, "an archive and its line index go together");
        log
    }

    async fn exists(&self, path: &Path) -> bool {
        match self.raw.head(path).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => panic!("head {path}: {e}"),
        }
    }

    async fn row_exists(&self, artifact: &Artifact) -> bool {
        self.meta
            .trace_artifact(artifact.build_id)
            .await
            .unwrap()
            .is_some()
    }

    async fn artifact_rows(&self) -> i64 {
        self.db
            .scalar_i64("SELECT COUNT(*) FROM job_artifacts")
            .await
            .unwrap_or(0)
    }

    async fn objects_stored(&self) -> usize {
        let all: Vec<_> = self.raw.list(None).try_collect().await.unwrap();
        all.len()
    }
}

fn config(batch: u32, loop_limit: u32) -> ExpiryConfig {
    ExpiryConfig {
        batch,
        loop_limit,
        ..ExpiryConfig::default()
    }
}

fn report(deleted: u64, batches: u64, stopped_by: StoppedBy) -> ExpiryReport {
    ExpiryReport {
        deleted,
        batches,
        stopped_by,
    }
}

/// A clock over a [`ManualClock`] that moves on by `step_ms` each time it is read: time passes
/// as a run goes, without sleeping.
struct TickingClock {
    clock: ManualClock,
    step_ms: i64,
}

impl Clock for TickingClock {
    fn now_ms(&self) -> i64 {
        let now = self.clock.now_ms();
        self.clock.advance_ms(self.step_ms);
        now
    }
}

// --- What goes ---------------------------------------------------------------------------------

async fn only_expired_unlocked_artifacts_go_object_and_row(f: &Fixture) {
    let forever = f.archived(None).await;
    let locked = f.archived(Some(T0 - DAY)).await;
    // The only artifact with an expiry so far.
    f.db.execute("UPDATE job_artifacts SET locked = true WHERE expire_at IS NOT NULL")
        .await;
    let later = f.archived(Some(T0 + HOUR)).await;
    let due = [
        f.archived(Some(T0 - DAY)).await,
        f.archived(Some(T0 - 1)).await,
        f.archived(Some(T0)).await,
    ];
    let run = f.expiry(ExpiryConfig::default()).run().await.unwrap();
    assert_eq!(run, report(3, 1, StoppedBy::Done));
    for gone in &due {
        assert!(!f.object_exists(gone).await, "{gone:?}");
        assert!(!f.row_exists(gone).await, "{gone:?}");
        // Still archived (so stale-trace recovery never archives it again), without artifact.
        let m = f.meta.trace_metadata(gone.build_id).await.unwrap().unwrap();
        assert_eq!(
            (m.trace_artifact_id, m.archived_at_ms.is_some()),
            (None, true)
        );
    }
    for kept in [&forever, &later, &locked] {
        assert!(f.object_exists(kept).await, "{kept:?}");
        assert!(f.row_exists(kept).await, "{kept:?}");
    }
    assert!(
        f.meta
            .stale_traces(0, i64::MAX, u32::MAX, 100)
            .await
            .unwrap()
            .is_empty(),
        "no expired build is stale"
    );

    // An hour later the next one is due; the locked one and the one kept forever never are.
    f.clock.advance_ms(HOUR);
    let run = f.expiry(ExpiryConfig::default()).run().await.unwrap();
    assert_eq!(run, report(1, 1, StoppedBy::Done));
    assert!(!f.object_exists(&later).await && !f.row_exists(&later).await);
    f.clock.advance_ms(365 * DAY);
    let run = f.expiry(ExpiryConfig::default()).run().await.unwrap();
    assert_eq!(run, report(0, 1, StoppedBy::Done));
    for kept in [&forever, &locked] {
        assert!(f.object_exists(kept).await && f.row_exists(kept).await);
    }
}

// --- Bounded runs ------------------------------------------------------------------------------

async fn a_backlog_shrinks_run_by_run_within_the_loop_limit_to_zero(f: &Fixture) {
    let backlog = f.expired_backlog(1_050).await;
    let kept = f.archived(None).await;
    assert_eq!(f.artifact_rows().await, 1_051);
    let expiry = f.expiry(config(100, 3));
    // At most 3 batches of 100 a run: 300, 300, 300, then the last 150 and a short batch.
    let mut left = 1_050;
    for _ in 0..3 {
        let run = expiry.run().await.unwrap();
        assert_eq!(run, report(300, 3, StoppedBy::LoopLimit));
        left -= 300;
        assert_eq!(f.artifact_rows().await, left + 1);
        // An archive and its line index each.
        assert_eq!(f.objects_stored().await as i64, 2 * (left + 1));
    }
    let run = expiry.run().await.unwrap();
    assert_eq!(run, report(150, 2, StoppedBy::Done));
    assert_eq!(f.artifact_rows().await, 1);
    assert_eq!(f.objects_stored().await, 2);
    for gone in backlog.iter().step_by(97) {
        assert!(!f.object_exists(gone).await && !f.row_exists(gone).await);
    }
    assert!(f.object_exists(&kept).await && f.row_exists(&kept).await);
    assert_eq!(expiry.run().await.unwrap(), report(0, 1, StoppedBy::Done));
}

async fn a_run_stops_once_its_time_budget_is_spent(f: &Fixture) {
    f.expired_backlog(200).await;
    let config = ExpiryConfig {
        batch: 10,
        loop_limit: 1_000,
        budget: Duration::from_secs(1),
        lease: Duration::from_secs(60),
    };
    // A tenth of a second passes each time the run looks at the clock.
    let ticking = TickingClock {
        clock: f.clock.clone(),
        step_ms: 100,
    };
    let expiry = ArtifactExpiry::new(
        f.meta.clone(),
        f.meta.clone(),
        f.objects.clone(),
        Arc::new(ticking),
        config,
    );
    let run = expiry.run().await.unwrap();
    assert_eq!(run.stopped_by, StoppedBy::Budget, "{run:?}");
    assert!(
        (2..20).contains(&run.batches),
        "a 1 s budget at 0.1 s a look: {run:?}"
    );
    assert_eq!(run.deleted, run.batches * 10, "whole batches: {run:?}");
    assert_eq!(f.artifact_rows().await, 200 - run.deleted as i64);
    // The next runs go on where it stopped, each as bounded.
    let mut deleted = run.deleted;
    while deleted < 200 {
        let next = expiry.run().await.unwrap();
        assert!(next.deleted > 0 && next.batches < 20, "{next:?}");
        deleted += next.deleted;
    }
    assert_eq!(deleted, 200);
    assert_eq!(f.artifact_rows().await, 0);
}

// --- Crashes and errors ------------------------------------------------------------------------

async fn a_crash_between_object_and_row_is_finished_by_the_next_run(f: &Fixture) {
    let half_done = f.archived(Some(T0 - DAY)).await;
    let untouched = f.archived(Some(T0 - DAY)).await;
    // What a run killed after deleting the object and before deleting the row leaves.
    f.objects
        .delete(&Path::from(half_done.object_path.as_str()))
        .await
        .unwrap();
    assert!(f.row_exists(&half_done).await);
    let run = f.expiry(ExpiryConfig::default()).run().await.unwrap();
    assert_eq!(run, report(2, 1, StoppedBy::Done));
    for gone in [&half_done, &untouched] {
        assert!(!f.object_exists(gone).await && !f.row_exists(gone).await);
    }
}

async fn a_store_error_stops_the_run_keeps_the_row_and_frees_the_lease(f: &Fixture) {
    let backlog = f.expired_backlog(5).await;
    let (faulty, switch) = FaultyObjectStore::wrap(f.objects.clone());
    // The fifth object delete fails (an artifact is two: its line index, then its log): two
    // artifacts are gone, the rest stay whole.
    switch.set(Fault::fail().only(&[Op::Delete]).after(4));
    let err = f
        .expiry_over(faulty, config(2, 10))
        .run()
        .await
        .expect_err("the object store failed");
    assert!(matches!(err, ExpiryError::Objects { .. }), "{err}");
    assert_eq!(f.artifact_rows().await, 3);
    let mut whole = 0;
    for a in &backlog {
        match (f.object_exists(a).await, f.row_exists(a).await) {
            (true, true) => whole += 1,
            (false, false) => {}
            other => panic!("half an artifact: {other:?} {a:?}"),
        }
    }
    assert_eq!(whole, 3);
    // The lease was released: the next run (storage back) goes at once and finishes.
    let run = f.expiry(config(2, 10)).run().await.unwrap();
    assert_eq!(run, report(3, 2, StoppedBy::Done));
    assert_eq!(f.artifact_rows().await, 0);
}

// --- The lease -------------------------------------------------------------------------------

/// Starts a run over a store whose object deletes hang after `after` of them (two per
/// artifact: its line index, then its log), and waits until it hangs (holding the lease,
/// mid-batch).
async fn hung_run(
    f: &Fixture,
    config: ExpiryConfig,
    after: u64,
) -> (
    tokio::task::JoinHandle<Result<ExpiryReport, ExpiryError>>,
    FaultSwitch,
) {
    let (faulty, switch) = FaultyObjectStore::wrap(f.objects.clone());
    switch.set(Fault::hang().only(&[Op::Delete]).after(after));
    let expiry = f.expiry_over(faulty, config);
    let run = tokio::spawn(async move { expiry.run().await });
    let watching = switch.clone();
    wait_for(
        "the run to hang in an object delete",
        Duration::from_secs(10),
        || {
            let hanging = watching.hanging();
            async move { hanging == 1 }
        },
    )
    .await;
    (run, switch)
}

async fn a_second_run_while_the_lease_is_held_does_nothing(f: &Fixture) {
    f.expired_backlog(6).await;
    let (first, switch) = hung_run(f, config(4, 10), 2).await;
    // The first run holds the lease, one artifact deleted, one object delete in flight.
    let second = f.expiry(config(4, 10)).run().await.unwrap();
    assert_eq!(second, report(0, 0, StoppedBy::LeaseHeld));
    assert_eq!(f.artifact_rows().await, 5, "the second run deleted nothing");
    switch.heal();
    let first = first.await.unwrap().unwrap();
    assert_eq!(first, report(6, 2, StoppedBy::Done));
    assert_eq!(f.artifact_rows().await, 0);
    // Released at the end: the next run takes it.
    assert_eq!(
        f.expiry(config(4, 10)).run().await.unwrap(),
        report(0, 1, StoppedBy::Done)
    );

    // A lease another holder took (a run in another process) keeps every run out until it
    // expires.
    f.archived(Some(T0 - DAY)).await;
    let now = f.clock.now_ms();
    assert!(
        f.meta
            .take_lease(EXPIRY_LEASE, "another-process", now, now + 60_000)
            .await
            .unwrap()
    );
    let run = f.expiry(ExpiryConfig::default()).run().await.unwrap();
    assert_eq!(run, report(0, 0, StoppedBy::LeaseHeld));
    f.clock.advance_ms(60_000);
    let run = f.expiry(ExpiryConfig::default()).run().await.unwrap();
    assert_eq!(run, report(1, 1, StoppedBy::Done));
}

async fn a_killed_run_blocks_others_only_until_its_lease_expires(f: &Fixture) {
    f.expired_backlog(4).await;
    let lease = ExpiryConfig::default().lease;
    let (killed, _switch) = hung_run(f, config(10, 10), 2).await;
    // The worker dies mid-run: its lease stays behind.
    killed.abort();
    assert!(killed.await.unwrap_err().is_cancelled());
    assert_eq!(f.artifact_rows().await, 3);
    let run = f.expiry(config(10, 10)).run().await.unwrap();
    assert_eq!(run, report(0, 0, StoppedBy::LeaseHeld));
    f.clock.advance_ms(lease.as_millis() as i64);
    let run = f.expiry(config(10, 10)).run().await.unwrap();
    assert_eq!(run, report(3, 1, StoppedBy::Done));
}

async fn a_run_that_outlives_its_lease_stops_at_its_next_renewal(f: &Fixture) {
    f.expired_backlog(6).await;
    let config = ExpiryConfig {
        batch: 2,
        loop_limit: 100,
        budget: Duration::from_secs(3_600),
        lease: Duration::from_secs(60),
    };
    let (stalled, switch) = hung_run(f, config, 1).await;
    // The run stalls past its lease, and another run takes the lease.
    f.clock.advance_ms(61_000);
    let now = f.clock.now_ms();
    assert!(
        f.meta
            .take_lease(EXPIRY_LEASE, "the-next-run", now, now + 60_000)
            .await
            .unwrap()
    );
    switch.heal();
    // It finishes the batch in hand, then finds the lease taken and stops.
    let stalled = stalled.await.unwrap().unwrap();
    assert_eq!(stalled, report(2, 1, StoppedBy::LeaseLost));
    assert_eq!(f.artifact_rows().await, 4);
    // It did not release the other holder's lease.
    assert!(
        !f.meta
            .take_lease(EXPIRY_LEASE, "someone-else", now, now + 60_000)
            .await
            .unwrap()
    );
}

macro_rules! tests_on {
    ($module:ident, $fixture:ident, $($name:ident),* $(,)?) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = super::Fixture::$fixture(stringify!($name)).await;
                    super::$name(&f).await;
                }
            )*
        }
    };
}

macro_rules! on_every_sql_store {
    ($($name:ident),* $(,)?) => {
        tests_on!(sqlite, sqlite, $($name),*);
        tests_on!(postgres, postgres, $($name),*);
    };
}

on_every_sql_store!(
    only_expired_unlocked_artifacts_go_object_and_row,
    a_backlog_shrinks_run_by_run_within_the_loop_limit_to_zero,
    a_run_stops_once_its_time_budget_is_spent,
    a_crash_between_object_and_row_is_finished_by_the_next_run,
    a_store_error_stops_the_run_keeps_the_row_and_frees_the_lease,
    a_second_run_while_the_lease_is_held_does_nothing,
    a_killed_run_blocks_others_only_until_its_lease_expires,
    a_run_that_outlives_its_lease_stops_at_its_next_renewal,
);

// --- What a reader sees --------------------------------------------------------------------------

async fn get(app: &TestApp, uri: String) -> support::app::Reply {
    app.send(
        Request::get(uri)
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

/// A log archived with a 7-day retention, read, expired, read again; archiving it again.
async fn an_expired_log_reads_as_gone_and_is_never_archived_again(app: &TestApp) {
    let parts = &app.parts;
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let archive = ArchiveService::new(TraceStores {
        meta: parts.meta.clone(),
        live: parts.live.clone(),
        objects: parts.store.clone(),
        clock: Arc::new(clock.clone()),
    })
    .with_expire_in(Some(Duration::from_secs(7 * 24 * 3600)));
    let (id, token) = app.create_job().await;
    assert_eq!(
        app.patch(id, &token, 0, b"hello, expiry\n").await.status,
        StatusCode::ACCEPTED
    );
    parts
        .meta
        .finish_build(id, BuildStatus::Success, None, clock.now_ms())
        .await
        .unwrap();
    let artifact = match archive.archive(id).await.unwrap() {
        ArchiveOutcome::Archived(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(artifact.expire_at_ms, Some(clock.now_ms() + 7 * DAY));
    assert_eq!(app.trace(id, &token).await.body, b"hello, expiry\n");

    let expiry = ArtifactExpiry::new(
        parts.meta.clone(),
        parts.meta.clone(),
        parts.store.clone(),
        Arc::new(clock.clone()),
        ExpiryConfig::default(),
    );
    clock.advance_ms(7 * DAY - 1);
    assert_eq!(expiry.run().await.unwrap().deleted, 0, "not yet");
    clock.advance_ms(1);
    assert_eq!(expiry.run().await.unwrap().deleted, 1);

    for reply in [
        app.trace(id, &token).await,
        get(app, format!("/api/v4/jobs/{id}/trace")).await,
        get(app, format!("/api/v4/jobs/{id}/trace/stream")).await,
    ] {
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.json()["message"], "trace expired");
    }
    let job = get(app, format!("/api/v4/jobs/{id}")).await;
    assert_eq!(job.status, StatusCode::OK);
    let json = job.json();
    assert_eq!(json["status"], "success");
    assert_eq!(json["trace"]["state"], "expired");
    assert_eq!(json["trace"]["size"], 0);
    let archived_at = json["trace"]["archived_at"]
        .as_str()
        .expect("an RFC 3339 time");
    assert!(
        chrono::DateTime::parse_from_rfc3339(archived_at).is_ok(),
        "{archived_at}"
    );

    // A stray archive job: nothing to do, no new (empty) archive; recovery skips the build.
    assert_eq!(archive.archive(id).await.unwrap(), ArchiveOutcome::Expired);
    assert_eq!(parts.meta.trace_artifact(id).await.unwrap(), None);
    let path = Path::from(artifact.object_path.as_str());
    assert!(matches!(
        parts.raw.head(&path).await,
        Err(e) if is_not_found(&e)
    ));
    assert!(
        !parts
            .meta
            .stale_traces(0, i64::MAX, u32::MAX, 1_000)
            .await
            .unwrap()
            .contains(&id)
    );
    assert_eq!(app.trace(id, &token).await.status, StatusCode::NOT_FOUND);
}

/// A log archived without retention (the default) is never expired.
async fn a_log_kept_forever_is_never_expired(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"keep me").await;
    app.parts
        .meta
        .finish_build(
            id,
            BuildStatus::Success,
            None,
            chrono::Utc::now().timestamp_millis(),
        )
        .await
        .unwrap();
    let artifact = match app.archive.archive(id).await.unwrap() {
        ArchiveOutcome::Archived(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(artifact.expire_at_ms, None);
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis() + 100 * 365 * DAY);
    let expiry = ArtifactExpiry::new(
        app.parts.meta.clone(),
        app.parts.meta.clone(),
        app.parts.store.clone(),
        Arc::new(clock),
        ExpiryConfig::default(),
    );
    assert_eq!(expiry.run().await.unwrap().deleted, 0);
    let reply = app.trace(id, &token).await;
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (StatusCode::OK, &b"keep me"[..])
    );
}

on_both_stacks!(
    an_expired_log_reads_as_gone_and_is_never_archived_again,
    a_log_kept_forever_is_never_expired,
);
