//! Readers of `GET`/`HEAD /api/v4/jobs/:id/trace` on both stacks (embedded: SQLite + a local
//! folder; production: PostgreSQL + Redis + s3s-fs): the log streams out a chunk at a time,
//! byte-identical whether it is live, flushed, archived or a mix, whole or ranged, while it
//! moves under the reader; a reader holds one chunk, not the log; the object store down is a
//! 503 (or, once the body started, a cut-short body); log responses carry nosniff and a CSP.

mod support;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use buildlogs::stores::fault_injection::Op;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::flush::FlushOutcome;
use buildlogs::traces::metadata::BreakerRecord;
use buildlogs::traces::read::ARCHIVE_READ_SIZE;
use http_body_util::BodyExt;
use support::app::{Reply, TestApp};

const CHUNK: usize = CHUNK_SIZE as usize;

/// A log of `len` bytes with every byte value (not UTF-8) and a position-dependent pattern,
/// so a misplaced chunk or frame cannot compare equal.
fn log_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i.wrapping_mul(31) ^ (i >> 17)) as u8).wrapping_add(seed))
        .collect()
}

/// Registers a job and PATCHes `log` in pieces that straddle chunk boundaries.
async fn write_log(app: &TestApp, log: &[u8]) -> (i64, String) {
    let (id, token) = app.create_job().await;
    let mut at = 0u64;
    for piece in log.chunks(3 * CHUNK + CHUNK / 3) {
        let reply = app.patch(id, &token, at, piece).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}: PATCH", app.kind);
        at += piece.len() as u64;
    }
    (id, token)
}

fn put_success(id: i64, token: &str, log: &[u8]) -> Request<Body> {
    let body = serde_json::json!({
        "token": token,
        "state": "success",
        "output": {"checksum": format!("crc32:{:08x}", crc32fast::hash(log)), "bytesize": log.len()},
    });
    Request::put(format!("/api/v4/jobs/{id}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The runner's final PUT, every chunk flushed, the PUT again, the archive: the log is one
/// object and its chunks are gone.
async fn archive(app: &TestApp, id: i64, token: &str, log: &[u8]) {
    assert_eq!(
        app.send(put_success(id, token, log)).await.status,
        StatusCode::ACCEPTED
    );
    app.run_flushes().await;
    assert_eq!(
        app.send(put_success(id, token, log)).await.status,
        StatusCode::OK
    );
    assert_eq!(app.run_archives().await, 1, "{}", app.kind);
    assert!(app.parts.meta.chunks(id).await.unwrap().is_empty());
}

fn trace_request(method: &str, id: i64, token: &str, range: Option<&str>) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("/api/v4/jobs/{id}/trace"))
        .header("job-token", token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.body(Body::empty()).unwrap()
}

async fn get(app: &TestApp, id: i64, token: &str, range: Option<&str>) -> Reply {
    app.send(trace_request("GET", id, token, range)).await
}

/// The response with its body not yet read (the handler has run: the headers are out).
async fn open(app: &TestApp, id: i64, token: &str) -> Response<Body> {
    use tower::ServiceExt;
    let response = app
        .router
        .clone()
        .oneshot(trace_request("GET", id, token, None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", app.kind);
    response
}

/// The next data frame of `body`: `Some(Ok(bytes))`, `Some(Err(()))` for a body error, `None`
/// at its end.
async fn next_frame(body: &mut Body) -> Option<Result<bytes::Bytes, ()>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_trailers) => continue,
            },
            Err(_) => return Some(Err(())),
        }
    }
}

fn assert_log_headers(reply: &Reply, what: &str) {
    assert_eq!(
        reply.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        reply.header("content-security-policy"),
        Some("default-src 'none'; sandbox"),
        "{what}"
    );
}

