//! The runner API's limits on both stacks (embedded: SQLite; production: PostgreSQL + Redis),
//! and the web server's timeouts and connection cap over real sockets:
//! - a PATCH is refused on its token, its job's state and its rate before its body is read;
//! - the per-job PATCH rate limit answers 429 with `Retry-After`, writing nothing;
//! - the size limit applies only to a PATCH at the current length of an open trace;
//! - `failure_reason` is one of GitLab's, or 400 and nothing recorded;
//! - header, body and idle timeouts close (or answer 408) what hangs; at the connection cap
//!   the next connection waits for a place.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use buildlogs::api::server::{ServerLimits, serve};
use buildlogs::api::{PatchRate, PatchRateLimit};
use futures::StreamExt;
use support::app::{ADMIN, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Generous on a busy machine; only reached when what is awaited never happens.
const TIMEOUT: Duration = Duration::from_secs(30);

on_both_stacks!(
    max_trace_size = 100;
    a_stray_offset_past_the_size_limit_gets_416_and_the_job_keeps_running,
    past_the_size_limit_after_the_final_put_the_job_keeps_its_state,
    an_unknown_failure_reason_gets_400_and_nothing_is_recorded,
);

async fn job_json(app: &TestApp, id: i64) -> serde_json::Value {
    app.send(
        Request::get(format!("/api/v4/jobs/{id}"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .json()
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

/// The limit is 100 bytes: a PATCH whose offset is not the log's length is a 416 whatever its
/// size, and the job runs on.
async fn a_stray_offset_past_the_size_limit_gets_416_and_the_job_keeps_running(app: &TestApp) {
    let (id, token) = app.create_job().await;
    assert_eq!(
        app.patch(id, &token, 0, b"12345").await.status,
        StatusCode::ACCEPTED
    );
    for (start, len) in [(5_000u64, 10usize), (3, 200), (6, 100)] {
        let stray = app.patch(id, &token, start, &vec![b'x'; len]).await;
        assert_eq!(
            stray.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "at {start}"
        );
        assert_eq!(stray.header("range"), Some("0-5"));
    }
    assert_eq!(job_json(app, id).await["status"], "running");
    assert_eq!(
        app.patch(id, &token, 5, b"678").await.status,
        StatusCode::ACCEPTED
    );
    // At the current length, past the limit: the job fails, as before.
    let over = app.patch(id, &token, 8, &[b'y'; 93]).await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    assert_eq!(job_json(app, id).await["status"], "failed");
    assert_eq!(app.trace(id, &token).await.body, b"12345678");
}

/// After the runner's final PUT (202: chunks still being flushed) a stray PATCH past the limit
/// is refused like any PATCH to a closed trace; the runner's state is what gets committed.
async fn past_the_size_limit_after_the_final_put_the_job_keeps_its_state(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"12345").await;
    let done = serde_json::json!({"token": token, "state": "success",
        "output": {"checksum": format!("crc32:{:08x}", crc32fast::hash(b"12345")), "bytesize": 5}});
    assert_eq!(
        put(app, id, done.clone()).await.status,
        StatusCode::ACCEPTED
    );
    let stray = app.patch(id, &token, 5, &[b'x'; 200]).await;
    assert_eq!(stray.status, StatusCode::FORBIDDEN, "the trace is closed");
    assert_eq!(stray.header("job-status"), Some("running"));
    app.run_flushes().await;
    assert_eq!(put(app, id, done).await.status, StatusCode::OK);
    let job = job_json(app, id).await;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(app.trace(id, &token).await.body, b"12345");
}

async fn an_unknown_failure_reason_gets_400_and_nothing_is_recorded(app: &TestApp) {
    let (id, token) = app.create_job().await;
    for reason in [
        "exploded".to_owned(),
        "script_failure".repeat(20),
        String::new(),
    ] {
        let reply = put(
            app,
            id,
            serde_json::json!({"token": token, "state": "failed", "failure_reason": reason}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reason:?}");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with("failure_reason:"), "{message}");
    }
    assert_eq!(
        job_json(app, id).await["status"],
        "running",
        "nothing recorded"
    );
    assert_eq!(
        app.scalar_i64("SELECT COUNT(*) FROM build_pending_states")
            .await,
        Some(0),
        "no pending state"
    );
    // GitLab's values pass (an empty log: nothing to flush, committed at once).
    let reply = put(
        app,
        id,
        serde_json::json!({"token": token, "state": "failed", "failure_reason": "job_execution_timeout"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(job_json(app, id).await["status"], "failed");
}

/// A body that counts how many of its pieces were taken: `pieces` of 64 KiB.
fn counted_body(pieces: usize) -> (Body, Arc<AtomicUsize>) {
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    let stream = futures::stream::iter(0..pieces).map(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 64 * 1024]))
    });
    (Body::from_stream(stream), taken)
}

/// A wrong token (or a finished job) is answered 403 before any of a 4 MiB body is read; with
/// the right token the same body is read and appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_with_a_wrong_token_is_refused_before_its_body_is_read() {
    let app = TestApp::embedded(None).await;
    let (id, token) = app.create_job().await;
    let patch = |token: &str, body: Body| {
        Request::patch(format!("/api/v4/jobs/{id}/trace"))
            .header("job-token", token)
            .header("content-range", format!("0-{}", 4 * 1024 * 1024 - 1))
            .body(body)
            .unwrap()
    };
    let (body, taken) = counted_body(64);
    let wrong = app.send(patch("not-the-token", body)).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(
        taken.load(Ordering::SeqCst),
        0,
        "no byte of the body was read"
    );
    let (body, taken) = counted_body(64);
    let right = app.send(patch(&token, body)).await;
    assert_eq!(right.status, StatusCode::ACCEPTED);
    assert_eq!(taken.load(Ordering::SeqCst), 64);
    assert_eq!(right.header("range"), Some("0-4194304"));
}

/// Past its burst a job's PATCHes get 429 with `Retry-After` and write nothing; another job
/// is not affected, and PATCHes with a wrong token do not spend a job's bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_patch_rate_a_job_gets_429_with_retry_after_and_nothing_is_written() {
    for app in [
        TestApp::embedded(None).await,
        TestApp::production("patch_rate", None).await,
    ] {
        let app = app.with_state(|state| {
            state.patch_rate = Arc::new(PatchRateLimit::new(PatchRate {
                per_second: 0.05,
                burst: 3,
            }))
        });
        let (id, token) = app.create_job().await;
        let (other, other_token) = app.create_job().await;
        for _ in 0..5 {
            assert_eq!(
                app.patch(other, "wrong", 0, b"x").await.status,
                StatusCode::FORBIDDEN
            );
        }
        for (i, piece) in [b"a", b"b", b"c"].iter().enumerate() {
            assert_eq!(
                app.patch(id, &token, i as u64, *piece).await.status,
                StatusCode::ACCEPTED
            );
        }
        let limited = app.patch(id, &token, 3, b"d").await;
        assert_eq!(
            limited.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            app.kind
        );
        let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
        assert_eq!(retry_after, 20, "a token every 20 s");
        assert!(
            limited.json()["message"]
                .as_str()
                .unwrap()
                .contains("too many PATCHes")
        );
        assert_eq!(app.trace(id, &token).await.body, b"abc", "nothing written");
        for i in 0..3 {
            assert_eq!(
                app.patch(other, &other_token, i, b"x").await.status,
                StatusCode::ACCEPTED,
                "the other job has its own bucket, untouched by wrong tokens"
            );
        }
    }
}

/// A web server on port 0 over `app`'s router with `limits`; its address and shutdown token.
async fn server(app: &TestApp, limits: ServerLimits) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        app.router.clone(),
        limits,
        shutdown.clone(),
    ));
    (addr, shutdown)
}

