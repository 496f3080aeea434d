//! `GET /api/v4/jobs/:id/trace/stream` on both stacks (embedded: SQLite; production:
//! PostgreSQL + Redis): a log tailed while a runner writes it, resumed from `Last-Event-ID`,
//! followed while its chunks are flushed and archived, and every bad request. The body is read
//! frame by frame, as a client reads a stream; the tests wait on events, never on sleeps.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use buildlogs::jobs::SystemClock;
use buildlogs::traces::chunk::CHUNK_SIZE;
use buildlogs::traces::stores::TraceStores;
use http_body_util::BodyExt;
use support::app::{ADMIN, TestApp};
use support::wait::wait_until;
use tower::ServiceExt;

/// What the server promises an event carries at most (`stream::EVENT_BYTES`).
const EVENT_BYTES: usize = 64 * 1024;

/// Generous for a 500 ms poll on a busy machine; only reached when an event never comes.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// One server-sent event (keep-alive comments are skipped).
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A stream's events, read incrementally from the response body.
struct Events {
    body: Body,
    buf: Vec<u8>,
    /// The offset the bytes received so far end at.
    at: u64,
}

impl Events {
    fn new(response: Response<Body>, from: u64) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an SSE stream"
        );
        Self {
            body: response.into_body(),
            buf: Vec::new(),
            at: from,
        }
    }

    /// The next event; `None` when the server closed the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(EVENT_TIMEOUT, self.next_event())
            .await
            .expect("the next event (or the end of the stream) in time")
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(block).expect("SSE text is UTF-8");
                let mut event = SseEvent::default();
                for line in text.lines().filter(|l| !l.starts_with(':')) {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.event = value.to_owned(),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => {
                            if !event.data.is_empty() {
                                event.data.push('\n');
                            }
                            event.data.push_str(value);
                        }
                        _ => {}
                    }
                }
                if event.event.is_empty() && event.data.is_empty() {
                    continue;
                }
                return Some(event);
            }
            match self.body.frame().await {
                None => {
                    assert!(
                        self.buf.is_empty(),
                        "stream ended mid-event: {:?}",
                        self.buf
                    );
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("body frame").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next `append` event's bytes, checked: at most `EVENT_BYTES`, `id` = the offset after
    /// them.
    async fn append(&mut self) -> Vec<u8> {
        let event = self.next().await.expect("an append event, not the end");
        assert_eq!(event.event, "append", "{event:?}");
        let bytes = BASE64.decode(&event.data).expect("base64 data");
        assert!(
            !bytes.is_empty() && bytes.len() <= EVENT_BYTES,
            "{}",
            bytes.len()
        );
        self.at += bytes.len() as u64;
        assert_eq!(
            event.id.as_deref(),
            Some(self.at.to_string().as_str()),
            "id = the offset after the bytes"
        );
        bytes
    }

    /// `append` events into `got` until it holds `len` bytes in all; how many events it took.
    async fn append_until(&mut self, got: &mut Vec<u8>, len: usize) -> usize {
        let mut events = 0;
        while got.len() < len {
            got.extend(self.append().await);
            events += 1;
        }
        assert_eq!(got.len(), len, "no more than was written");
        events
    }

    /// `append` events into `got` up to `end`, which is checked (`id` = the final length) and
    /// returned as JSON; then the stream must close.
    async fn until_end(&mut self, got: &mut Vec<u8>) -> serde_json::Value {
        loop {
            let event = self
                .next()
                .await
                .expect("an end event before the stream closes");
            if event.event == "end" {
                assert_eq!(event.id, Some(self.at.to_string()), "end id = final length");
                assert!(self.next().await.is_none(), "the stream closes after end");
                return serde_json::from_str(&event.data).expect("end data is JSON");
            }
            assert_eq!(event.event, "append", "{event:?}");
            let bytes = BASE64.decode(&event.data).expect("base64 data");
            assert!(bytes.len() <= EVENT_BYTES);
            self.at += bytes.len() as u64;
            assert_eq!(event.id, Some(self.at.to_string()));
            got.extend(bytes);
        }
    }
}

/// `GET …/trace/stream` with `query` and extra headers; the response is not read.
async fn stream_request(
    app: &TestApp,
    id: i64,
    query: &str,
    headers: &[(&str, &str)],
) -> Response<Body> {
    let mut request = Request::get(format!("/api/v4/jobs/{id}/trace/stream{query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .expect("router")
}

/// A stream opened with the job token.
async fn open(app: &TestApp, id: i64, token: &str, query: &str, from: u64) -> Events {
    Events::new(
        stream_request(app, id, query, &[("job-token", token)]).await,
        from,
    )
}

/// An error response's status and JSON message.
async fn error(response: Response<Body>) -> (StatusCode, String, Option<String>) {
    let status = response.status();
    let range = response
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON error body");
    (status, json["message"].as_str().unwrap().to_owned(), range)
}

/// Bytes of every value, so most of any log is not UTF-8.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 256) as u8).collect()
}

async fn patch_all(app: &TestApp, id: i64, token: &str, from: u64, data: &[u8]) {
    let mut at = from;
    for piece in data.chunks(1_000_000) {
        let r = app.patch(id, token, at, piece).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "PATCH at {at}");
        at += piece.len() as u64;
    }
}

async fn put(app: &TestApp, id: i64, token: &str, log: &[u8]) -> StatusCode {
    let checksum = format!("crc32:{:08x}", crc32fast::hash(log));
    let body = serde_json::json!({"token": token, "state": "success",
        "output": {"checksum": checksum, "bytesize": log.len()}});
    app.send(
        Request::put(format!("/api/v4/jobs/{id}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
    .status
}

/// The runner's final PUT until 200, running the flushes it waits for the way a worker would.
async fn finish(app: &TestApp, id: i64, token: &str, log: &[u8]) {
    assert_eq!(put(app, id, token, log).await, StatusCode::ACCEPTED);
    app.run_flushes().await;
    assert_eq!(put(app, id, token, log).await, StatusCode::OK);
}

async fn a_tailed_log_arrives_while_it_is_written_and_ends_after_the_final_put(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let mut stream = open(app, id, &token, "", 0).await;
    let pieces: [Vec<u8>; 5] = [
        b"Running with gitlab-runner 17.0\n".to_vec(),
        vec![0xff, 0xfe, 0x00, 0xc3, 0x28, b'\n', 0x80, 0xe2, 0x82],
        pattern(100_000, 1),
        // Crosses the first 128 KiB chunk boundary.
        pattern(60_000, 2),
        b"\x1b[32;1mJob succeeded\x1b[0;m\n".to_vec(),
    ];
    let mut log = Vec::new();
    let mut got = Vec::new();
    let mut events = Vec::new();
    for piece in &pieces {
        let r = app.patch(id, &token, log.len() as u64, piece).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        log.extend_from_slice(piece);
        events.push(stream.append_until(&mut got, log.len()).await);
        assert_eq!(got, log, "each piece arrives while the job runs");
    }
    assert!(log.len() as u64 > CHUNK_SIZE);
    assert!(
        events[2] >= 2,
        "100 000 bytes take two events at least: {events:?}"
    );
    finish(app, id, &token, &log).await;
    let end = stream.until_end(&mut got).await;
    assert_eq!(
        end,
        serde_json::json!({"length": log.len(), "status": "success"})
    );
    assert_eq!(got, log, "the events decode to the log, byte for byte");
}

async fn a_client_resuming_from_last_event_id_gets_exactly_the_rest(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let mut log = pattern(CHUNK_SIZE as usize + 70_000, 3);
    patch_all(app, id, &token, 0, &log).await;
    let mut first = open(app, id, &token, "", 0).await;
    let mut got = first.append().await;
    got.extend(first.append().await);
    let resume_at = first.at;
    drop(first);
    // While the client was away the log grew and the job finished.
    let tail = b"\xfe\xff after the reconnect\n";
    patch_all(app, id, &token, log.len() as u64, tail).await;
    log.extend_from_slice(tail);
    finish(app, id, &token, &log).await;

    // An EventSource reconnects to the same URL (here `?offset=0`) with `Last-Event-ID`: the
    // header wins.
    let resumed = stream_request(
        app,
        id,
        "?offset=0",
        &[
            ("job-token", &token),
            ("last-event-id", &resume_at.to_string()),
        ],
    )
    .await;
    let mut resumed = Events::new(resumed, resume_at);
    let mut rest = Vec::new();
    let end = resumed.until_end(&mut rest).await;
    assert_eq!(rest, log[resume_at as usize..], "exactly the rest");
    got.extend(rest);
    assert_eq!(got, log);
    assert_eq!(end["length"], log.len());

    // `?offset=` starts there too, with the token as a parameter.
    let query = format!("?offset=5&token={token}");
    let mut from_five = Events::new(stream_request(app, id, &query, &[]).await, 5);
    let mut rest = Vec::new();
    from_five.until_end(&mut rest).await;
    assert_eq!(rest, log[5..]);

    // At the very end of a finished log: only `end`.
    let query = format!("?offset={}", log.len());
    let mut at_end = open(app, id, &token, &query, log.len() as u64).await;
    let mut nothing = Vec::new();
    let end = at_end.until_end(&mut nothing).await;
    assert!(nothing.is_empty());
    assert_eq!(end["status"], "success");
}

async fn a_stream_follows_the_bytes_when_they_are_flushed_and_archived_mid_stream(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let log = pattern(3 * CHUNK_SIZE as usize + 99, 4);
    patch_all(app, id, &token, 0, &log).await;
    let mut stream = open(app, id, &token, "", 0).await;
    let mut got = stream.append().await;
    assert_eq!(got.len(), EVENT_BYTES, "a backlog comes in full events");
    assert_eq!(
        app.run_flushes().await,
        3,
        "three full chunks leave the live store"
    );
    got.extend(stream.append().await);
    got.extend(stream.append().await);
    assert_eq!(got, log[..got.len()], "read back from the flushed chunks");

    finish(app, id, &token, &log).await;
    assert_eq!(app.run_archives().await, 1, "chunks deleted, one archive");
    let end = stream.until_end(&mut got).await;
    assert_eq!(got, log, "the rest read from the archive");
    assert_eq!(
        end,
        serde_json::json!({"length": log.len(), "status": "success"})
    );

    // A client that comes after the end gets the whole archived log, then `end`.
    let mut late = Events::new(
        stream_request(
            app,
            id,
            "",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await,
        0,
    );
    let mut whole = Vec::new();
    late.until_end(&mut whole).await;
    assert_eq!(whole, log);
}

async fn bad_requests_are_answered_like_the_trace_get(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"0123456789").await;
    let (_, other_token) = app.create_job().await;
    let admin = format!("Bearer {ADMIN}");
    for (headers, why) in [
        (vec![], "no token"),
        (vec![("job-token", "not-the-token")], "a wrong job token"),
        (
            vec![("job-token", other_token.as_str())],
            "another job's token",
        ),
        (
            vec![("authorization", "Bearer wrong")],
            "a wrong admin token",
        ),
    ] {
        let (status, _, _) = error(stream_request(app, id, "", &headers).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}");
    }
    let (status, _, _) =
        error(stream_request(app, id + 1000, "", &[("job-token", &token)]).await).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "unknown job with a job token"
    );
    let (status, _, _) =
        error(stream_request(app, id + 1000, "", &[("authorization", &admin)]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown job for the admin");

    let (status, message, _) =
        error(stream_request(app, id, "?offset=ten", &[("job-token", &token)]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("offset:"), "{message}");
    let (status, message, _) = error(
        stream_request(
            app,
            id,
            "",
            &[("job-token", &token), ("last-event-id", "-1")],
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("Last-Event-ID:"), "{message}");

    // Past the end: 416 with the length, like an unsatisfiable Range on the trace GET.
    let (status, message, range) =
        error(stream_request(app, id, "?offset=11", &[("job-token", &token)]).await).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE, "{message}");
    assert_eq!(range.as_deref(), Some("bytes */10"));

    // At the end of a running log: the stream waits for what comes next.
    let mut at_end = open(app, id, &token, "?offset=10", 10).await;
    app.patch(id, &token, 10, b"abc").await;
    assert_eq!(at_end.append().await, b"abc");
    // The admin token reads it too.
    let mut admin_stream = Events::new(
        stream_request(app, id, "", &[("authorization", &admin)]).await,
        0,
    );
    assert_eq!(admin_stream.append().await, b"0123456789abc");
}

/// Shutdown (SIGTERM) ends an open stream at once, without `end`, while the job still runs;
/// the client resumes from its last `id` on another process and misses nothing.
async fn open_streams_end_at_once_when_the_server_shuts_down(app: &TestApp) {
    let (id, token) = app.create_job().await;
    app.patch(id, &token, 0, b"hello ").await;
    let mut stream = open(app, id, &token, "", 0).await;
    assert_eq!(stream.append().await, b"hello ");
    // The job runs: the stream waits for more (three poll ticks here, and without shutdown it
    // would wait as long as the job runs).
    let quiet = tokio::time::timeout(3 * Duration::from_millis(500), stream.next_event()).await;
    assert!(
        quiet.is_err(),
        "no event while nothing is written: {quiet:?}"
    );

    let cancelled_at = std::time::Instant::now();
    app.state.shutdown.cancel();
    assert!(
        stream.next().await.is_none(),
        "the stream ends, without `end`"
    );
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "promptly: {:?}",
        cancelled_at.elapsed()
    );
    // A stream opened on this server after that ends at once too.
    let mut late = open(app, id, &token, "", 0).await;
    assert!(late.next().await.is_none());

    // Elsewhere (a process not shutting down, same stores) the client resumes from its id.
    app.patch(id, &token, 6, b"world").await;
    let elsewhere = buildlogs::api::router(buildlogs::api::AppState {
        shutdown: tokio_util::sync::CancellationToken::new(),
        patch_rate: Default::default(),
        streams: Default::default(),
        logpage: Default::default(),
        ..app.state.clone()
    });
    let request = Request::get(format!("/api/v4/jobs/{id}/trace/stream"))
        .header("job-token", &token)
        .header("last-event-id", stream.at.to_string())
        .body(Body::empty())
        .unwrap();
    let mut resumed = Events::new(elsewhere.oneshot(request).await.unwrap(), stream.at);
    assert_eq!(resumed.append().await, b"world", "exactly the rest");
}

/// GitLab's update interval: a runner PATCHing a log nobody tails comes back in 60 s; once a
/// reader tails it, in 3 s (so the tail is live within seconds).
async fn a_tailed_log_tells_the_runner_to_patch_every_3_seconds(app: &TestApp) {
    let (id, token) = app.create_job().await;
    let interval = |reply: &support::app::Reply| {
        reply
            .header("x-gitlab-trace-update-interval")
            .map(str::to_owned)
    };
    let first = app.patch(id, &token, 0, b"before ").await;
    assert_eq!(first.status, 202);
    assert_eq!(
        interval(&first).as_deref(),
        Some("60"),
        "nobody tails it yet"
    );
    let stream = stream_request(app, id, "", &[("job-token", &token)]).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let second = app.patch(id, &token, 7, b"while tailed").await;
    assert_eq!(second.status, 202);
    assert_eq!(interval(&second).as_deref(), Some("3"), "a reader tails it");
    drop(stream);
}

on_both_stacks!(
    a_tailed_log_tells_the_runner_to_patch_every_3_seconds,
    open_streams_end_at_once_when_the_server_shuts_down,
    a_tailed_log_arrives_while_it_is_written_and_ends_after_the_final_put,
    a_client_resuming_from_last_event_id_gets_exactly_the_rest,
    a_stream_follows_the_bytes_when_they_are_flushed_and_archived_mid_stream,
    bad_requests_are_answered_like_the_trace_get,
    streams_of_one_build_share_one_poller_and_receive_identical_bytes,
);

/// [`open`] on another router (the same stack under other state).
async fn open_on(
    router: &axum::Router,
    id: i64,
    token: &str,
    headers: &[(&str, &str)],
) -> Response<Body> {
    let mut request =
        Request::get(format!("/api/v4/jobs/{id}/trace/stream")).header("job-token", token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .expect("router")
}

/// N streams tailing one build: their readers share one poller, so the log's bytes are read
/// from the store once per piece, not once per stream, and every stream gets the same bytes.
/// Reads are counted by a counting wrapper around the stack's real live store, under a
/// trace service of the test's own (the runner's PATCHes go through the app's).
async fn streams_of_one_build_share_one_poller_and_receive_identical_bytes(app: &TestApp) {
    use buildlogs::api::StreamHub;
    use buildlogs::traces::service::TraceService;

    const STREAMS: usize = 8;
    let counting = Arc::new(support::counting::CountingLive::new(app.parts.live.clone()));
    let traces = Arc::new(TraceService::new(
        TraceStores {
            meta: app.parts.meta.clone(),
            live: counting.clone(),
            objects: app.parts.store.clone(),
            clock: Arc::new(SystemClock),
        },
        app.state.jobs.clone(),
    ));
    let hub = Arc::new(StreamHub::default());
    let mut state = app.state.clone();
    state.traces = traces;
    state.streams = hub.clone();
    let router = buildlogs::api::router(state);

    let (id, token) = app.create_job().await;
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        streams.push(Events::new(open_on(&router, id, &token, &[]).await, 0));
    }
    assert_eq!(
        hub.pollers(),
        1,
        "one poller for the build, however many streams"
    );
    assert_eq!(hub.open_streams(), STREAMS);
    let pieces = [pattern(1_000, 1), pattern(3_000, 2)];
    let mut log = Vec::new();
    let mut got = vec![Vec::new(); STREAMS];
    for piece in &pieces {
        patch_all(app, id, &token, log.len() as u64, piece).await;
        log.extend_from_slice(piece);
        for (stream, got) in streams.iter_mut().zip(&mut got) {
            stream.append_until(got, log.len()).await;
        }
    }
    finish(app, id, &token, &log).await;
    for (stream, got) in streams.iter_mut().zip(&mut got) {
        let end = stream.until_end(got).await;
        assert_eq!(end["status"], "success");
        assert_eq!(*got, log, "every stream got the log, byte for byte");
    }
    assert_eq!(
        counting.chunk_reads(),
        pieces.len(),
        "each new piece was read once for all {STREAMS} streams"
    );
    wait_until(
        "the poller of a finished job is gone",
        EVENT_TIMEOUT,
        || hub.pollers() == 0,
    )
    .await;
    drop(streams);
    assert_eq!(hub.open_streams(), 0);
}

/// The last stream of a build leaving stops its poller: nothing stays in the hub's map and
/// nothing holds the service. On the embedded stack only: the hub is the same on every stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_stream_leaving_stops_the_builds_poller() {
    let (app, state, _keep) = own_stack_with_state().await;
    let new = state.traces.create_build().await.unwrap();
    let id = new.build.id;
    state
        .traces
        .append(id, &new.token, 0, b"hello")
        .await
        .unwrap();
    let before = Arc::strong_count(&state.traces);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut events = Events::new(open_on(&app, id, &new.token, &[]).await, 0);
        assert_eq!(events.append().await, b"hello");
        streams.push(events);
    }
    assert_eq!(state.streams.pollers(), 1);
    streams.truncate(1);
    assert_eq!(
        state.streams.pollers(),
        1,
        "one stream still tails the build"
    );
    assert_eq!(state.streams.open_streams(), 1);
    drop(streams);
    assert_eq!(
        state.streams.pollers(),
        0,
        "the last one out removed the build"
    );
    assert_eq!(state.streams.open_streams(), 0);
    wait_until(
        "the stopped poller lets go of the service",
        EVENT_TIMEOUT,
        || Arc::strong_count(&state.traces) == before,
    )
    .await;
}

/// Past the per-process cap a stream gets 503 with `Retry-After`; a place freed (a client
/// leaving) is taken by the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_stream_cap_a_stream_gets_503_with_retry_after() {
    use buildlogs::api::{StreamHub, StreamLimits};

    let (_, mut state, _keep) = own_stack_with_state().await;
    state.streams = Arc::new(StreamHub::new(StreamLimits {
        max_streams: 2,
        ..StreamLimits::default()
    }));
    let app = buildlogs::api::router(state.clone());
    let new = state.traces.create_build().await.unwrap();
    let id = new.build.id;
    let first = Events::new(open_on(&app, id, &new.token, &[]).await, 0);
    let _second = Events::new(open_on(&app, id, &new.token, &[]).await, 0);
    let over = open_on(&app, id, &new.token, &[]).await;
    assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (_, message, _) = error(over).await;
    assert!(message.contains("too many open trace streams"), "{message}");
    drop(first);
    let _third = Events::new(open_on(&app, id, &new.token, &[]).await, 0);
}

/// A stream lasts its lifetime at most: then it ends without `end` (the job still runs), and
/// the client resuming with `Last-Event-ID` gets exactly the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_lifetime_and_the_client_resumes_from_last_event_id() {
    use buildlogs::api::{StreamHub, StreamLimits};

    let (_, mut state, _keep) = own_stack_with_state().await;
    state.streams = Arc::new(StreamHub::new(StreamLimits {
        max_lifetime: Duration::from_secs(3),
        ..StreamLimits::default()
    }));
    let app = buildlogs::api::router(state.clone());
    let new = state.traces.create_build().await.unwrap();
    let id = new.build.id;
    state
        .traces
        .append(id, &new.token, 0, b"hello")
        .await
        .unwrap();
    let mut events = Events::new(open_on(&app, id, &new.token, &[]).await, 0);
    assert_eq!(events.append().await, b"hello");
    assert!(
        events.next().await.is_none(),
        "the stream ended at its lifetime, without `end`"
    );
    state
        .traces
        .append(id, &new.token, 5, b" world")
        .await
        .unwrap();
    let mut resumed = Events::new(
        open_on(&app, id, &new.token, &[("last-event-id", "5")]).await,
        5,
    );
    assert_eq!(resumed.append().await, b" world");
}

/// A router over the embedded stack whose `TraceService` the test holds (to watch who else
/// does), and what must outlive it.
async fn own_stack() -> (
    axum::Router,
    Arc<buildlogs::traces::service::TraceService>,
    (support::sql::TestSqlite, support::objects::TestObjects),
) {
    let (app, state, keep) = own_stack_with_state().await;
    (app, state.traces, keep)
}

/// [`own_stack`], with the router's state (its shutdown token).
async fn own_stack_with_state() -> (
    axum::Router,
    buildlogs::api::AppState,
    (support::sql::TestSqlite, support::objects::TestObjects),
) {
    use buildlogs::api::{AppState, BacklogHistory, router};
    use buildlogs::jobs::cron::Scheduler;
    use buildlogs::jobs::sqlite::SqliteBroker;
    use buildlogs::jobs::{Broker, JobClient};
    use buildlogs::stores::sql_live::SqlLiveChunks;
    use buildlogs::stores::sql_metadata::SqlMetadata;
    use buildlogs::traces::service::TraceService;

    let db = support::sql::TestSqlite::new().await;
    let objects = support::objects::TestObjects::local();
    let broker: Arc<dyn Broker> = Arc::new(SqliteBroker::new(db.pool.clone()));
    let clock = Arc::new(SystemClock);
    let meta = Arc::new(SqlMetadata::sqlite(db.pool.clone()));
    let jobs = JobClient::new(broker.clone(), clock.clone());
    let traces = Arc::new(TraceService::new(
        TraceStores {
            meta: meta.clone(),
            live: Arc::new(SqlLiveChunks::sqlite(db.pool.clone())),
            objects: objects.config("").open().expect("object store").store,
            clock: clock.clone(),
        },
        jobs.clone(),
    ));
    let state = AppState {
        traces,
        admin_token: ADMIN.into(),
        read_token: None,
        jobs,
        meta,
        cron: Arc::new(Scheduler::new(broker, clock, Vec::new())),
        backlog: Arc::new(BacklogHistory::default()),
        shutdown: tokio_util::sync::CancellationToken::new(),
        patch_rate: Default::default(),
        streams: Default::default(),
        logpage: Default::default(),
    };
    (router(state.clone()), state, (db, objects))
}

/// Dropping the response (a client going away) drops the poll loop: nothing keeps the service.
/// On the embedded stack only: the loop is the same on every stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_stops_polling_and_lets_go_of_the_service() {
    let (app, traces, _keep) = own_stack().await;
    let new = traces.create_build().await.unwrap();
    let id = new.build.id;
    traces.append(id, &new.token, 0, b"hello").await.unwrap();

    let before = Arc::strong_count(&traces);
    let request = Request::get(format!("/api/v4/jobs/{id}/trace/stream"))
        .header("job-token", &new.token)
        .body(Body::empty())
        .unwrap();
    let mut events = Events::new(app.clone().oneshot(request).await.unwrap(), 0);
    assert_eq!(events.append().await, b"hello");
    assert!(
        Arc::strong_count(&traces) > before,
        "the open stream (and its build's poller) hold the service"
    );
    drop(events);
    // The poller task ends at its next await once the last stream left.
    wait_until("nothing polls after the client left", EVENT_TIMEOUT, || {
        Arc::strong_count(&traces) == before
    })
    .await;
}

