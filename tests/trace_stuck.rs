//! The stuck-build sweep (`src/traces/stuck.rs`) on both stacks (embedded: SQLite; production:
//! PostgreSQL + Redis + S3): a running build silent past the timeout is failed with
//! `stuck_or_timeout_failure` and archived while one with recent PATCHes is untouched; a final
//! state left pending past the accept timeout is committed and archived; a run is bounded and
//! exclusive under its lease; a stuck build's SSE stream ends. Time is injected (a log "written
//! two hours ago" is stamped by a live store with a clock in the past), never slept.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::jobs::clock::ManualClock;
use buildlogs::jobs::{Clock, Job, JobClient, SystemClock};
use buildlogs::traces::expiry::StoppedBy;
use buildlogs::traces::jobs::ArchiveTrace;
use buildlogs::traces::live::AppendOutcome;
use buildlogs::traces::model::BuildStatus;
use buildlogs::traces::stuck::{STUCK_FAILURE_REASON, STUCK_LEASE, StuckBuilds, StuckConfig};
use buildlogs::traces::tokens;
use http_body_util::BodyExt;
use support::app::{ADMIN, TestApp};
use tower::ServiceExt;

const HOUR_MS: i64 = 3600 * 1000;

/// The sweep over the app's stores, at `clock`.
fn sweep(app: &TestApp, clock: Arc<dyn Clock>, config: StuckConfig) -> StuckBuilds {
    let parts = &app.parts;
    StuckBuilds::new(
        parts.meta.clone(),
        parts.live.clone(),
        parts.traces.clone(),
        // Jobs are enqueued due now, whatever time the sweep is told it is.
        JobClient::new(app.broker.clone(), Arc::new(SystemClock)),
        clock,
        config,
    )
}

/// A build registered `ago_ms` ago (as the coordinator would have), and its job token.
async fn build_registered_ago(app: &TestApp, ago_ms: i64) -> (i64, String) {
    let token = tokens::generate();
    let build = app
        .parts
        .meta
        .create_build(&tokens::digest(&token), SystemClock.now_ms() - ago_ms)
        .await
        .unwrap();
    (build.id, token)
}

/// Writes `log` into build `id` as if its runner PATCHed it `ago_ms` ago.
async fn write_ago(app: &TestApp, id: i64, log: &[u8], ago_ms: i64) {
    let past = Arc::new(ManualClock::new(SystemClock.now_ms() - ago_ms));
    let live = app.live_with_clock(past).await;
    let outcome = live.append(id, 0, log).await.unwrap();
    assert!(
        matches!(outcome, AppendOutcome::Appended { .. }),
        "{outcome:?}"
    );
}

