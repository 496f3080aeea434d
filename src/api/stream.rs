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
//! 3. Send every byte from there on, in order, at most [`EVENT_BYTES`] an event. A running
//!    job's new bytes come from its build's one poller ([`super::stream_hub`]), shared by all
//!    of its streams; a stream reads only its own catch-up (from its offset to where the
//!    poller was when it joined, or a gap it lagged into). Bytes are read wherever they are
//!    (live, flushed, archived), also when they move mid-stream.
//! 4. Once the job has finished and every byte of its final length was sent, send `end` and
//!    close. A client connecting after the end gets the rest, then `end`.
//! 5. Limits (per web process): at most `max_streams` open (over it: 503 with
//!    `Retry-After`); each ends after `max_lifetime` without `end`, and its client resumes
//!    with `Last-Event-ID`.
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
//! Guarantees: the stream is the response body, so it stops when the client goes away (the
//! body is dropped), and with it its subscription (the last one out stops the build's
//! poller). A store error ends the stream without `end` (and is logged); the client resumes
//! from its last `id`. So does shutdown ([`AppState::shutdown`] cancelled, on SIGTERM): every
//! open stream ends at once, without `end`, so a client tailing a running job cannot keep the
//! server's graceful shutdown (which waits for open responses) from finishing; an
//! `EventSource` reconnects with `Last-Event-ID` to another process and misses nothing.
//!
//! While a job runs its log is marked as tailed ([`TraceService::watch`]: at open, then by
//! the poller every 5 s): the runner's PATCHes then answer `X-GitLab-Trace-Update-Interval: 3`
//! instead of 60, so new output arrives within seconds.
//!
//! Cost per build (not per stream) and poll tick while nothing changes: 2 round trips (the
//! live length, then the build's status: [`TraceService::tail_position`]), plus the mark's one
//! write every 5 s; 4 on the tick that sees the job finished. New bytes add one
//! [`TraceService::read`] per piece (the artifact lookup, the live length, the chunk rows, the
//! chunk), however many streams receive it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::jobs::authorize_read;
use super::runner::TokenParam;
use super::stream_hub::{StreamSlot, Subscription, TailEvent};
use super::{ApiError, AppState};
use crate::traces::model::BuildStatus;
use crate::traces::service::{TraceError, TraceService};

use super::stream_hub::{EVENT_BYTES, WATCH_TTL};

