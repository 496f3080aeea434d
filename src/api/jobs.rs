//! Job registration (standing in for the CI coordinator) and reading: `POST /api/v4/jobs`
//! (admin token), `GET /api/v4/jobs/:id` and `GET /api/v4/jobs/:id/trace` (admin, read-only or
//! job token; HTTP `Range` honoured: `bytes=a-b`, `bytes=a-`, `bytes=-n`). The trace of a job whose
//! archive expired is 404 `{"message": "trace expired"}` (the job itself still reads, with
//! `trace.state` `expired`): an empty 200 would pass for a log that was empty.
//!
//! Times in the job JSON are RFC 3339 strings in UTC with milliseconds
//! (`2026-12-03T10:15:30.123Z`), as GitLab's job JSON has them; `null` when not (yet) set.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{self, Access};
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
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": new.build.id, "token": new.token })),
    )
        .into_response())
}

pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TokenParam>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let build = authorize_read(&state, id, &headers, &query).await?;
    let size = state.traces.length(id).await?;
    let (trace_state, artifact) = state.traces.trace_state(&build).await?;
    let meta = state.traces.trace_metadata(id).await?.unwrap_or_default();
    let hex = |c: Option<u32>| c.map(crate::traces::chunk::format_crc32);
    Ok(Json(serde_json::json!({
        "id": build.id,
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
    .into_response())
}

/// A stored time (ms since the epoch) as RFC 3339 in UTC with milliseconds, as GitLab's job
/// JSON writes times; `None` (and a time chrono cannot represent) is `null`.
fn rfc3339(ms: Option<i64>) -> Option<String> {
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms?)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// `bytes=a-b` | `bytes=a-` | `bytes=-n` → `[from, to)` within `len`; `None`: unsatisfiable.
fn byte_range(raw: &str, len: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let bad = || ApiError::bad_request(format!("Range: expected bytes=<from>-<to>, got {raw:?}"));
    let spec = raw.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            (len.saturating_sub(n), len)
        }
        (a, "") => (a.parse().map_err(|_| bad())?, len),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            if b < a {
                return Err(bad());
            }
            (a, b.saturating_add(1).min(len))
        }
    };
    Ok((range.0 < range.1).then_some(range))
}

pub async fn trace(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TokenParam>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&state, id, &headers, &query).await?;
    let len = state.traces.length(id).await?;
    if len == 0 && state.traces.expired(id).await? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "trace expired"));
    }
    let plain = [(header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned())];
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        let body = state.traces.read(id, 0, len).await?;
        return Ok((StatusCode::OK, plain, body).into_response());
    };
    match byte_range(raw, len)? {
        None => Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!("the log is {len} bytes long"),
        )
        .header("content-range", format!("bytes */{len}"))),
        Some((from, to)) => {
            let body = state.traces.read(id, from, to).await?;
            let content_range = format!("bytes {from}-{}/{len}", to - 1);
            Ok((
                StatusCode::PARTIAL_CONTENT,
                plain,
                [(header::CONTENT_RANGE, content_range)],
                body,
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{byte_range, rfc3339};

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
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(byte_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(byte_range("bytes=90-", 100).unwrap(), Some((90, 100)));
        assert_eq!(byte_range("bytes=-5", 100).unwrap(), Some((95, 100)));
        assert_eq!(byte_range("bytes=95-200", 100).unwrap(), Some((95, 100)));
        assert_eq!(byte_range("bytes=100-", 100).unwrap(), None);
        assert!(byte_range("bytes=9-0", 100).is_err());
        assert!(byte_range("items=0-1", 100).is_err());
    }
}
