//! Job registration (standing in for the CI coordinator) and reading: `POST /api/v4/jobs`
//! (admin token), `GET /api/v4/jobs/:id` and `GET`/`HEAD /api/v4/jobs/:id/trace` (admin, read-only
//! or job token; streamed a chunk at a time; one HTTP `Range` honoured: `bytes=a-b`, `bytes=a-`,
//! `bytes=-n`, anything else answered with the whole log). The trace of a job whose archive
//! expired is 404 `{"message": "trace expired"}` (the job itself still reads, with
//! `trace.state` `expired`): an empty 200 would pass for a log that was empty.
//!
//! Times in the job JSON are RFC 3339 strings in UTC with milliseconds
//! (`2026-12-03T10:15:30.123Z`), as GitLab's job JSON has them; `null` when not (yet) set.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};

use super::auth::{self, Access};
use super::openapi::{CreatedJob, Job};
use super::runner::{TokenParam, job_token};
use super::{ApiError, AppState};
use crate::traces::model::Build;
use crate::traces::service::TraceError;

/// The build, if the caller holds the admin or read-only token (404 for an unknown job) or its
/// job token (`JOB-TOKEN` or `?token=`; 403 otherwise, unknown jobs included). The trace GET
/// and the trace stream both authorize with it.
pub(super) async fn authorize_read(
    state: &AppState,
    id: i64,
    headers: &HeaderMap,
    query: &TokenParam,
) -> Result<Build, ApiError> {
    if auth::access(state, headers).reads_all() {
        return state
            .traces
            .build(id)
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job {id}")));
    }
    let token = job_token(headers, query).ok_or(ApiError::from(TraceError::Unauthorized))?;
    Ok(state.traces.authenticate(id, &token).await?)
}

#[utoipa::path(
    post,
    path = "/api/v4/jobs",
    tag = "jobs",
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "A new running job and its token", body = CreatedJob),
        (status = 401, description = "No or a wrong admin token", body = super::openapi::ErrorBody),
        (status = 403, description = "The read-only token", body = super::openapi::ErrorBody),
        (status = 503, description = "The live store (Redis) does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    match auth::access(&state, &headers) {
        Access::Admin => {}
        Access::Read => return Err(auth::read_only("register jobs")),
        Access::None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "admin token required (Authorization: Bearer …)",
            ));
        }
    }
    let new = state.traces.create_build().await?;
    let id = new.build.id;
    let (read_link, _) = super::logpage::session::read_link(&state, id);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "id": id,
            "token": new.token,
            "web_url": state.logpage.web_url(id),
            "read_link": read_link,
        })),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/api/v4/jobs/{id}",
    tag = "jobs",
    params(("id" = i64, Path, description = "The job")),
    security(("admin_token" = []), ("read_token" = []), ("job_token" = []), ("job_token_query" = [])),
    responses(
        (status = 200, description = "The job and its log's state", body = Job),
        (status = 403, description = "No operator token and no or a wrong job token (unknown jobs too)", body = super::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token)", body = super::openapi::ErrorBody),
        (status = 503, description = "The live store (Redis) does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TokenParam>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let build = authorize_read(&state, id, &headers, &query).await?;
    Ok(Json(job_json(&state, &build).await?).into_response())
}

/// The job JSON of `build` (`GET /api/v4/jobs/:id`, and the log page's summary).
pub(super) async fn job_json(
    state: &AppState,
    build: &Build,
) -> Result<serde_json::Value, ApiError> {
    let id = build.id;
    let size = state.traces.length(id).await?;
    let (trace_state, artifact) = state.traces.trace_state(build).await?;
    let meta = state.traces.trace_metadata(id).await?.unwrap_or_default();
    let hex = |c: Option<u32>| c.map(crate::traces::chunk::format_crc32);
    Ok(serde_json::json!({
        "id": build.id,
        "web_url": state.logpage.web_url(id),
        "status": build.status,
        "failure_reason": build.failure_reason,
        "created_at": rfc3339(Some(build.created_at_ms)),
        "finished_at": rfc3339(build.finished_at_ms),
        "trace": {
            "size": size,
            "state": trace_state,
            "crc32": hex(artifact.as_ref().map(|a| a.crc32).or(meta.checksum)),
            "remote_checksum": hex(meta.remote_checksum),
            "checksum_valid": meta.checksum_valid,
            "archival_attempts": meta.archival_attempts,
            "archived_at": rfc3339(meta.archived_at_ms),
            // Bytes lost for good before the archive (a marker line holds their place).
            "partial": meta.partial(),
            "lost_bytes": meta.lost_bytes,
            "object_path": artifact.map(|a| a.object_path),
        },
    }))
}

/// A stored time (ms since the epoch) as RFC 3339 in UTC with milliseconds, as GitLab's job
/// JSON writes times; `None` (and a time chrono cannot represent) is `null`.
pub(super) fn rfc3339(ms: Option<i64>) -> Option<String> {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms?)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// What a `Range` header asks of a log `len` bytes long (RFC 9110 §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ranged {
    /// No range we serve: the whole log, 200. An unknown unit must be ignored (§14.2), and a
    /// multi-range or malformed one may be (we send no `multipart/byteranges`).
    Whole,
    /// One satisfiable range `[from, to)`: 206.
    Part(u64, u64),
    /// One well-formed range wholly past the end (or a zero-length suffix): 416.
    Unsatisfiable,
}