/// Reads until the server closes the connection (EOF or reset); what it sent.
async fn read_to_close(conn: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, conn.read(&mut buf))
            .await
            .expect("the server closes the connection")
        {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// One response on `conn` (headers and a `content-length` body), as text.
async fn read_response(conn: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
        let n = tokio::time::timeout(TIMEOUT, conn.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text}");
        seen.extend_from_slice(&buf[..n]);
    }
}

fn get_job(id: i64) -> String {
    format!("GET /api/v4/jobs/{id} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {ADMIN}\r\n\r\n")
}

/// Headers that never finish: the connection is closed at the header timeout (the other
/// timeouts are far away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_headers_never_finish_is_closed_at_the_header_timeout() {
    let app = TestApp::embedded(None).await;
    let (addr, _shutdown) = server(
        &app,
        ServerLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            ..ServerLimits::default()
        },
    )
    .await;
    // A fresh connection that sends nothing, and one that stops mid-headers.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v4/jobs/1 HTTP/1.1\r\nhost: te")
        .await
        .unwrap();
    assert_eq!(
        read_to_close(&mut slow).await,
        "",
        "closed without an answer"
    );
    assert_eq!(read_to_close(&mut silent).await, "");
}

/// A keep-alive connection is kept between requests, and closed once idle for the idle
/// timeout (the header timeout is far away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let app = TestApp::embedded(None).await;
    let (id, _) = app.create_job().await;
    let (addr, _shutdown) = server(
        &app,
        ServerLimits {
            header_timeout: Duration::from_secs(600),
            body_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(1),
            ..ServerLimits::default()
        },
    )
    .await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        conn.write_all(get_job(id).as_bytes()).await.unwrap();
        assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(read_to_close(&mut conn).await, "", "closed once idle");
}

