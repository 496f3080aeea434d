//! Partial logs on both stacks (embedded: SQLite; production: PostgreSQL + Redis + S3): a live
//! chunk lost for good (its Redis key deleted, or its SQL row) never blocks the rest of the
//! log. The archive succeeds once, keeps every surviving byte with a marker line where the gap
//! is, records the trace as partial (job JSON `trace.partial`, `trace.lost_bytes`), records the
//! runner's checksum mismatch, and nothing retries or dies.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::jobs::clock::ManualClock;
use buildlogs::jobs::{Clock, Job, JobClient, SystemClock};
use buildlogs::traces::archive::lost_chunk_marker;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::jobs::ArchiveTrace;
use buildlogs::traces::stuck::{StuckBuilds, StuckConfig};
use support::app::{ADMIN, TestApp};

const C: usize = CHUNK_SIZE as usize;

fn log_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"abcdefghij\n"[i % 11]).collect()
}

/// Loses live chunk `index` of build `id` for good, as a Redis restart without AOF or an
/// expired key would (production), or a lost row (embedded).
async fn lose_live_chunk(app: &TestApp, id: i64, index: u64) {
    match app.redis_prefix() {
        Some(prefix) => {
            let client = redis::Client::open(support::redis_url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let deleted: i64 = redis::cmd("DEL")
                .arg(format!("{prefix}:trace:{{{id}}}:chunk:{index}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(deleted, 1, "the live chunk was there");
        }
        None => {
            app.execute(&format!(
                "DELETE FROM build_trace_chunks WHERE build_id = {id} AND chunk_index = {index}"
            ))
            .await
        }
    }
}

async fn put_success(app: &TestApp, id: i64, token: &str, log: &[u8]) -> StatusCode {
    app.send(
        Request::put(format!("/api/v4/jobs/{id}"))
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({
                    "token": token,
                    "state": "success",
                    "output": {
                        "checksum": format!("crc32:{:08x}", crc32fast::hash(log)),
                        "bytesize": log.len(),
                    },
                })
                .to_string(),
            ))
            .unwrap(),
    )
    .await
    .status
}

async fn a_lost_live_chunk_is_archived_as_a_marked_gap_once(app: &TestApp) {
    let log = log_bytes(3 * C + 100);
    let (id, token) = app.create_job().await;
    assert_eq!(
        app.patch(id, &token, 0, &log).await.status,
        StatusCode::ACCEPTED
    );
    lose_live_chunk(app, id, 1).await;

    // The runner finishes; every chunk but the lost one flushes; the lost one never will, so
    // the PUT is answered 202 until the accept timeout, and the runner gives up.
    assert_eq!(
        put_success(app, id, &token, &log).await,
        StatusCode::ACCEPTED
    );
    app.run_flushes().await;
    assert_eq!(
        put_success(app, id, &token, &log).await,
        StatusCode::ACCEPTED
    );
    app.run_flushes().await;
    // The stuck-build sweep commits the final state past the accept timeout.
    let later: Arc<dyn Clock> = Arc::new(ManualClock::new(SystemClock.now_ms() + 6 * 60 * 1000));
    let parts = &app.parts;
    let report = StuckBuilds::new(
        parts.meta.clone(),
        parts.live.clone(),
        parts.traces.clone(),
        JobClient::new(app.broker.clone(), Arc::new(SystemClock)),
        later,
        StuckConfig::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(report.committed, 1, "{report:?}");

    // One archive run, and it succeeds.
    assert_eq!(app.run_archives().await, 1);
    let mut expected = log[..C].to_vec();
    expected.extend_from_slice(lost_chunk_marker(1, CHUNK_SIZE).as_bytes());
    expected.extend_from_slice(&log[2 * C..]);
    let read = app.trace(id, &token).await;
    assert_eq!(read.status, StatusCode::OK);
    assert!(
        read.body == expected,
        "{}: {} bytes read, {} expected",
        app.kind,
        read.body.len(),
        expected.len()
    );
    assert!(
        String::from_utf8_lossy(&read.body)
            .contains("\n[buildlogs: 131072 bytes lost here (chunk 1)]\n")
    );

    let json = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(json["status"], "success");
    assert_eq!(json["trace"]["state"], "archived", "{json}");
    assert_eq!(json["trace"]["partial"], true, "{json}");
    assert_eq!(json["trace"]["lost_bytes"], C, "{json}");
    assert_eq!(json["trace"]["size"], expected.len(), "{json}");
    assert_eq!(json["trace"]["archival_attempts"], 1, "{json}");
    // The runner's checksum covers bytes that are gone: a mismatch, recorded, not retried.
    assert_eq!(json["trace"]["checksum_valid"], false, "{json}");

    // Nothing retries, nothing is dead, nothing of the log is left behind.
    let stats = app
        .broker
        .stats(
            ArchiveTrace::NAME,
            SystemClock.now_ms() + 30 * 24 * 3600 * 1000,
        )
        .await
        .unwrap();
    assert_eq!(
        (stats.ready, stats.scheduled, stats.running, stats.dead),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    assert!(app.parts.meta.chunks(id).await.unwrap().is_empty());
    assert_eq!(app.parts.live.read_chunk(id, 0).await.unwrap(), None);
}

/// A chunk that merely moved (flushed while the archive read the rows) is never taken for lost.
async fn a_complete_log_is_never_partial(app: &TestApp) {
    let log = log_bytes(2 * C + 7);
    let (id, token) = app.create_job().await;
    assert_eq!(
        app.patch(id, &token, 0, &log).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        put_success(app, id, &token, &log).await,
        StatusCode::ACCEPTED
    );
    app.run_flushes().await;
    assert_eq!(put_success(app, id, &token, &log).await, StatusCode::OK);
    assert_eq!(app.run_archives().await, 1);
    assert_eq!(app.trace(id, &token).await.body, log);
    let metadata = app.parts.meta.trace_metadata(id).await.unwrap().unwrap();
    assert_eq!((metadata.partial(), metadata.lost_bytes), (false, 0));
    assert_eq!(metadata.checksum_valid, Some(true));
}

on_both_stacks!(
    a_lost_live_chunk_is_archived_as_a_marked_gap_once,
    a_complete_log_is_never_partial,
);
