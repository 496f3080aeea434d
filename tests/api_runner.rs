//! The runner API on both stacks (embedded: SQLite; production: PostgreSQL + Redis), driven
//! the way GitLab Runner drives it, plus every bad input: each answered with a clear 4xx and
//! nothing written.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::jobs::SystemClock;
use buildlogs::jobs::{Clock, Job};
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::jobs::FlushTraceChunk;
use support::app::{ADMIN, TestApp};

async fn runner_sequence_with_a_416_and_resend_reads_back_identical_bytes(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let first = app
        .patch(id, &token, 0, b"Running with gitlab-runner\n")
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(first.header("range"), Some("0-27"));
    assert_eq!(first.header("job-status"), Some("running"));
    assert_eq!(first.header("x-gitlab-trace-update-interval"), Some("60"));
    // The runner lost track and resends an overlapping piece: 416 with where to resume.
    let stale = app
        .patch(id, &token, 10, b"with gitlab-runner\n$ make\n")
        .await;
    assert_eq!(stale.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(stale.header("range"), Some("0-27"));
    let resumed = app.patch(id, &token, 27, b"$ make\nok\n").await;
    assert_eq!(resumed.status, StatusCode::ACCEPTED);
    assert_eq!(resumed.header("range"), Some("0-37"));
    let read = app.trace(id, &token).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, b"Running with gitlab-runner\n$ make\nok\n");
    assert_eq!(
        crc32fast::hash(&read.body),
        crc32fast::hash(b"Running with gitlab-runner\n$ make\nok\n")
    );
}

async fn a_retried_patch_changes_nothing(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"abc").await;
    let again = app.patch(id, &token, 0, b"abc").await;
    assert_eq!(again.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(app.trace(id, &token).await.body, b"abc");
}

async fn appends_across_chunk_boundaries_read_back_whole_and_enqueue_flushes(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log: Vec<u8> = (0..(2 * CHUNK_SIZE as usize + 4321))
        .map(|i| (i % 251) as u8)
        .collect();
    let mut at = 0;
    for piece in log.chunks(100_000) {
        let r = app.patch(id, &token, at, piece).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "at {at}");
        at += piece.len() as u64;
    }
    assert_eq!(app.trace(id, &token).await.body, log);
    let s = app
        .broker
        .stats(FlushTraceChunk::NAME, SystemClock.now_ms())
        .await
        .unwrap();
    assert_eq!(s.ready, 2, "one flush per filled chunk");
}

async fn concurrent_patches_at_one_offset_one_202_the_rest_416(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let request = Request::patch(format!("/api/v4/jobs/{id}/trace"))
            .header("job-token", token.clone())
            .header("content-range", "0-9")
            .body(Body::from(vec![b'a' + i; 10]))
            .unwrap();
        let router = app.router.clone();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            router.oneshot(request).await.unwrap().status()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::RANGE_NOT_SATISFIABLE)
    );
    let body = app.trace(id, &token).await.body;
    assert_eq!(body.len(), 10);
    assert!(body.iter().all(|b| *b == body[0]));
}

async fn non_utf8_bytes_are_kept_exactly(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let data: Vec<u8> = (0..=255u8).chain([0xc3, 0x28, 0xff]).collect();
    assert_eq!(
        app.patch(id, &token, 0, &data).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.trace(id, &token).await.body, data);
}

async fn a_zero_length_patch_at_the_end_changes_nothing(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"abc").await;
    let empty = app.patch(id, &token, 3, b"").await;
    assert_eq!(empty.status, StatusCode::ACCEPTED);
    assert_eq!(empty.header("range"), Some("0-3"));
    assert_eq!(
        app.patch(id, &token, 7, b"").await.status,
        StatusCode::RANGE_NOT_SATISFIABLE
    );
}