/// Every way of reading `log`, each checked against it: the whole log, HEAD, single ranges
/// within and across chunks, suffix and open-ended ranges, and the ranges answered with the
/// whole log (unknown unit, multi-range) or 416 (past the end).
async fn check_reads(app: &TestApp, id: i64, token: &str, log: &[u8], state: &str) {
    let what = |r: &str| format!("{} {state} {r}", app.kind);
    let len = log.len();
    let whole = get(app, id, token, None).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", what("GET"));
    assert!(whole.body == log, "{}: bytes differ", what("GET"));
    assert_eq!(whole.header("content-length"), Some(&*len.to_string()));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        whole.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_log_headers(&whole, &what("GET"));

    let head = app.send(trace_request("HEAD", id, token, None)).await;
    assert_eq!(head.status, StatusCode::OK, "{}", what("HEAD"));
    assert!(head.body.is_empty(), "{}", what("HEAD"));
    assert_eq!(head.header("content-length"), Some(&*len.to_string()));
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    assert_log_headers(&head, &what("HEAD"));

    let ranges = [
        (0, 0),
        (7, CHUNK - 1),
        (CHUNK - 10, CHUNK + 10),
        (CHUNK, 2 * CHUNK - 1),
        (5, len - 6),
        (len - 1, len - 1),
    ];
    for (lo, hi) in ranges {
        let range = format!("bytes={lo}-{hi}");
        let part = get(app, id, token, Some(&range)).await;
        assert_eq!(part.status, StatusCode::PARTIAL_CONTENT, "{}", what(&range));
        assert!(part.body == log[lo..=hi], "{}: bytes differ", what(&range));
        assert_eq!(
            part.header("content-range"),
            Some(&*format!("bytes {lo}-{hi}/{len}")),
            "{}",
            what(&range)
        );
        assert_eq!(
            part.header("content-length"),
            Some(&*(hi - lo + 1).to_string())
        );
        assert_log_headers(&part, &what(&range));
    }
    let from = CHUNK + 3;
    let open_ended = get(app, id, token, Some(&format!("bytes={from}-"))).await;
    assert_eq!(open_ended.status, StatusCode::PARTIAL_CONTENT);
    assert!(open_ended.body == log[from..], "{}", what("bytes=a-"));
    let suffix = get(app, id, token, Some(&format!("bytes=-{}", CHUNK + 7))).await;
    assert_eq!(suffix.status, StatusCode::PARTIAL_CONTENT);
    assert!(
        suffix.body == log[len - CHUNK - 7..],
        "{}",
        what("bytes=-n")
    );

    for ignored in [
        "lines=1-2",
        "bytes=0-1,5-6",
        &format!("bytes={len}-,{}-", len + 5),
    ] {
        let reply = get(app, id, token, Some(ignored)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", what(ignored));
        assert!(reply.body == log, "{}: the whole log", what(ignored));
        assert!(reply.header("content-range").is_none(), "{}", what(ignored));
    }
    let past = get(app, id, token, Some(&format!("bytes={len}-"))).await;
    assert_eq!(
        past.status,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "{}",
        what("past")
    );
    assert_eq!(
        past.header("content-range"),
        Some(&*format!("bytes */{len}"))
    );
    assert_log_headers(&past, &what("416"));
    // A HEAD ignores Range (RFC 9110 §14.2): it describes the whole log.
    let head = app
        .send(trace_request("HEAD", id, token, Some("bytes=0-0")))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some(&*len.to_string()));
}

async fn a_live_log_reads_back_whole_ranged_and_by_head(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 1234, 1);
    let (id, token) = write_log(app, &log).await;
    check_reads(app, id, &token, &log, "live").await;
}

async fn a_flushed_log_reads_back_whole_ranged_and_by_head(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 1234, 2);
    let (id, token) = write_log(app, &log).await;
    assert_eq!(
        app.run_flushes().await,
        3,
        "{}: three full chunks",
        app.kind
    );
    check_reads(app, id, &token, &log, "flushed").await;
    // Finished: the last, partial chunk flushed too; every byte now in the object store.
    assert_eq!(
        app.send(put_success(id, &token, &log)).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.run_flushes().await, 1);
    check_reads(app, id, &token, &log, "all flushed").await;
}

async fn an_archived_log_reads_back_whole_ranged_and_by_head(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 1234, 3);
    let (id, token) = write_log(app, &log).await;
    archive(app, id, &token, &log).await;
    check_reads(app, id, &token, &log, "archived").await;
}

async fn a_log_half_flushed_half_live_reads_back_whole_ranged_and_by_head(app: &TestApp) {
    let log = log_bytes(4 * CHUNK + 99, 4);
    let (id, token) = write_log(app, &log).await;
    for index in [0, 2] {
        let outcome = app.flush.flush(id, index).await.unwrap();
        assert!(
            matches!(outcome, FlushOutcome::Flushed { .. }),
            "{outcome:?}"
        );
    }
    check_reads(app, id, &token, &log, "chunks 0 and 2 flushed, 1 3 4 live").await;
}