async fn job_json(app: &TestApp, id: i64) -> serde_json::Value {
    let reply = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

async fn status(app: &TestApp, id: i64) -> (BuildStatus, Option<String>) {
    let build = app.parts.meta.build(id).await.unwrap().unwrap();
    (build.status, build.failure_reason)
}

async fn a_silent_build_is_failed_and_archived_and_an_active_one_is_untouched(app: &TestApp) {
    let silent_log = b"compiling...\n".repeat(100);
    let (silent, silent_token) = build_registered_ago(app, 2 * HOUR_MS).await;
    write_ago(app, silent, &silent_log, 2 * HOUR_MS - 1_000).await;
    // Registered two hours ago, never a byte: silent since its registration.
    let (never, _) = build_registered_ago(app, 2 * HOUR_MS).await;
    // Registered two hours ago too, but PATCHed just now: the database's `activity_at` is old
    // (a Redis append writes no row), the live store knows better.
    let (active, active_token) = build_registered_ago(app, 2 * HOUR_MS).await;
    assert_eq!(
        app.patch(active, &active_token, 0, b"still going\n")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    // And one whose runner only sends its keep-alive PUT (`state=running`, no output).
    let (kept, kept_token) = build_registered_ago(app, 2 * HOUR_MS).await;
    let touch = app
        .send(
            Request::put(format!("/api/v4/jobs/{kept}"))
                .header("content-type", "application/json")
                .body(Body::from(
                    serde_json::json!({ "token": kept_token, "state": "running" }).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(touch.status, StatusCode::OK);
    // And one registered just now.
    let (fresh, _) = app.create_job().await;

    let stuck = sweep(app, Arc::new(SystemClock), StuckConfig::default());
    let report = stuck.run().await.unwrap();
    // On the embedded stack the append and the touch moved `activity_at` themselves: not even
    // candidates.
    let looked_active = if app.kind == "production" { 2 } else { 0 };
    assert_eq!(
        (report.failed, report.active, report.committed),
        (2, looked_active, 0),
        "{}: {report:?}",
        app.kind
    );
    assert_eq!(report.stopped_by, StoppedBy::Done);
    for id in [silent, never] {
        assert_eq!(
            status(app, id).await,
            (BuildStatus::Failed, Some(STUCK_FAILURE_REASON.to_owned())),
            "{}: build {id}",
            app.kind
        );
    }
    for id in [active, kept, fresh] {
        assert_eq!(status(app, id).await.0, BuildStatus::Running, "build {id}");
    }
    // The active build's activity was copied forward: the next run does not look at it.
    let again = stuck.run().await.unwrap();
    assert_eq!((again.failed, again.active), (0, 0), "{again:?}");

    // Closed: the silent runner's late PATCH is refused, with the job's status.
    let late = app
        .patch(silent, &silent_token, silent_log.len() as u64, b"late")
        .await;
    assert_eq!(late.status, StatusCode::FORBIDDEN);
    assert_eq!(late.header("job-status"), Some("failed"));
    assert_eq!(
        app.patch(active, &active_token, 12, b"more\n").await.status,
        StatusCode::ACCEPTED
    );

    // Archived, byte for byte; the JSON says why it failed.
    assert_eq!(app.run_archives().await, 2);
    assert_eq!(app.trace(silent, &silent_token).await.body, silent_log);
    let json = job_json(app, silent).await;
    assert_eq!(json["status"], "failed");
    assert_eq!(json["failure_reason"], STUCK_FAILURE_REASON);
    assert_eq!(json["trace"]["state"], "archived", "{json}");
    assert_eq!(json["trace"]["size"], silent_log.len());
    assert_eq!(json["trace"]["partial"], false);
    assert_eq!(job_json(app, never).await["trace"]["state"], "archived");
}

async fn a_final_state_pending_past_the_accept_timeout_is_committed_by_the_sweep(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log = b"all tests passed\n".to_vec();
    assert_eq!(
        app.patch(id, &token, 0, &log).await.status,
        StatusCode::ACCEPTED
    );
    let put = app
        .send(
            Request::put(format!("/api/v4/jobs/{id}"))
                .header("content-type", "application/json")
                .body(Body::from(
                    serde_json::json!({
                        "token": token,
                        "state": "success",
                        "output": {
                            "checksum": format!("crc32:{:08x}", crc32fast::hash(&log)),
                            "bytesize": log.len(),
                        },
                    })
                    .to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(put.status, StatusCode::ACCEPTED, "a live chunk is left");
    // The runner vanishes: no second PUT, no worker flushed the chunk.

    // Within the accept timeout the sweep leaves it alone.
    let now = SystemClock.now_ms();
    let report = sweep(app, Arc::new(ManualClock::new(now)), StuckConfig::default())
        .run()
        .await
        .unwrap();
    assert_eq!(report.committed, 0, "{report:?}");
    assert_eq!(status(app, id).await.0, BuildStatus::Running);

    // Past it, the sweep commits the runner's state and the archive follows.
    let later = Arc::new(ManualClock::new(now + 6 * 60 * 1000));
    let report = sweep(app, later, StuckConfig::default())
        .run()
        .await
        .unwrap();
    assert_eq!(
        (report.committed, report.failed),
        (1, 0),
        "{}: {report:?}",
        app.kind
    );
    assert_eq!(status(app, id).await, (BuildStatus::Success, None));
    assert_eq!(app.run_archives().await, 1);
    assert_eq!(app.trace(id, &token).await.body, log);
    let json = job_json(app, id).await;
    assert_eq!(json["status"], "success");
    assert_eq!(json["trace"]["state"], "archived", "{json}");
    assert_eq!(json["trace"]["checksum_valid"], true, "{json}");
}

async fn a_run_is_bounded_and_exclusive_under_its_lease(app: &TestApp) {
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(build_registered_ago(app, 2 * HOUR_MS).await.0);
    }
    let config = StuckConfig {
        batch: 2,
        loop_limit: 2,
        ..StuckConfig::default()
    };
    let stuck = sweep(app, Arc::new(SystemClock), config);

    // Another run holds the lease: this one does nothing.
    let now = SystemClock.now_ms();
    assert!(
        app.parts
            .meta
            .take_lease(STUCK_LEASE, "another run", now, now + 60_000)
            .await
            .unwrap()
    );
    let held = stuck.run().await.unwrap();
    assert_eq!((held.stopped_by, held.failed), (StoppedBy::LeaseHeld, 0));
    for &id in &silent {
        assert_eq!(status(app, id).await.0, BuildStatus::Running);
    }
    assert!(
        app.parts
            .meta
            .release_lease(STUCK_LEASE, "another run")
            .await
            .unwrap()
    );

    // Two batches a run (the pending-state batch, one of idle builds): 2, 2, then the last.
    for expected in [(2, StoppedBy::LoopLimit), (2, StoppedBy::LoopLimit)] {
        let report = stuck.run().await.unwrap();
        assert_eq!((report.failed, report.stopped_by), expected, "{report:?}");
    }
    let last = stuck.run().await.unwrap();
    assert_eq!((last.failed, last.stopped_by), (1, StoppedBy::Done));
    for &id in &silent {
        assert_eq!(status(app, id).await.0, BuildStatus::Failed);
    }
    // The lease was released after each run: a run right after is not refused.
    let empty = stuck.run().await.unwrap();
    assert_eq!((empty.failed, empty.stopped_by), (0, StoppedBy::Done));
    // One archive each, nothing more.
    let stats = app
        .broker
        .stats(ArchiveTrace::NAME, SystemClock.now_ms())
        .await
        .unwrap();
    assert_eq!(stats.ready, 5);
}

async fn the_stream_of_a_stuck_build_ends(app: &TestApp) {
    let (id, _) = build_registered_ago(app, 2 * HOUR_MS).await;
    write_ago(app, id, b"waiting for a lock\n", 2 * HOUR_MS - 1_000).await;
    let response = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/api/v4/jobs/{id}/trace/stream"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    // The log so far arrives; the stream then waits on the running build.
    while !text.contains("event: append") {
        text.push_str(&next_frame(&mut body).await.expect("an append event"));
    }

    let report = sweep(app, Arc::new(SystemClock), StuckConfig::default())
        .run()
        .await
        .unwrap();
    assert_eq!(report.failed, 1, "{report:?}");

    while !text.contains("event: end") {
        match next_frame(&mut body).await {
            Some(frame) => text.push_str(&frame),
            None => panic!("the stream closed without an end event: {text}"),
        }
    }
    assert!(text.contains(r#""status":"failed""#), "{text}");
    // Then it closes.
    while let Some(frame) = next_frame(&mut body).await {
        assert!(frame.trim().is_empty() || frame.starts_with(':'), "{frame}");
    }
}

/// The next data frame of an SSE body as text; `None` once it ends. Bounded: a stream that
/// never sends what the test waits for fails the test instead of hanging it.
async fn next_frame(body: &mut Body) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("the stream's next frame in time")?
            .expect("body frame");
        if let Ok(data) = frame.into_data() {
            return Some(String::from_utf8(data.to_vec()).expect("SSE text"));
        }
    }
}

on_both_stacks!(
    a_silent_build_is_failed_and_archived_and_an_active_one_is_untouched,
    a_final_state_pending_past_the_accept_timeout_is_committed_by_the_sweep,
    a_run_is_bounded_and_exclusive_under_its_lease,
    the_stream_of_a_stuck_build_ends,
);