async fn bad_patches_get_clear_errors_and_write_nothing(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"abc").await;
    let no_range = app
        .send(
            Request::patch(format!("/api/v4/jobs/{id}/trace"))
                .header("job-token", &token)
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(no_range.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_range.json()["message"], "Missing header Content-Range");
    let malformed = app
        .send(
            Request::patch(format!("/api/v4/jobs/{id}/trace"))
                .header("job-token", &token)
                .header("content-range", "bytes=3-4")
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(
        malformed.json()["message"]
            .as_str()
            .unwrap()
            .contains("Content-Range")
    );
    assert_eq!(
        app.patch(id, &token, 9, b"gap").await.status,
        StatusCode::RANGE_NOT_SATISFIABLE
    );
    assert_eq!(
        app.patch(id, &token, 1, b"overlap").await.status,
        StatusCode::RANGE_NOT_SATISFIABLE
    );
    let wrong = app.patch(id, "not-the-token", 3, b"x").await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let unknown = app.patch(id + 1000, &token, 0, b"x").await;
    assert_eq!(
        unknown.status,
        StatusCode::FORBIDDEN,
        "unknown job: 403, never 404"
    );
    let no_token = app
        .send(
            Request::patch(format!("/api/v4/jobs/{id}/trace"))
                .header("content-range", "3-3")
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let huge = app
        .patch(
            id,
            &token,
            3,
            &vec![b'x'; buildlogs::api::MAX_PATCH_BYTES + 1],
        )
        .await;
    assert_eq!(huge.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        app.trace(id, &token).await.body,
        b"abc",
        "nothing written by any of them"
    );
}

async fn job_registration_needs_the_admin_token(app: &TestApp) {
    for auth in [None, Some("Bearer wrong"), Some(ADMIN)] {
        let mut request = Request::post("/api/v4/jobs");
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        let reply = app.send(request.body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    let (id, token) = app.create_job().await;
    assert_eq!(token.len(), 64);
    let show = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(show.status, StatusCode::OK);
    assert_eq!(show.json()["status"], "running");
    assert_eq!(show.json()["trace"]["size"], 0);
}

async fn readers_get_byte_ranges(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"0123456789").await;
    let ranged = |range: &'static str| {
        Request::get(format!("/api/v4/jobs/{id}/trace"))
            .header("job-token", token.clone())
            .header("range", range)
            .body(Body::empty())
            .unwrap()
    };
    let part = app.send(ranged("bytes=2-4")).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, b"234");
    assert_eq!(part.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(app.send(ranged("bytes=-3")).await.body, b"789");
    let past = app.send(ranged("bytes=10-")).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), Some("bytes */10"));
    // An unknown unit is ignored (RFC 9110 §14.2): the whole log.
    let other_unit = app.send(ranged("lines=1-2")).await;
    assert_eq!(other_unit.status, StatusCode::OK);
    assert_eq!(other_unit.body, b"0123456789");
    let other = app.create_job().await;
    let foreign = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}/trace"))
                .header("job-token", other.1)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        foreign.status,
        StatusCode::FORBIDDEN,
        "another job's token reads nothing"
    );
}

on_both_stacks!(
    runner_sequence_with_a_416_and_resend_reads_back_identical_bytes,
    a_retried_patch_changes_nothing,
    appends_across_chunk_boundaries_read_back_whole_and_enqueue_flushes,
    concurrent_patches_at_one_offset_one_202_the_rest_416,
    non_utf8_bytes_are_kept_exactly,
    a_zero_length_patch_at_the_end_changes_nothing,
    bad_patches_get_clear_errors_and_write_nothing,
    job_registration_needs_the_admin_token,
    readers_get_byte_ranges,
    reads_are_identical_before_and_after_full_chunks_are_flushed,
    the_runner_finishes_a_job_put_202_then_200_and_the_log_is_intact,
    bad_puts_get_400_and_change_nothing,
    a_byte_size_too_large_to_store_is_400_and_the_log_stays_open,
);

#[tokio::test]
async fn past_the_size_limit_the_job_fails_with_403() {
    for app in [
        TestApp::embedded(Some(10)).await,
        TestApp::production("size_limit", Some(10)).await,
    ] {
        let (id, token) = app.create_job().await;
        assert_eq!(
            app.patch(id, &token, 0, b"12345").await.status,
            StatusCode::ACCEPTED
        );
        let over = app.patch(id, &token, 5, b"678901").await;
        assert_eq!(over.status, StatusCode::FORBIDDEN, "{}", app.kind);
        assert_eq!(over.header("job-status"), Some("failed"));
        let after = app.patch(id, &token, 5, b"6").await;
        assert_eq!(
            after.status,
            StatusCode::FORBIDDEN,
            "a failed job takes no more bytes"
        );
        assert_eq!(after.header("job-status"), Some("failed"));
        assert_eq!(app.trace(id, &token).await.body, b"12345");
    }
}