/// `bytes=a-b` | `bytes=a-` | `bytes=-n` (one range, unit case-insensitive) → [`Ranged`].
fn byte_range(raw: &str, len: u64) -> Ranged {
    let raw = raw.trim();
    let Some(spec) = raw
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec.trim())
    else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (from, to) = match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) => return Ranged::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len),
            None => return Ranged::Whole,
        },
        (a, "") => match num(a) {
            Some(a) => (a, len),
            None => return Ranged::Whole,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b => (a, b.saturating_add(1).min(len)),
            _ => return Ranged::Whole,
        },
    };
    if from < to {
        Ranged::Part(from, to)
    } else {
        Ranged::Unsatisfiable
    }
}

/// Headers of every answer of the log route: a log is untrusted text (a job prints what it
/// likes), so a browser must neither sniff it into HTML nor run anything it might hold.
pub(super) const LOG_SECURITY_HEADERS: [(header::HeaderName, &str); 2] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    ),
];

/// `GET` / `HEAD /api/v4/jobs/:id/trace`: the log streamed a chunk at a time from wherever it
/// is (see [`crate::traces::read`]); `HEAD` answers the same headers and reads no log byte.
/// The first frame is read before the headers go out, so a log whose bytes are unreachable is
/// an error status (503 while the object store is down), not an empty 200; an error after that
/// ends the body with an error (the client sees a truncated transfer, never short bytes).
#[utoipa::path(
    method(get, head),
    path = "/api/v4/jobs/{id}/trace",
    tag = "jobs",
    params(
        ("id" = i64, Path, description = "The job"),
        ("Range" = Option<String>, Header, description = "One `bytes=a-b`, `bytes=a-` or `bytes=-n` (GET only); any other value is ignored", example = "bytes=0-99"),
    ),
    security(("admin_token" = []), ("read_token" = []), ("job_token" = []), ("job_token_query" = [])),
    responses(
        (status = 200, description = "The whole log (HEAD: its headers only)", content_type = "text/plain", body = String,
            headers(("Content-Length" = u64), ("Accept-Ranges" = String, description = "`bytes`"))),
        (status = 206, description = "The range asked for", content_type = "text/plain", body = String,
            headers(("Content-Range" = String, description = "`bytes <first>-<last>/<length>`"))),
        (status = 403, description = "No operator token and no or a wrong job token (unknown jobs too)", body = super::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token), or `trace expired`", body = super::openapi::ErrorBody),
        (status = 416, description = "A range wholly past the end", body = super::openapi::ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */<length>`"))),
        (status = 503, description = "The bytes are in the object store (or Redis), which does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn trace(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TokenParam>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let mut response = match trace_response(&state, id, &query, &method, &headers).await {
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

async fn trace_response(
    state: &AppState,
    id: i64,
    query: &TokenParam,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(state, id, headers, query).await?;
    let read = state.traces.open_read(id).await?;
    let len = read.len();
    if len == 0 && state.traces.expired(id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "trace expired"));
    }
    // Range applies to GET only (RFC 9110 §14.2): a HEAD describes the whole log.
    let ranged = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(raw) if method == Method::GET => byte_range(raw, len),
        _ => Ranged::Whole,
    };
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::ACCEPT_RANGES, "bytes");
    let (from, to) = match ranged {
        Ranged::Whole => (0, len),
        Ranged::Part(from, to) => {
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {from}-{}/{len}", to - 1),
            );
            (from, to)
        }
        Ranged::Unsatisfiable => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the log is {len} bytes long"),
            )
            .header("content-range", format!("bytes */{len}")));
        }
    };
    response = response.header(header::CONTENT_LENGTH, to - from);
    let body = if method == Method::HEAD || from == to {
        Body::empty()
    } else {
        let mut frames = read.frames(from, to);
        let first = frames.next_frame().await?;
        let rest = frames.into_stream().inspect_err(move |e| {
            tracing::error!(build_id = id, error = %e, "trace read failed mid-body; the response is cut short");
        });
        Body::from_stream(futures::stream::iter(first.map(Ok)).chain(rest))
    };
    response
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{Ranged, byte_range, rfc3339};

    #[test]
    fn times_are_rfc_3339_in_utc_with_milliseconds() {
        assert_eq!(
            rfc3339(Some(1_764_756_930_123)).as_deref(),
            Some("2025-12-03T10:15:30.123Z")
        );
        assert_eq!(
            rfc3339(Some(0)).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(rfc3339(None), None);
        assert_eq!(rfc3339(Some(i64::MAX)), None);
    }

    #[test]
    fn one_byte_range_is_served_and_anything_else_is_the_whole_log() {
        use Ranged::*;
        assert_eq!(byte_range("bytes=0-9", 100), Part(0, 10));
        assert_eq!(byte_range("bytes=90-", 100), Part(90, 100));
        assert_eq!(byte_range("bytes=-5", 100), Part(95, 100));
        assert_eq!(byte_range("bytes=-500", 100), Part(0, 100));
        assert_eq!(byte_range("bytes=95-200", 100), Part(95, 100));
        assert_eq!(byte_range("Bytes = 1-1", 100), Part(1, 2));
        assert_eq!(byte_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(byte_range("bytes=-5", 0), Unsatisfiable);
        for ignored in [
            "items=0-1",
            "lines=1-2",
            "bytes=0-1,5-6",
            "bytes=200-300,400-",
            "bytes=9-0",
            "bytes=x-1",
            "bytes=+1-2",
            "bytes=-",
            "bytes=5",
            "bytes",
            "",
        ] {
            assert_eq!(byte_range(ignored, 100), Whole, "{ignored:?}");
        }
    }
}