/// The body of a 5 MiB log, live, flushed and archived, polled frame by frame: no frame is
/// larger than a chunk, and the store has been asked for at most one read more than the frames
/// consumed (the first is read before the headers go out); an archive is read
/// `ARCHIVE_READ_SIZE` at a time. A reader that loaded the log whole (or read ahead without
/// bound) would have asked for it all before the first frame was taken.
async fn a_reader_of_a_big_log_holds_one_chunk_at_a_time(app: &TestApp) {
    let chunks = 40;
    let log = log_bytes(chunks * CHUNK + 77, 5);
    let (id, token) = write_log(app, &log).await;
    let stream_and_count = async |state: &str| {
        let before = app.parts.reads.calls(Op::Get);
        let response = open(app, id, &token).await;
        let asked = |n: usize| app.parts.reads.calls(Op::Get) - before <= n as u64;
        assert!(asked(1), "{} {state}: before the first frame", app.kind);
        let mut body = response.into_body();
        let (mut got, mut frames) = (Vec::new(), 0);
        while let Some(frame) = next_frame(&mut body).await {
            let frame = frame.expect("no body error");
            assert!(
                frame.len() <= CHUNK,
                "{} {state}: a frame of {}",
                app.kind,
                frame.len()
            );
            frames += 1;
            got.extend_from_slice(&frame);
            assert!(
                asked(frames + 1),
                "{} {state}: {} object reads after {frames} frames",
                app.kind,
                app.parts.reads.calls(Op::Get) - before
            );
        }
        assert!(got == log, "{} {state}: bytes differ", app.kind);
        assert!(frames > chunks, "{} {state}: {frames} frames", app.kind);
        app.parts.reads.calls(Op::Get) - before
    };
    assert_eq!(stream_and_count("live").await, 0, "live: no object read");
    assert_eq!(app.run_flushes().await, chunks);
    assert_eq!(stream_and_count("flushed").await, chunks as u64);
    archive(app, id, &token, &log).await;
    let archive_reads = (chunks as u64 + 1).div_ceil(ARCHIVE_READ_SIZE / CHUNK_SIZE);
    assert_eq!(stream_and_count("archived").await, archive_reads);
}

/// A reader that took the first chunk of a live log keeps reading while the job finishes,
/// every chunk is flushed, the log is archived and the chunks are deleted: it gets the log,
/// byte for byte (the rest comes from the archive, at the same offset).
async fn a_reader_mid_body_while_the_log_is_archived_gets_identical_bytes(app: &TestApp) {
    let log = log_bytes(3 * CHUNK + 500, 6);
    let (id, token) = write_log(app, &log).await;
    let mut body = open(app, id, &token).await.into_body();
    let mut got = next_frame(&mut body).await.unwrap().unwrap().to_vec();
    assert_eq!(got.len(), CHUNK, "the first chunk, live");
    archive(app, id, &token, &log).await;
    while let Some(frame) = next_frame(&mut body).await {
        got.extend_from_slice(&frame.expect("no body error"));
    }
    assert!(got == log, "{}: bytes differ across the archive", app.kind);

    // And a reader mid-body while only flushes move the chunks.
    let log = log_bytes(3 * CHUNK + 500, 7);
    let (id, token) = write_log(app, &log).await;
    let mut body = open(app, id, &token).await.into_body();
    let mut got = next_frame(&mut body).await.unwrap().unwrap().to_vec();
    assert_eq!(app.run_flushes().await, 3);
    while let Some(frame) = next_frame(&mut body).await {
        got.extend_from_slice(&frame.expect("no body error"));
    }
    assert!(got == log, "{}: bytes differ across the flushes", app.kind);
}

/// The object store fails after the headers went out: the body ends with an error (the
/// client sees a truncated transfer), never with fewer bytes as if the log were shorter.
async fn a_read_error_mid_body_ends_the_body_with_an_error(app: &TestApp) {
    let log = log_bytes(2 * ARCHIVE_READ_SIZE as usize + 10, 8);
    let (id, token) = write_log(app, &log).await;
    archive(app, id, &token, &log).await;
    let response = open(app, id, &token).await;
    assert_eq!(
        response.headers()["content-length"],
        log.len().to_string().as_str()
    );
    let mut body = response.into_body();
    let first = next_frame(&mut body).await.unwrap().unwrap();
    assert!(first == log[..CHUNK]);
    app.parts.reads.fail_only(&[Op::Get]);
    let mut got = first.to_vec();
    let ended = loop {
        match next_frame(&mut body).await {
            Some(Ok(frame)) => got.extend_from_slice(&frame),
            other => break other,
        }
    };
    assert_eq!(
        ended,
        Some(Err(())),
        "{}: the body ends with an error",
        app.kind
    );
    assert!(got.len() < log.len() && got == log[..got.len()]);
    app.parts.reads.heal();
}