async fn reads_are_identical_before_and_after_full_chunks_are_flushed(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log: Vec<u8> = (0..(3 * CHUNK_SIZE as usize + 99))
        .map(|i| (i * 13 % 256) as u8)
        .collect();
    let mut at = 0;
    for piece in log.chunks(200_000) {
        assert_eq!(
            app.patch(id, &token, at, piece).await.status,
            StatusCode::ACCEPTED
        );
        at += piece.len() as u64;
    }
    assert_eq!(app.trace(id, &token).await.body, log, "live");
    assert_eq!(app.run_flushes().await, 3, "three full chunks");
    assert_eq!(
        app.trace(id, &token).await.body,
        log,
        "three chunks flushed, one live"
    );
    // Flushing again is harmless.
    for index in 0..3 {
        let again = app.flush.flush(id, index).await.unwrap();
        assert_eq!(
            again,
            buildlogs::traces::flush::FlushOutcome::AlreadyFlushed
        );
    }
    // The partial last chunk of a running job stays live.
    assert_eq!(
        app.flush.flush(id, 3).await.unwrap(),
        buildlogs::traces::flush::FlushOutcome::NotYet
    );
    assert_eq!(
        app.patch(id, &token, at, b"tail").await.status,
        StatusCode::ACCEPTED
    );
    let mut whole = log.clone();
    whole.extend_from_slice(b"tail");
    assert_eq!(app.trace(id, &token).await.body, whole);
}

async fn put(app: &TestApp, id: i64, json: serde_json::Value) -> support::app::Reply {
    app.send(
        Request::put(format!("/api/v4/jobs/{id}"))
            .header("content-type", "application/json")
            .body(Body::from(json.to_string()))
            .unwrap(),
    )
    .await
}

async fn job_status(app: &TestApp, id: i64) -> String {
    let show = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    show.json()["status"].as_str().unwrap().to_owned()
}

/// GitLab Runner's whole exchange: PATCHes, a 416 and a resend, then PUT repeated while 202.
async fn the_runner_finishes_a_job_put_202_then_200_and_the_log_is_intact(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log: Vec<u8> = (0..(CHUNK_SIZE as usize + 5000))
        .map(|i| b"0123456789abcdef\n"[i % 17])
        .collect();
    let (a, b) = log.split_at(70_000);
    assert_eq!(
        app.patch(id, &token, 0, a).await.status,
        StatusCode::ACCEPTED
    );
    let lost = app.patch(id, &token, 60_000, b).await;
    assert_eq!(lost.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(lost.header("range"), Some("0-70000"));
    assert_eq!(
        app.patch(id, &token, 70_000, b).await.status,
        StatusCode::ACCEPTED
    );
    let checksum = format!("crc32:{:08x}", crc32fast::hash(&log));
    let body = serde_json::json!({"token": token, "state": "success", "output": {"checksum": checksum, "bytesize": log.len()}});
    let first = put(app, id, body.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "live chunks remain");
    assert_eq!(first.header("x-gitlab-trace-update-interval"), Some("1"));
    assert_eq!(
        job_status(app, id).await,
        "running",
        "not committed while chunks are live"
    );
    let after_put = app
        .patch(id, &token, log.len() as u64, b"after the final PUT")
        .await;
    assert_eq!(
        after_put.status,
        StatusCode::FORBIDDEN,
        "the log the checksum covers cannot grow"
    );
    assert_eq!(
        app.run_flushes().await,
        2,
        "the full chunk and the final partial one"
    );
    let done = put(app, id, body.clone()).await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(done.header("job-status"), Some("success"));
    assert_eq!(job_status(app, id).await, "success");
    assert_eq!(
        put(app, id, body).await.status,
        StatusCode::OK,
        "a repeated PUT is idempotent"
    );
    let read = app.trace(id, &token).await;
    assert_eq!(read.body, log);
    assert_eq!(
        format!("crc32:{:08x}", crc32fast::hash(&read.body)),
        checksum
    );
    assert_eq!(
        app.patch(id, &token, log.len() as u64, b"late")
            .await
            .status,
        StatusCode::FORBIDDEN,
        "finished jobs take no bytes"
    );

    // The final PUT enqueued the archive; a worker runs it.
    assert_eq!(app.run_archives().await, 1);
    let show = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("job-token", &token)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(show["trace"]["state"], "archived");
    assert_eq!(show["trace"]["size"], log.len());
    assert_eq!(show["trace"]["crc32"], checksum.as_str());
    assert_eq!(show["trace"]["remote_checksum"], checksum.as_str());
    assert_eq!(show["trace"]["checksum_valid"], true);
    // Times as GitLab's job JSON has them: RFC 3339 strings (UTC, milliseconds), the stored ones.
    let build = app.parts.meta.build(id).await.unwrap().unwrap();
    let metadata = app.parts.meta.trace_metadata(id).await.unwrap().unwrap();
    for (field, ms) in [
        (&show["created_at"], Some(build.created_at_ms)),
        (&show["finished_at"], build.finished_at_ms),
        (&show["trace"]["archived_at"], metadata.archived_at_ms),
    ] {
        let text = field
            .as_str()
            .unwrap_or_else(|| panic!("an RFC 3339 string: {show}"));
        assert!(text.ends_with('Z'), "UTC: {text}");
        let at = chrono::DateTime::parse_from_rfc3339(text).unwrap();
        assert_eq!(Some(at.timestamp_millis()), ms, "{text}");
    }
    assert_eq!(show["failure_reason"], serde_json::Value::Null);
    let path = show["trace"]["object_path"].as_str().unwrap().to_owned();
    assert!(
        path.starts_with("traces/") && path.ends_with(&format!("/{id}/job.log")),
        "{path}"
    );
    assert_eq!(
        app.trace(id, &token).await.body,
        log,
        "byte-identical from the archive"
    );
    let tail = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}/trace"))
                .header("job-token", &token)
                .header("range", "bytes=-7")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(tail.body, &log[log.len() - 7..]);
    match app.archive.archive(id).await.unwrap() {
        buildlogs::traces::archive::ArchiveOutcome::AlreadyArchived(a) => {
            assert_eq!(a.object_path, path)
        }
        other => panic!("archived twice: {other:?}"),
    }
}