/// What a client over the stream cap is told to wait, in seconds: streams end as jobs finish
/// or reach their lifetime, so places free up continually.
const FULL_RETRY_AFTER_S: u64 = 5;

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    pub(super) token: Option<String>,
    pub(super) offset: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v4/jobs/{id}/trace/stream",
    tag = "jobs",
    params(
        ("id" = i64, Path, description = "The job"),
        ("offset" = Option<u64>, Query, description = "Byte offset to start from (0)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this byte offset (wins over `offset`)"),
    ),
    security(("admin_token" = []), ("read_token" = []), ("job_token" = []), ("job_token_query" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `append` (base64 bytes, `id` = offset after them), then `end`", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed offset or Last-Event-ID", body = super::openapi::ErrorBody),
        (status = 403, description = "No operator token and no or a wrong job token (unknown jobs too)", body = super::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = super::openapi::ErrorBody),
        (status = 416, description = "An offset past the end of the log", body = super::openapi::ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */<length>`"))),
        (status = 503, description = "Too many open streams, or a store that does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
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
    tail_from(state, id, offset).await
}

/// The stream of job `id`'s log from byte `offset`, for a caller already authorized (here, or
/// by the log page's session: `GET /jobs/:id/stream`).
pub(super) async fn tail_from(state: AppState, id: i64, offset: u64) -> Result<Response, ApiError> {
    let slot = state.streams.open().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many open trace streams ({}); retry later",
                state.streams.limits().max_streams
            ),
        )
        .header("retry-after", FULL_RETRY_AFTER_S.to_string())
    })?;
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
    let feed = if status.is_finished() {
        // Nothing more will come: read the rest, then `end`; no poller needed.
        None
    } else {
        // From the runner's next PATCH on, it is told to come back in 3 s (the poller renews
        // the mark while the job runs).
        if let Err(e) = state.traces.watch(id, WATCH_TTL).await {
            tracing::warn!(build_id = id, error = %e, "trace stream: cannot mark the log as tailed");
        }
        Some(state.streams.subscribe(&state.traces, id, length))
    };
    let target = feed.as_ref().map_or(length, |f| f.known().max(length));
    let tail = Tail {
        traces: state.traces.clone(),
        build_id: id,
        sent: offset,
        target,
        end: status.is_finished().then_some((length, status)),
        done: false,
        feed,
        settles: 0,
        _slot: slot,
    };
    let lifetime = state.streams.limits().max_lifetime;
    let shutdown = state.shutdown.clone();
    let events = futures::stream::unfold(tail, |mut tail| async move {
        let event = tail.next_event().await?;
        Some((Ok::<_, Infallible>(event), tail))
    })
    // Shutdown or the stream's lifetime ends it between events or mid-wait (a read cut short
    // changes nothing); the client resumes from its last `id`.
    .take_until(async move {
        tokio::select! {
            () = shutdown.cancelled_owned() => {}
            () = tokio::time::sleep(lifetime) => {}
        }
    });
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
    /// Bytes below this exist and are read by this stream itself (its catch-up): the log's
    /// length when it opened, where the poller was when it subscribed, or a gap it lagged into.
    target: u64,
    /// The final length and status, once known: `end` goes out when every byte was sent.
    end: Option<(u64, BuildStatus)>,
    /// `end` was sent, or the stream failed.
    done: bool,
    /// The build's shared poller (none for a job already finished at open).
    feed: Option<Subscription>,
    /// Times this stream asked for the log's final state without a poller.
    settles: u32,
    /// The stream's place under the cap, given back when it is dropped.
    _slot: StreamSlot,
}

/// Looks at a finished log's final state a stream takes at most before it gives up on bytes
/// it cannot read (the client resumes): one, plus one after a read that found the bytes moved.
const MAX_SETTLES: u32 = 3;

impl Tail {
    /// The next event, waiting for one as long as the job runs; `None` closes the stream.
    async fn next_event(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            if self.sent < self.target {
                let window_end = (self.sent / EVENT_BYTES + 1) * EVENT_BYTES;
                let to = self.target.min(window_end);
                match self.traces.read(self.build_id, self.sent, to).await {
                    Ok(bytes) if !bytes.is_empty() => return Some(self.append(&bytes)),
                    // Nothing there (moved mid-read, or a length that was not final): the
                    // poller or the final check tells where the log ends.
                    Ok(_) => self.target = self.sent,
                    Err(e) => return self.fail(e),
                }
                continue;
            }
            if let Some((length, status)) = self.end
                && self.sent >= length
            {
                return Some(self.finish(status));
            }
            let Some(feed) = self.feed.as_mut() else {
                // Finished at open (or the poller went away): the log's final state decides.
                match self.settle().await {
                    Ok(Some((length, status))) => {
                        self.target = length;
                        self.end = Some((length, status));
                        continue;
                    }
                    Ok(None) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => return self.fail(e),
                }
            };
            match feed.events.recv().await {
                Ok(TailEvent::Append { from, bytes }) => {
                    let end = from + bytes.len() as u64;
                    if end <= self.sent {
                        continue;
                    }
                    if from > self.sent {
                        // A gap (joined late or lagged): read it, and these bytes, ourselves.
                        self.target = end;
                        continue;
                    }
                    let skip = (self.sent - from) as usize;
                    return Some(self.append(&bytes[skip..]));
                }
                Ok(TailEvent::End { length, status }) => {
                    self.target = self.target.max(length);
                    self.end = Some((length, status));
                }
                Ok(TailEvent::Failed) => {
                    self.done = true;
                    return None;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        build_id = self.build_id,
                        missed,
                        "trace stream lagged; reading the gap itself"
                    );
                    self.target = self.target.max(feed.known());
                }
                // The poller ended and this stream saw no `End` (it subscribed just after):
                // ask the log itself.
                Err(RecvError::Closed) => self.feed = None,
            }
        }
    }

    /// Without a poller: the log's final state, or `None` (the stream ends: a running job's
    /// client resumes and a new poller starts; a log whose bytes cannot be read after
    /// [`MAX_SETTLES`] looks ends too, without `end`).
    async fn settle(&mut self) -> Result<Option<(u64, BuildStatus)>, TraceError> {
        self.settles += 1;
        if self.settles > MAX_SETTLES {
            return Ok(None);
        }
        Ok(match self.traces.tail_position(self.build_id).await? {
            Some((status, length)) if status.is_finished() => Some((length, status)),
            _ => None,
        })
    }

    fn append(&mut self, bytes: &[u8]) -> Event {
        let take = bytes
            .len()
            .min(((self.sent / EVENT_BYTES + 1) * EVENT_BYTES - self.sent) as usize);
        self.sent += take as u64;
        Event::default()
            .event("append")
            .id(self.sent.to_string())
            .data(BASE64.encode(&bytes[..take]))
    }

    fn finish(&mut self, status: BuildStatus) -> Event {
        self.done = true;
        tracing::debug!(
            build_id = self.build_id,
            length = self.sent,
            %status,
            "trace stream ended"
        );
        let end = serde_json::json!({ "length": self.sent, "status": status });
        Event::default()
            .event("end")
            .id(self.sent.to_string())
            .data(end.to_string())
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
pub(super) fn start_offset(headers: &HeaderMap, query: &StreamQuery) -> Result<u64, ApiError> {
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
