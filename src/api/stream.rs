//! `GET /api/v4/jobs/:id/trace/stream`: a job's log, tailed live as Server-Sent Events.
//!
//! Duties:
//! 1. Authorize as `GET /api/v4/jobs/:id/trace` does (the same function): the admin token
//!    (`Authorization: Bearer …`) or the job's token (`JOB-TOKEN` or `?token=`); otherwise 403
//!    (404 only for the admin asking for an unknown job).
//! 2. Start at a byte offset: `Last-Event-ID` (what an `EventSource` sends when it reconnects;
//!    it wins over the URL's `?offset=`, which a reconnect repeats), else `?offset=`, else 0.
//!    Not a byte count: 400 naming the field. Past the log's current end: 416 with
//!    `Content-Range: bytes */<length>`, like an unsatisfiable `Range` on the trace GET.
//! 3. Send every byte from there on, in order, at most [`EVENT_BYTES`] an event, polling the
//!    log every [`POLL_INTERVAL`]; the bytes are read wherever they are (live, flushed,
//!    archived), also when they move mid-stream.
//! 4. Once the job has finished and every byte of its final length was sent, send `end` and
//!    close. A client connecting after the end gets the rest, then `end`.
//!
//! Wire format (`text/event-stream`):
//! ```text
//! event: append
//! id: <byte offset after these bytes>
//! data: <the bytes, base64 (RFC 4648 standard alphabet, padded)>
//!
//! event: end
//! id: <final length>
//! data: {"length":<final length>,"status":"success"|"failed"|"canceled"}
//! ```
//! Logs are arbitrary bytes, so they travel base64-encoded (SSE data is UTF-8 text). An
//! `append` event's `id` is where to resume: reconnecting with it as `Last-Event-ID` (or
//! `?offset=`) gives exactly the bytes after it. A client closes on `end` (an `EventSource`
//! would otherwise reconnect, get `end` again and nothing else). Keep-alive comments every 15 s
//! hold idle connections open through proxies.
//!
//! Guarantees: no task is spawned; the poll loop is the response body's stream, so it stops
//! when the client goes away (the body is dropped). A store error ends the stream without
//! `end` (and is logged); the client resumes from its last `id`. So does shutdown
//! ([`AppState::shutdown`] cancelled, on SIGTERM): every open stream ends at once, without
//! `end`, so a client tailing a running job cannot keep the server's graceful shutdown (which
//! waits for open responses) from finishing; an `EventSource` reconnects with `Last-Event-ID`
//! to another process and misses nothing.
//!
//! While a stream waits on a running job it keeps the log marked as tailed
//! ([`TraceService::watch`], renewed every 5 s): the runner's PATCHes then answer
//! `X-GitLab-Trace-Update-Interval: 3` instead of 60, so new output arrives within seconds.
//!
//! Cost per poll tick while nothing changes: 2 round trips (the live length, then the build's
//! status: [`TraceService::tail_position`]), plus the mark's one write every 5 s; 4 on the
//! tick that sees the job finished. New bytes
//! add one [`TraceService::read`] per event (the artifact lookup, the live length, the chunk
//! rows, the chunk).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use serde::Deserialize;

use super::jobs::authorize_read;
use super::runner::TokenParam;
use super::{ApiError, AppState};
use crate::traces::service::{TraceError, TraceService};

/// How often an idle stream asks for new bytes. Runners PATCH every few seconds at best (3 s
/// while a log is tailed), so half a second adds little delay, for 2 round trips a tick.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long a stream's "someone tails this log" mark lasts; the stream renews it at half.
pub const WATCH_TTL: Duration = Duration::from_secs(10);

/// Bytes of log an event carries at most (about 87 KiB of base64), so a big backlog arrives
/// as many events a client can handle one by one. It divides the 128 KiB chunk size, and an
/// event never crosses a multiple of it, so each event's read touches a single chunk.
pub const EVENT_BYTES: u64 = 64 * 1024;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    token: Option<String>,
    offset: Option<String>,
}

pub async fn trace_stream(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = TokenParam {
        token: query.token.clone(),
    };
    authorize_read(&state, id, &headers, &token).await?;
    let offset = start_offset(&headers, &query)?;
    let (status, length) = state
        .traces
        .tail_position(id)
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job {id}")))?;
    // As the trace GET: an expired archive is gone, not an empty log.
    if status.is_finished() && length == 0 && state.traces.expired(id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "trace expired"));
    }
    if offset > length {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("offset {offset} is past the end of the log ({length} bytes)"),
        )
        .header("content-range", format!("bytes */{length}")));
    }
    tracing::debug!(build_id = id, offset, length, "trace stream opened");
    let mut tail = Tail {
        traces: state.traces.clone(),
        build_id: id,
        sent: offset,
        known: length,
        done: false,
        renew_watch_at: None,
    };
    if !status.is_finished() {
        // From the runner's next PATCH on, it is told to come back in 3 s.
        tail.keep_watching().await;
    }
    let events = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next_event().await?;
        Some((Ok::<_, Infallible>(event), tail))
    })
    // Shutdown ends the stream between events or mid-wait (a read cut short changes nothing).
    .take_until(state.shutdown.clone().cancelled_owned());
    Ok((
        // nginx would otherwise buffer the stream.
        [("x-accel-buffering", "no")],
        Sse::new(events).keep_alive(KeepAlive::default()),
    )
        .into_response())
}