async fn bad_puts_get_400_and_change_nothing(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let unknown = put(
        app,
        id,
        serde_json::json!({"token": token, "state": "exploded"}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("state:")
    );
    let malformed = put(
        app,
        id,
        serde_json::json!({"token": token, "state": "success", "output": {"checksum": "md5:abc"}}),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(
        malformed.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("output[checksum]")
    );
    let wrong = put(
        app,
        id,
        serde_json::json!({"token": "nope", "state": "success"}),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(job_status(app, id).await, "running");
    // A form body works as well as JSON; a checksum mismatch is recorded, never fatal.
    app.patch(id, &token, 0, b"abc").await;
    let form = |state: &str| {
        Request::put(format!("/api/v4/jobs/{id}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "token={token}&state={state}&output%5Bchecksum%5D=crc32%3A00000000&exit_code=1"
            )))
            .unwrap()
    };
    assert_eq!(app.send(form("failed")).await.status, StatusCode::ACCEPTED);
    app.run_flushes().await;
    assert_eq!(app.send(form("failed")).await.status, StatusCode::OK);
    assert_eq!(job_status(app, id).await, "failed");
    let show = app
        .send(
            Request::get(format!("/api/v4/jobs/{id}"))
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .json();
    assert_eq!(
        show["trace"]["checksum_valid"], false,
        "the mismatch is recorded"
    );
    assert_eq!(show["trace"]["remote_checksum"], "crc32:00000000");
    assert_eq!(
        show["trace"]["crc32"],
        format!("crc32:{:08x}", crc32fast::hash(b"abc")).as_str()
    );
    assert_eq!(app.trace(id, &token).await.body, b"abc");
}

/// Found by scripts/fuzz-api.sh: a final PUT whose `output[bytesize]` is a u64 past what the
/// database stores (i64) was a 500 after the log had been closed (appends refused from then
/// on): a refused request must change nothing.
async fn a_byte_size_too_large_to_store_is_400_and_the_log_stays_open(app: &TestApp) {
    let (id, token) = app.create_job().await;
    assert_eq!(app.patch(id, &token, 0, b"abc").await.status, 202);
    for bytesize in [serde_json::json!(u64::MAX), serde_json::json!(1u64 << 63)] {
        let reply = put(
            app,
            id,
            serde_json::json!({"token": token, "state": "success", "output": {"bytesize": bytesize}}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bytesize}");
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("output[bytesize]"),
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    assert_eq!(job_status(app, id).await, "running");
    assert_eq!(
        app.patch(id, &token, 3, b"def").await.status,
        StatusCode::ACCEPTED,
        "the refused PUT left the log open"
    );
    assert_eq!(app.trace(id, &token).await.body, b"abcdef");
    let largest = put(
        app,
        id,
        serde_json::json!({"token": token, "state": "success", "output": {"bytesize": i64::MAX}}),
    )
    .await;
    assert!(largest.status.is_success(), "{}", largest.status);
}
