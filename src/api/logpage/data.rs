//! What the log page's script reads (all `GET`, all authorized by [`authorize_page`]: the
//! page's session cookie, an operator token or the job's token; otherwise 401):
//!
//! - `/jobs/:id/summary`: the job JSON, lines and bytes so far, sections, timestamps;
//! - `/jobs/:id/lines?from=&count=` or `?tail=`: a page of lines (1-based, at most
//!   [`MAX_LINES`]), each the raw line as lossy UTF-8 (escapes and `\r` kept, `\n` removed);
//! - `/jobs/:id/search?q=&from=&limit=`: matching line numbers over the whole log;
//! - `/jobs/:id/stream?offset=`: the trace stream (`/api/v4/jobs/:id/trace/stream`'s events);
//! - `/jobs/:id/raw[?download=1]`: the whole log as text, streamed.
//!
//! Handlers parse and check the query (400 naming the parameter) and call
//! [`LogView`](crate::traces::log_view::LogView); a job whose archive expired is 404
//! `trace expired`, as on the trace GET.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::session::authorize_page;
use crate::api::jobs::{LOG_SECURITY_HEADERS, job_json, rfc3339};
use crate::api::stream::{StreamQuery, start_offset, tail_from};
use crate::api::{ApiError, AppState};
use crate::traces::log_view::Window;
use crate::traces::model::Build;

/// Lines a page holds at most, and by default.
pub const MAX_LINES: u64 = 2000;
pub const DEFAULT_LINES: u64 = 500;
/// Search: matches returned at most, and by default; the query's length bounds (characters).
pub const MAX_MATCHES: u64 = 10_000;
pub const DEFAULT_MATCHES: u64 = 1000;
pub const MAX_QUERY_CHARS: usize = 200;

/// The query string's parameters (400 when it does not parse).
fn params(raw: Option<String>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("query: not a query string ({e})")))
}

fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Parameter `name` as a whole number in `min..=max`, or `default` when absent.
fn number(
    params: &[(String, String)],
    name: &str,
    default: Option<u64>,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let Some(raw) = param(params, name) else {
        return Ok(default);
    };
    match raw.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad_request(format!(
            "{name}: expected a whole number from {min} to {max}, got {raw:?}"
        ))),
    }
}