/// While the object store does not answer, a read of bytes that are only there is a 503 with
/// `Retry-After` and a JSON message; a HEAD, which reads no byte, still answers; a live log
/// still reads. Healed, the same read is a 200.
async fn reads_from_a_store_that_is_down_are_503_with_retry_after(app: &TestApp) {
    let archived = log_bytes(2 * CHUNK + 10, 9);
    let (id, token) = write_log(app, &archived).await;
    archive(app, id, &token, &archived).await;
    let flushed = log_bytes(2 * CHUNK + 10, 10);
    let (flushed_id, flushed_token) = write_log(app, &flushed).await;
    assert_eq!(app.run_flushes().await, 2);
    let live = log_bytes(1000, 11);
    let (live_id, live_token) = write_log(app, &live).await;

    app.parts.reads.fail_only(&[Op::Get]);
    for (id, token) in [(id, &token), (flushed_id, &flushed_token)] {
        let down = get(app, id, token, None).await;
        assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", app.kind);
        assert_eq!(down.header("retry-after"), Some("10"));
        let message = down.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains("object store"), "{message}");
        assert_log_headers(&down, "503");
        let head = app.send(trace_request("HEAD", id, token, None)).await;
        assert_eq!(head.status, StatusCode::OK, "HEAD reads no byte");
    }
    let ranged = get(app, id, &token, Some("bytes=5-9")).await;
    assert_eq!(ranged.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(get(app, live_id, &live_token, None).await.body == live);
    app.parts.reads.heal();
    assert!(get(app, id, &token, None).await.body == archived);
    assert!(get(app, flushed_id, &flushed_token, None).await.body == flushed);
}

/// While the object store's breaker is open, a read of bytes that are only there is a 503 at
/// once: the store is not even asked. Bytes still live read as usual.
async fn while_the_breaker_is_open_object_reads_are_503_without_a_request(app: &TestApp) {
    let archived = log_bytes(CHUNK + 10, 12);
    let (id, token) = write_log(app, &archived).await;
    archive(app, id, &token, &archived).await;
    let live = log_bytes(1000, 13);
    let (live_id, live_token) = write_log(app, &live).await;
    let breaker = |open: bool| BreakerRecord {
        name: buildlogs::traces::breaker::OBJECT_STORE_BREAKER.to_owned(),
        open,
        reason: open.then(|| "test".to_owned()),
        changed_at_ms: 0,
    };
    app.parts.meta.set_breaker(&breaker(true)).await.unwrap();
    let before = app.parts.reads.calls(Op::Get);
    let down = get(app, id, &token, None).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE, "{}", app.kind);
    assert_eq!(down.header("retry-after"), Some("10"));
    assert_eq!(
        app.parts.reads.calls(Op::Get),
        before,
        "no request to the store"
    );
    assert!(get(app, live_id, &live_token, None).await.body == live);
    app.parts.meta.set_breaker(&breaker(false)).await.unwrap();
    assert!(get(app, id, &token, None).await.body == archived);
}

/// An empty log: 200 with no body (and no read); any byte range of it is 416.
async fn an_empty_log_is_an_empty_200(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let whole = get(app, id, &token, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body.is_empty());
    assert_eq!(whole.header("content-length"), Some("0"));
    let ranged = get(app, id, &token, Some("bytes=0-")).await;
    assert_eq!(ranged.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(ranged.header("content-range"), Some("bytes */0"));
}

on_both_stacks!(
    a_live_log_reads_back_whole_ranged_and_by_head,
    a_flushed_log_reads_back_whole_ranged_and_by_head,
    an_archived_log_reads_back_whole_ranged_and_by_head,
    a_log_half_flushed_half_live_reads_back_whole_ranged_and_by_head,
    a_reader_of_a_big_log_holds_one_chunk_at_a_time,
    a_reader_mid_body_while_the_log_is_archived_gets_identical_bytes,
    a_read_error_mid_body_ends_the_body_with_an_error,
    reads_from_a_store_that_is_down_are_503_with_retry_after,
    while_the_breaker_is_open_object_reads_are_503_without_a_request,
    an_empty_log_is_an_empty_200,
);