/// The same over a real connection: when the client closes its socket, the server drops the
/// stream (hyper notices the closed connection) well before the 15 s keep-alive would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_its_connection_ends_the_stream_on_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (app, traces, _keep) = own_stack().await;
    let new = traces.create_build().await.unwrap();
    let id = new.build.id;
    traces.append(id, &new.token, 0, b"hello").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let before = Arc::strong_count(&traces);

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v4/jobs/{id}/trace/stream HTTP/1.1\r\nhost: test\r\njob-token: {}\r\n\r\n",
        new.token
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let hello = format!("data: {}", BASE64.encode(b"hello"));
    while !String::from_utf8_lossy(&seen).contains(&hello) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(EVENT_TIMEOUT, client.read(&mut buf))
            .await
            .expect("the first event in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    assert!(
        Arc::strong_count(&traces) > before,
        "the connection and its stream hold the service"
    );
    let closed_at = std::time::Instant::now();
    drop(client);
    // No signal crosses the socket: watch the count, for less than the keep-alive interval.
    while Arc::strong_count(&traces) > before {
        assert!(
            closed_at.elapsed() < Duration::from_secs(10),
            "the stream outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.abort();
}

/// `buildlogs web` on SIGTERM: axum's graceful shutdown waits for open responses, so a client
/// tailing a running job would keep the server up for as long as the job runs. With the
/// stream ended on the shutdown token, the server finishes at once and the client sees its
/// response end (the chunked body's last chunk), not an `end` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tailing_a_running_job_does_not_hold_up_graceful_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (app, state, _keep) = own_stack_with_state().await;
    let new = state.traces.create_build().await.unwrap();
    let id = new.build.id;
    state
        .traces
        .append(id, &new.token, 0, b"hello")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = state.shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v4/jobs/{id}/trace/stream HTTP/1.1\r\nhost: test\r\njob-token: {}\r\n\r\n",
        new.token
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let hello = format!("data: {}", BASE64.encode(b"hello"));
    while !String::from_utf8_lossy(&seen).contains(&hello) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(EVENT_TIMEOUT, client.read(&mut buf))
            .await
            .expect("the first event in time")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }

    state.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server finished its graceful shutdown with a client still tailing")
        .unwrap()
        .unwrap();
    // The client reads its response to the end, then the closed connection.
    loop {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the connection closes")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.ends_with("0\r\n\r\n"),
        "the body ended cleanly: {text:?}"
    );
    assert!(!text.contains("event: end"), "no `end`: the job still runs");
}
