//! The log page's data on both stacks (embedded: SQLite + a local folder; production:
//! PostgreSQL + Redis + s3s-fs): pages of lines from anywhere and from the end, whole and
//! byte-exact across chunk boundaries whether the log is live, flushed or archived; a live
//! log's index extended as it grows; partial last lines, invalid UTF-8 and CRLF; sections
//! (nested, collapsed, open) and runner timestamps in the summary; search over a log of several
//! chunks with escapes stripped; the stream and raw views; bad parameters are 400 naming them.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::stores::fault_injection::Op;
use buildlogs::traces::archived_lines;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::line_index::LineIndex;
use buildlogs::traces::log_view::MAX_LINE_BYTES;
use buildlogs::traces::read::SCAN_READ_SIZE;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde_json::Value;
use support::app::{READER, Reply, TestApp};

const CHUNK: usize = CHUNK_SIZE as usize;

async fn get(app: &TestApp, uri: &str) -> Reply {
    app.send(
        Request::get(uri)
            .header("authorization", format!("Bearer {READER}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

async fn get_json(app: &TestApp, uri: &str) -> Value {
    let reply = get(app, uri).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{} {uri}: {}",
        app.kind,
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// PATCHes `bytes` at `at` in pieces of at most 1 MiB; the new length.
async fn append(app: &TestApp, id: i64, token: &str, at: u64, bytes: &[u8]) -> u64 {
    let mut at = at;
    for piece in bytes.chunks(1024 * 1024) {
        let reply = app.patch(id, token, at, piece).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}: PATCH", app.kind);
        at += piece.len() as u64;
    }
    at
}

async fn finish(app: &TestApp, id: i64, token: &str, log: &[u8]) {
    let put = || {
        Request::put(format!("/api/v4/jobs/{id}"))
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({
                    "token": token,
                    "state": "success",
                    "output": {"checksum": format!("crc32:{:08x}", crc32fast::hash(log)), "bytesize": log.len()},
                })
                .to_string(),
            ))
            .unwrap()
    };
    let first = app.send(put()).await.status;
    assert!(first == StatusCode::ACCEPTED || first == StatusCode::OK);
    app.run_flushes().await;
    assert_eq!(app.send(put()).await.status, StatusCode::OK);
}

/// Lines of varied lengths (some longer than a frame would split evenly), with colours.
fn varied_log(lines: usize) -> (Vec<u8>, Vec<String>) {
    let mut log = Vec::new();
    let mut expected = Vec::new();
    for i in 1..=lines {
        let line = format!(
            "\x1b[3{}mline {i}\x1b[0m {}",
            i % 8,
            "x".repeat((i * 37) % 300)
        );
        log.extend_from_slice(line.as_bytes());
        log.push(b'\n');
        expected.push(line);
    }
    (log, expected)
}

/// Every line, read page by page from line 1, and the tail, checked against `expected`.
async fn check_pages(app: &TestApp, id: i64, expected: &[String], stage: &str) {
    let total = expected.len() as u64;
    let mut from = 1;
    while from <= total {
        let page = get_json(app, &format!("/jobs/{id}/lines?from={from}&count=2000")).await;
        assert_eq!(page["first"], from, "{stage}");
        assert_eq!(page["total_lines"], total, "{stage}");
        let lines = page["lines"].as_array().unwrap();
        assert!(!lines.is_empty());
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(
                line.as_str().unwrap(),
                expected[from as usize - 1 + i],
                "{} {stage}: line {}",
                app.kind,
                from as usize + i
            );
        }
        assert_eq!(page["last_complete"], true);
        from += lines.len() as u64;
    }
    // A page in the middle, across a checkpoint.
    let page = get_json(app, &format!("/jobs/{id}/lines?from=995&count=10")).await;
    let got: Vec<&str> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        expected[994..1004]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "{stage}"
    );
    let tail = get_json(app, &format!("/jobs/{id}/lines?tail=500")).await;
    assert_eq!(tail["first"], total - 499, "{stage}");
    let got: Vec<&str> = tail["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        expected[expected.len() - 500..]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(tail["end_offset"], tail["total_bytes"]);
    // Past the end: nothing, with the totals.
    let past = get_json(app, &format!("/jobs/{id}/lines?from={}", total + 1)).await;
    assert_eq!(past["lines"].as_array().unwrap().len(), 0);
    assert_eq!(past["total_lines"], total);
}

async fn pages_of_lines_read_across_chunks_live_flushed_and_archived(app: &TestApp) {
    let (log, expected) = varied_log(6000);
    assert!(log.len() > 4 * CHUNK, "{} bytes: several chunks", log.len());
    let (id, token) = app.create_job().await;
    append(app, id, &token, 0, &log).await;
    check_pages(app, id, &expected, "live").await;
    let summary = get_json(app, &format!("/jobs/{id}/summary")).await;
    assert_eq!(summary["lines"], 6000);
    assert_eq!(summary["bytes"], log.len());

    app.run_flushes().await;
    assert!(
        app.parts.meta.chunks(id).await.unwrap().len() >= 4,
        "full chunks flushed"
    );
    check_pages(app, id, &expected, "flushed").await;

    finish(app, id, &token, &log).await;
    assert_eq!(app.run_archives().await, 1);
    check_pages(app, id, &expected, "archived").await;
    let page = get_json(app, &format!("/jobs/{id}/lines?tail=1")).await;
    assert_eq!(page["final"], true);
    assert_eq!(page["end_offset"], log.len());
}

async fn a_live_log_grows_between_two_calls(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let empty = get_json(app, &format!("/jobs/{id}/lines?tail=10")).await;
    assert_eq!(empty["lines"].as_array().unwrap().len(), 0);
    assert_eq!(
        (empty["total_lines"].clone(), empty["end_offset"].clone()),
        (0.into(), 0.into())
    );

    let at = append(app, id, &token, 0, b"one\ntw").await;
    let page = get_json(app, &format!("/jobs/{id}/lines?tail=10")).await;
    assert_eq!(page["lines"], serde_json::json!(["one", "tw"]));
    assert_eq!(
        page["last_complete"], false,
        "the last line has no newline yet"
    );
    assert_eq!(page["final"], false);
    assert_eq!(page["end_offset"], 6);

    // The index grows with the log: only the new bytes are scanned.
    let more = b"o\nsection_start:1700000000:late\r\x1b[0KLate\nthree\n";
    let at = append(app, id, &token, at, more).await;
    let page = get_json(app, &format!("/jobs/{id}/lines?from=2&count=5")).await;
    assert_eq!(page["first"], 2);
    assert_eq!(page["lines"][0], "two");
    assert_eq!(page["lines"][2], "three");
    assert_eq!(page["total_lines"], 4);
    assert_eq!(page["last_complete"], true);
    assert_eq!(page["end_offset"], at);
    let summary = get_json(app, &format!("/jobs/{id}/summary")).await;
    assert_eq!(summary["lines"], 4);
    assert_eq!(summary["bytes"], at);
    assert_eq!(summary["sections"][0]["name"], "late");
    assert_eq!(summary["sections"][0]["end_line"], Value::Null);
    assert_eq!(summary["job"]["status"], "running");
}

async fn raw_lines_keep_their_bytes_lossy_crlf_and_a_partial_end(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log = b"ok\r\nbad \xff\xfe end\n\x1b[1mbold\x1b[0m\r50%\r100%\nno newline";
    append(app, id, &token, 0, log).await;
    let page = get_json(app, &format!("/jobs/{id}/lines")).await;
    assert_eq!(
        page["lines"],
        serde_json::json!([
            "ok\r",
            "bad \u{FFFD}\u{FFFD} end",
            "\x1b[1mbold\x1b[0m\r50%\r100%",
            "no newline"
        ])
    );
    assert_eq!(page["last_complete"], false);
    assert_eq!(page["total_bytes"], log.len());
    assert_eq!(page["end_offset"], log.len());
    let raw = get(app, &format!("/jobs/{id}/raw")).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert_eq!(raw.body, log, "the raw view is the log's bytes");
    assert_eq!(raw.header("content-disposition"), Some("inline"));
    assert_eq!(raw.header("x-content-type-options"), Some("nosniff"));
    assert!(
        raw.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let download = get(app, &format!("/jobs/{id}/raw?download=1")).await;
    assert_eq!(
        download.header("content-disposition"),
        Some(format!("attachment; filename=\"job-{id}.log\"").as_str())
    );
    assert_eq!(download.body, log);
}

async fn sections_and_timestamps_are_in_the_summary(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log = "2024-05-01T10:00:00.250000Z 00O Running with gitlab-runner\n\
2024-05-01T10:00:01Z 00O \x1b[0Ksection_start:1714557601:prepare[collapsed=true]\r\x1b[0K\x1b[36;1mPreparing\x1b[0;m\n\
2024-05-01T10:00:02Z 01E+ inside\n\
2024-05-01T10:00:03Z 00O \x1b[0Ksection_start:1714557603:inner\r\x1b[0KInner step\n\
2024-05-01T10:00:04Z 00O deep\n\
2024-05-01T10:00:05Z 00O \x1b[0Ksection_end:1714557605:inner\r\x1b[0K\n\
2024-05-01T10:00:06Z 00O \x1b[0Ksection_end:1714557606:prepare\r\x1b[0K\n\
2024-05-01T10:00:07Z 00O \x1b[0Ksection_start:1714557607:script\r\x1b[0KRunning script\n\
2024-05-01T10:00:08Z 00O still running\n";
    append(app, id, &token, 0, log.as_bytes()).await;
    let summary = get_json(app, &format!("/jobs/{id}/summary")).await;
    assert_eq!(summary["timestamps"], true);
    assert_eq!(summary["started_at"], "2024-05-01T10:00:00.250000Z");
    assert_eq!(summary["lines"], 9);
    assert_eq!(
        summary["sections"],
        serde_json::json!([
            {"name": "prepare", "header": "Preparing", "start_line": 2, "end_line": 7,
             "start_ts": 1714557601, "end_ts": 1714557606, "collapsed": true, "depth": 0},
            {"name": "inner", "header": "Inner step", "start_line": 4, "end_line": 6,
             "start_ts": 1714557603, "end_ts": 1714557605, "collapsed": false, "depth": 1},
            {"name": "script", "header": "Running script", "start_line": 8, "end_line": null,
             "start_ts": 1714557607, "end_ts": null, "collapsed": false, "depth": 0},
        ])
    );
    assert_eq!(summary["job"]["id"], id);
    assert!(summary["job"]["trace"]["size"].is_number());

    // No timestamps: the job's creation time.
    let (plain, token) = app.create_job().await;
    append(app, plain, &token, 0, b"hello\n").await;
    let summary = get_json(app, &format!("/jobs/{plain}/summary")).await;
    assert_eq!(summary["timestamps"], false);
    let created = get_json(app, &format!("/api/v4/jobs/{plain}")).await["created_at"].clone();
    assert_eq!(summary["started_at"], created);
    assert_eq!(summary["sections"], serde_json::json!([]));
}

async fn search_counts_every_match_across_chunks_without_escapes(app: &TestApp) {
    // About 3.3 chunks of lines; a coloured "Needle" every 1,000 lines, so matches sit in
    // several chunks, plus one split by escapes and one inside a section header.
    let mut log = Vec::new();
    let mut expected = Vec::new();
    let mut n = 0u64;
    while log.len() < 3 * CHUNK + CHUNK / 3 {
        n += 1;
        let line = if n.is_multiple_of(1000) {
            expected.push(n);
            format!("2024-05-01T10:00:00Z 00O found \x1b[31mNee\x1b[1mdLE\x1b[0m at {n}\n")
        } else {
            format!("2024-05-01T10:00:00Z 00O plain line {n} with padding ..........\n")
        };
        log.extend_from_slice(line.as_bytes());
    }
    let (id, token) = app.create_job().await;
    append(app, id, &token, 0, &log).await;
    let found = get_json(app, &format!("/jobs/{id}/search?q=needle")).await;
    assert_eq!(found["total"], expected.len(), "{}", app.kind);
    assert_eq!(found["matches"], serde_json::json!(expected));
    assert_eq!(found["truncated"], false);
    assert!(expected.len() >= 4);

    let window = get_json(
        app,
        &format!("/jobs/{id}/search?q=NEEDLE&from=2001&limit=2"),
    )
    .await;
    assert_eq!(window["total"], expected.len());
    assert_eq!(window["matches"], serde_json::json!([3000, 4000]));
    assert_eq!(window["truncated"], expected.len() > 4);

    // Escape codes and the timestamp prefix are not text.
    for q in ["%5B31m", "00O", "2024-05-01"] {
        let none = get_json(app, &format!("/jobs/{id}/search?q={q}")).await;
        assert_eq!(none["total"], 0, "{q}");
    }

    finish(app, id, &token, &log).await;
    assert_eq!(app.run_archives().await, 1);
    let archived = get_json(app, &format!("/jobs/{id}/search?q=needle")).await;
    assert_eq!(archived["total"], expected.len());
}

async fn bad_parameters_are_400_naming_the_parameter(app: &TestApp) {
    let (id, token) = app.create_job().await;
    append(app, id, &token, 0, b"a\nb\n").await;
    for (query, name) in [
        ("lines?count=0", "count"),
        ("lines?count=2001", "count"),
        ("lines?count=x", "count"),
        ("lines?from=0", "from"),
        ("lines?from=-1", "from"),
        ("lines?from=1.5", "from"),
        ("lines?tail=0", "tail"),
        ("lines?tail=2001", "tail"),
        ("lines?tail=5&from=1", "from"),
        ("lines?tail=5&count=1", "count"),
        ("search", "q"),
        ("search?q=", "q"),
        ("search?q=x&limit=0", "limit"),
        ("search?q=x&limit=10001", "limit"),
        ("search?q=x&from=0", "from"),
        ("raw?download=2", "download"),
        ("stream?offset=x", "offset"),
    ] {
        let reply = get(app, &format!("/jobs/{id}/{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.starts_with(&format!("{name}:")),
            "{query}: {message}"
        );
    }
    let long = "q".repeat(201);
    let reply = get(app, &format!("/jobs/{id}/search?q={long}")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let ok = get(
        app,
        &format!("/jobs/{id}/search?q={}", "%C3%A9".repeat(200)),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "200 characters, not bytes");
}

async fn the_stream_and_the_page_are_served(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log = b"hello\nworld\n";
    append(app, id, &token, 0, log).await;
    finish(app, id, &token, log).await;
    // The job finished: the stream sends the rest, then `end`.
    let reply = get(app, &format!("/jobs/{id}/stream?offset=6")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = String::from_utf8(reply.body).unwrap();
    assert!(
        body.contains("data: d29ybGQK\n") && body.contains("id: 12\n"),
        "{body}"
    );
    assert!(body.contains("event: end"), "{body}");
    let past = get(app, &format!("/jobs/{id}/stream?offset=13")).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // The page and its assets need no credential and hold no secret.
    for (uri, kind) in [
        (format!("/jobs/{id}"), "text/html"),
        ("/jobs/assets/log.js".to_owned(), "text/javascript"),
        ("/jobs/assets/log.css".to_owned(), "text/css"),
    ] {
        let reply = app
            .send(Request::get(&uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert!(
            reply.header("content-type").unwrap().starts_with(kind),
            "{uri}"
        );
        assert!(reply.header("content-security-policy").is_some());
        assert!(!String::from_utf8_lossy(&reply.body).contains(&token));
    }
}

/// An archived log's line index is stored with the archive: the first summary and page after
/// a restart (a cold cache) read it in one object GET instead of scanning the archive; an index
/// that does not describe the archive (another CRC32) is ignored and the log scanned.
async fn an_archived_log_opens_from_its_stored_line_index(app: &TestApp) {
    let (log, expected) = varied_log(6000);
    let (id, token) = app.create_job().await;
    append(app, id, &token, 0, &log).await;
    finish(app, id, &token, &log).await;
    assert_eq!(app.run_archives().await, 1);
    let artifact = app.parts.meta.trace_artifact(id).await.unwrap().unwrap();
    let archive = Path::from(artifact.object_path.as_str());

    // Cold (no page asked for this build yet): the stored index, one GET.
    let gets = app.parts.reads.calls(Op::Get);
    let summary = get_json(app, &format!("/jobs/{id}/summary")).await;
    assert_eq!(
        app.parts.reads.calls(Op::Get) - gets,
        1,
        "{}: the index read, not the log",
        app.kind
    );
    assert_eq!(
        (summary["lines"].clone(), summary["bytes"].clone()),
        (6000.into(), log.len().into())
    );
    check_pages(app, id, &expected, "archived, stored index").await;
    // A search scans the archive in large reads (latency, not memory, limits a scan).
    let gets = app.parts.reads.calls(Op::Get);
    let found = get_json(app, &format!("/jobs/{id}/search?q=line%205999%20")).await;
    assert_eq!(found["total"], 1, "{}: {found}", app.kind);
    assert_eq!(
        app.parts.reads.calls(Op::Get) - gets,
        (log.len() as u64).div_ceil(SCAN_READ_SIZE),
        "{}: one GET per {SCAN_READ_SIZE} bytes",
        app.kind
    );

    assert!(object_exists(app, &archived_lines::path_for(&archive)).await);

    // A second build whose stored index is of other bytes (one line of the same length) with
    // another CRC32: ignored, the log is scanned.
    let (id2, token2) = app.create_job().await;
    append(app, id2, &token2, 0, &log).await;
    finish(app, id2, &token2, &log).await;
    assert_eq!(app.run_archives().await, 1);
    let artifact2 = app.parts.meta.trace_artifact(id2).await.unwrap().unwrap();
    let one_line: Vec<u8> = log
        .iter()
        .map(|&b| if b == b'\n' { b' ' } else { b })
        .collect();
    let mut wrong = LineIndex::new();
    wrong.feed(&one_line);
    wrong.finish();
    archived_lines::store(
        app.parts.store.as_ref(),
        &Path::from(artifact2.object_path.as_str()),
        artifact2.size,
        artifact2.crc32 ^ 1,
        wrong,
    )
    .await
    .unwrap();
    let summary = get_json(app, &format!("/jobs/{id2}/summary")).await;
    assert_eq!(
        summary["lines"], 6000,
        "{}: scanned, not the stale index",
        app.kind
    );
}

/// A line longer than 64 KiB comes back cut there, with how many bytes were left out; the lines
/// around it are whole, and a log that is one huge unfinished line costs a page 64 KiB.
async fn a_line_longer_than_64_kib_is_cut_and_says_so(app: &TestApp) {
    const HUGE: usize = 300_000;
    let mut log = b"short\n".to_vec();
    log.extend(std::iter::repeat_n(b'y', HUGE));
    log.extend_from_slice(b"\nafter\n");
    log.extend(std::iter::repeat_n(b'z', HUGE));
    let (id, token) = app.create_job().await;
    append(app, id, &token, 0, &log).await;

    let page = get_json(app, &format!("/jobs/{id}/lines?from=1")).await;
    let lines = page["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4, "{}", app.kind);
    assert_eq!(lines[0], "short");
    assert_eq!(lines[1].as_str().unwrap().len(), MAX_LINE_BYTES);
    assert!(lines[1].as_str().unwrap().bytes().all(|b| b == b'y'));
    assert_eq!(lines[2], "after");
    assert_eq!(lines[3].as_str().unwrap().len(), MAX_LINE_BYTES);
    let left_out = (HUGE - MAX_LINE_BYTES) as u64;
    assert_eq!(
        page["cut"],
        serde_json::json!([{"line": 2, "bytes": left_out}, {"line": 4, "bytes": left_out}]),
        "{}",
        app.kind
    );
    assert_eq!(
        page["last_complete"], false,
        "the z line has no newline yet"
    );
    assert_eq!(page["end_offset"], log.len());
    let short = get_json(app, &format!("/jobs/{id}/lines?from=1&count=1")).await;
    assert_eq!(short["cut"], serde_json::json!([]));
}

async fn object_exists(app: &TestApp, path: &Path) -> bool {
    match app.parts.raw.head(path).await {
        Ok(_) => true,
        Err(e) if buildlogs::traces::objects::is_not_found(&e) => false,
        Err(e) => panic!("head {path}: {e}"),
    }
}

on_both_stacks!(
    an_archived_log_opens_from_its_stored_line_index,
    a_line_longer_than_64_kib_is_cut_and_says_so,
    pages_of_lines_read_across_chunks_live_flushed_and_archived,
    a_live_log_grows_between_two_calls,
    raw_lines_keep_their_bytes_lossy_crlf_and_a_partial_end,
    sections_and_timestamps_are_in_the_summary,
    search_counts_every_match_across_chunks_without_escapes,
    bad_parameters_are_400_naming_the_parameter,
    the_stream_and_the_page_are_served,
);