/// A PATCH body that stops arriving is answered 408 at the body timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_body_that_stops_arriving_gets_408_at_the_body_timeout() {
    let app = TestApp::embedded(None).await;
    let (id, token) = app.create_job().await;
    let (addr, _shutdown) = server(
        &app,
        ServerLimits {
            header_timeout: Duration::from_secs(600),
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(600),
            ..ServerLimits::default()
        },
    )
    .await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH /api/v4/jobs/{id}/trace HTTP/1.1\r\nhost: test\r\njob-token: {token}\r\ncontent-range: 0-99\r\ncontent-length: 100\r\n\r\n0123456789"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body stopped arriving"),
        "{answer}"
    );
    assert_eq!(app.trace(id, &token).await.body, b"", "nothing written");
}

/// At the cap, the next connection is not served until a place frees up; then it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_next_connection_waits_for_a_place() {
    let app = TestApp::embedded(None).await;
    let (id, _) = app.create_job().await;
    let (addr, shutdown) = server(
        &app,
        ServerLimits {
            max_connections: 1,
            ..ServerLimits::default()
        },
    )
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(get_job(id).as_bytes()).await.unwrap();
    assert!(read_response(&mut first).await.starts_with("HTTP/1.1 200"));
    // The kernel completes the handshake (listen backlog); the server does not serve it.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(get_job(id).as_bytes()).await.unwrap();
    // Nothing to wait on for "not served": half a second of silence (a server that serves it
    // answers in milliseconds; a slow machine can only make this pass wrongly, never fail).
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), second.peek(&mut buf))
            .await
            .is_err(),
        "no answer while the only place is taken"
    );
    drop(first);
    assert!(read_response(&mut second).await.starts_with("HTTP/1.1 200"));
    shutdown.cancel();
}

/// On shutdown a request still in flight (its body stalled) holds the server no longer than
/// the shutdown timeout: then `serve` returns and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_requests_in_flight_at_most_the_shutdown_timeout() {
    let app = TestApp::embedded(None).await;
    let (id, token) = app.create_job().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(serve(
        listener,
        app.router.clone(),
        ServerLimits {
            header_timeout: Duration::from_secs(600),
            body_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(1),
            ..ServerLimits::default()
        },
        shutdown.clone(),
    ));
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH /api/v4/jobs/{id}/trace HTTP/1.1\r\nhost: test\r\njob-token: {token}\r\ncontent-range: 0-99\r\ncontent-length: 100\r\n\r\n0123456789"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // The request is in the handler, waiting for the rest of its body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();
    tokio::time::timeout(TIMEOUT, served)
        .await
        .expect("serve returns at the shutdown timeout, not at the body timeout")
        .unwrap();
    assert_eq!(app.trace(id, &token).await.body, b"", "nothing written");
}