/// 404 `trace expired` for a finished job whose log is empty because its archive was deleted.
async fn not_expired(state: &AppState, build: &Build, len: u64) -> Result<(), ApiError> {
    if len == 0 && build.status.is_finished() && state.traces.expired(build.id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "trace expired"));
    }
    Ok(())
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/summary",
    tag = "log page",
    params(("id" = i64, Path, description = "The job")),
    security(("page_session" = []), ("admin_token" = []), ("read_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "The job, its log's lines and bytes so far, its sections and whether it has runner timestamps", body = crate::api::openapi::LogSummary),
        (status = 401, description = "No session cookie, operator token or job token (or a wrong one)", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A store holding the log does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn summary(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let build = authorize_page(&state, id, &headers).await?;
    let finished = build.status.is_finished();
    let summary = state
        .logpage
        .view
        .summary(&state.traces, id, finished)
        .await?;
    not_expired(&state, &build, summary.bytes).await?;
    let job = job_json(&state, &build).await?;
    let started_at = summary
        .first_timestamp
        .clone()
        .or_else(|| rfc3339(Some(build.created_at_ms)));
    Ok(no_store(
        Json(json!({
            "job": job,
            "lines": summary.lines,
            "bytes": summary.bytes,
            "sections": summary.sections,
            "timestamps": summary.first_timestamp.is_some(),
            "started_at": started_at,
        }))
        .into_response(),
    ))
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/lines",
    tag = "log page",
    params(
        ("id" = i64, Path, description = "The job"),
        ("from" = Option<u64>, Query, description = "First line (1-based); not with `tail`"),
        ("count" = Option<u64>, Query, description = "Lines, 1 to 2000 (500)"),
        ("tail" = Option<u64>, Query, description = "The last n lines, 1 to 2000; not with `from` or `count`"),
    ),
    security(("page_session" = []), ("admin_token" = []), ("read_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "A page of lines", body = crate::api::openapi::LinesPage),
        (status = 400, description = "A bad parameter (the message names it)", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No session cookie, operator token or job token (or a wrong one)", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A store holding the log does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn lines(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let build = authorize_page(&state, id, &headers).await?;
    let params = params(raw)?;
    let tail = number(&params, "tail", None, 1, MAX_LINES)?;
    let window = match tail {
        Some(count) => {
            for other in ["from", "count"] {
                if param(&params, other).is_some() {
                    return Err(ApiError::bad_request(format!(
                        "{other}: not with tail (tail=<n> is the last n lines)"
                    )));
                }
            }
            Window::Tail { count }
        }
        None => Window::From {
            from: number(&params, "from", Some(1), 1, u64::MAX)?.unwrap_or(1),
            count: number(&params, "count", Some(DEFAULT_LINES), 1, MAX_LINES)?
                .unwrap_or(DEFAULT_LINES),
        },
    };
    let finished = build.status.is_finished();
    let page = state
        .logpage
        .view
        .lines(&state.traces, id, finished, window)
        .await?;
    not_expired(&state, &build, page.total_bytes).await?;
    Ok(no_store(
        Json(json!({
            "first": page.first,
            "lines": page.lines,
            "total_lines": page.total_lines,
            "total_bytes": page.total_bytes,
            "end_offset": page.end_offset,
            "last_complete": page.last_complete,
            "cut": page.cut.iter().map(|(line, bytes)| json!({"line": line, "bytes": bytes})).collect::<Vec<_>>(),
            "final": finished,
        }))
        .into_response(),
    ))
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/search",
    tag = "log page",
    params(
        ("id" = i64, Path, description = "The job"),
        ("q" = String, Query, description = "Text to find, 1 to 200 characters, case-insensitive, in each line's visible text"),
        ("from" = Option<u64>, Query, description = "Matches from this line on (1)"),
        ("limit" = Option<u64>, Query, description = "Matches returned at most, 1 to 10000 (1000)"),
    ),
    security(("page_session" = []), ("admin_token" = []), ("read_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "Matching lines", body = crate::api::openapi::SearchResult),
        (status = 400, description = "A bad parameter (the message names it)", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No session cookie, operator token or job token (or a wrong one)", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A store holding the log does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn search(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let build = authorize_page(&state, id, &headers).await?;
    let params = params(raw)?;
    let q = param(&params, "q").unwrap_or("");
    let chars = q.chars().count();
    if chars == 0 || chars > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(format!(
            "q: expected 1 to {MAX_QUERY_CHARS} characters, got {chars}"
        )));
    }
    let from = number(&params, "from", Some(1), 1, u64::MAX)?.unwrap_or(1);
    let limit =
        number(&params, "limit", Some(DEFAULT_MATCHES), 1, MAX_MATCHES)?.unwrap_or(DEFAULT_MATCHES);
    let found = state
        .logpage
        .view
        .search(&state.traces, id, q, from, limit as usize)
        .await?;
    if found.total == 0 {
        let len = state.traces.length(id).await?;
        not_expired(&state, &build, len).await?;
    }
    Ok(no_store(
        Json(json!({
            "total": found.total,
            "matches": found.matches,
            "truncated": found.truncated,
        }))
        .into_response(),
    ))
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/stream",
    tag = "log page",
    params(
        ("id" = i64, Path, description = "The job"),
        ("offset" = Option<u64>, Query, description = "Byte offset to start from (0)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this byte offset (wins over `offset`)"),
    ),
    security(("page_session" = []), ("admin_token" = []), ("read_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "Server-Sent Events, as `GET /api/v4/jobs/{id}/trace/stream`", content_type = "text/event-stream", body = String),
        (status = 400, description = "A malformed offset or Last-Event-ID", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No session cookie, operator token or job token (or a wrong one)", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = crate::api::openapi::ErrorBody),
        (status = 416, description = "An offset past the end of the log", body = crate::api::openapi::ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */<length>`"))),
        (status = 503, description = "Too many open streams, or a store that does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_page(&state, id, &headers).await?;
    let params = params(raw)?;
    let query = StreamQuery {
        token: None,
        offset: param(&params, "offset").map(str::to_owned),
    };
    let offset = start_offset(&headers, &query)?;
    tail_from(state, id, offset).await
}

#[utoipa::path(
    get,
    path = "/jobs/{id}/raw",
    tag = "log page",
    params(
        ("id" = i64, Path, description = "The job"),
        ("download" = Option<String>, Query, description = "`1`: as an attachment named `job-<id>.log`"),
    ),
    security(("page_session" = []), ("admin_token" = []), ("read_token" = []), ("job_token" = [])),
    responses(
        (status = 200, description = "The whole log, streamed", content_type = "text/plain", body = String,
            headers(("Content-Disposition" = String, description = "`inline`, or `attachment; filename=\"job-<id>.log\"`"))),
        (status = 400, description = "A bad `download`", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "No session cookie, operator token or job token (or a wrong one)", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A store holding the log does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn raw(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut response = match raw_response(&state, id, raw, &headers).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    for (name, value) in LOG_SECURITY_HEADERS {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn raw_response(
    state: &AppState,
    id: i64,
    raw: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let build = authorize_page(state, id, headers).await?;
    let params = params(raw)?;
    let disposition = match param(&params, "download") {
        None | Some("0") | Some("false") => "inline".to_owned(),
        Some("1") | Some("true") => format!("attachment; filename=\"job-{id}.log\""),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "download: expected 1 or 0, got {other:?}"
            )));
        }
    };
    let read = state.traces.open_read(id).await?;
    let len = read.len();
    not_expired(state, &build, len).await?;
    let mut frames = read.frames(0, len);
    // The first frame before the headers: a log whose bytes are unreachable is an error status.
    let first = frames.next_frame().await?;
    let rest = frames.into_stream().inspect_err(move |e| {
        tracing::error!(build_id = id, error = %e, "raw log read failed mid-body; the response is cut short");
    });
    let body = Body::from_stream(futures::stream::iter(first.map(Ok)).chain(rest));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