/// Where one stream is.
struct Tail {
    traces: Arc<TraceService>,
    build_id: i64,
    /// Bytes sent (the `id` of the last event).
    sent: u64,
    /// The log's length as last seen: bytes below it are read without asking again.
    known: u64,
    /// `end` was sent, or the stream failed.
    done: bool,
    /// When to renew the mark that tells the runner someone tails the log (`None`: now).
    renew_watch_at: Option<tokio::time::Instant>,
}

impl Tail {
    /// The next event, waiting for one as long as the job runs; `None` closes the stream.
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            if self.sent < self.known {
                let window_end = (self.sent / EVENT_BYTES + 1) * EVENT_BYTES;
                let to = self.known.min(window_end);
                match self.traces.read(self.build_id, self.sent, to).await {
                    Ok(bytes) if !bytes.is_empty() => {
                        self.sent += bytes.len() as u64;
                        return Some(
                            Event::default()
                                .event("append")
                                .id(self.sent.to_string())
                                .data(BASE64.encode(&bytes)),
                        );
                    }
                    // Moved while being read (an archive deleting the live copy): look again.
                    Ok(_) => self.known = self.sent,
                    Err(e) => return self.fail(e),
                }
            } else {
                match self.traces.tail_position(self.build_id).await {
                    Ok(Some((_, length))) if length > self.sent => {
                        self.known = length;
                        continue;
                    }
                    Ok(Some((status, _))) if status.is_finished() => {
                        self.done = true;
                        tracing::debug!(
                            build_id = self.build_id,
                            length = self.sent,
                            %status,
                            "trace stream ended"
                        );
                        let end = serde_json::json!({ "length": self.sent, "status": status });
                        return Some(
                            Event::default()
                                .event("end")
                                .id(self.sent.to_string())
                                .data(end.to_string()),
                        );
                    }
                    // Running, nothing new: make sure the runner PATCHes often.
                    Ok(Some(_)) => self.keep_watching().await,
                    Ok(None) => {
                        tracing::warn!(build_id = self.build_id, "trace stream: the job is gone");
                        self.done = true;
                        return None;
                    }
                    Err(e) => return self.fail(e),
                }
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Marks the log as tailed for [`WATCH_TTL`], renewed at half of it: while the mark is on,
    /// a PATCH answers `X-GitLab-Trace-Update-Interval: 3` instead of 60. A failure only
    /// costs that (the runner keeps its usual pace), so it is logged, not fatal.
    async fn keep_watching(&mut self) {
        let now = tokio::time::Instant::now();
        if self.renew_watch_at.is_some_and(|at| now < at) {
            return;
        }
        match self.traces.watch(self.build_id, WATCH_TTL).await {
            Ok(()) => self.renew_watch_at = Some(now + WATCH_TTL / 2),
            Err(e) => {
                tracing::warn!(build_id = self.build_id, error = %e, "trace stream: cannot mark the log as tailed")
            }
        }
    }

    fn fail(&mut self, e: TraceError) -> Option<Event> {
        tracing::error!(
            build_id = self.build_id,
            sent = self.sent,
            error = %e,
            "trace stream failed; closing it"
        );
        self.done = true;
        None
    }
}

/// The start offset: `Last-Event-ID`, else `?offset=`, else 0 (an empty value counts as none:
/// an `EventSource` whose last `id` was empty sends none).
fn start_offset(headers: &HeaderMap, query: &StreamQuery) -> Result<u64, ApiError> {
    if let Some(raw) = headers.get("last-event-id") {
        let bad = || {
            ApiError::bad_request(format!(
                "Last-Event-ID: expected a byte offset, got {raw:?}"
            ))
        };
        let text = raw.to_str().map_err(|_| bad())?.trim();
        if !text.is_empty() {
            return text.parse().map_err(|_| bad());
        }
    }
    match query.offset.as_deref() {
        None => Ok(0),
        Some(raw) => raw.trim().parse().map_err(|_| {
            ApiError::bad_request(format!("offset: expected a byte offset, got {raw:?}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::{StreamQuery, start_offset};
    use axum::http::HeaderMap;

    fn offset(last_event_id: Option<&str>, query: Option<&str>) -> Result<u64, String> {
        let mut headers = HeaderMap::new();
        if let Some(v) = last_event_id {
            headers.insert("last-event-id", v.parse().unwrap());
        }
        let query = StreamQuery {
            token: None,
            offset: query.map(str::to_owned),
        };
        start_offset(&headers, &query).map_err(|e| e.message)
    }

    #[test]
    fn the_start_offset_prefers_last_event_id_and_names_a_bad_value() {
        assert_eq!(offset(None, None), Ok(0));
        assert_eq!(offset(None, Some("42")), Ok(42));
        assert_eq!(offset(Some("7"), Some("42")), Ok(7));
        assert_eq!(offset(Some(""), Some("42")), Ok(42));
        assert!(
            offset(Some("-1"), None)
                .unwrap_err()
                .starts_with("Last-Event-ID:")
        );
        assert!(
            offset(Some("x"), Some("1"))
                .unwrap_err()
                .starts_with("Last-Event-ID:")
        );
        assert!(
            offset(None, Some("1e3"))
                .unwrap_err()
                .starts_with("offset:")
        );
        assert!(offset(None, Some("")).unwrap_err().starts_with("offset:"));
    }
}
