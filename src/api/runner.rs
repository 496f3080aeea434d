//! The runner's trace endpoint, GitLab's wire format (`shared/reference/gitlab-traces.md` §7):
//! `PATCH /api/v4/jobs/:id/trace` with `Content-Range: <start>-<end>` (only `start` counts: the
//! end is start + body length), the job token in `JOB-TOKEN` or `?token=`.
//! 202 + `Range: 0-<length>`, `Job-Status`, `X-GitLab-Trace-Update-Interval`; 416 + the current
//! `Range`; 400 without or with a malformed `Content-Range`; 403 for a bad token, a job that is
//! not running, or a log past the size limit.
//! `PUT /api/v4/jobs/:id`: the final state; 202 (with a backoff) while live chunks are flushed,
//! then 200; 400 for an unknown state or a malformed checksum.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use std::collections::HashMap;

use super::{ApiError, AppState};
use crate::traces::chunk::parse_runner_crc32;
use crate::traces::model::BuildStatus;
use crate::traces::service::{FinishOutcome, FinishRequest};

/// Seconds a runner waits between PATCHes (GitLab's default when nobody tails the log).
const UPDATE_INTERVAL_S: u32 = 60;

/// Seconds between PATCHes while someone tails the log (`GET …/trace/stream`), as GitLab's.
const WATCHED_UPDATE_INTERVAL_S: u32 = 3;

#[derive(Debug, Default, Deserialize)]
pub struct TokenParam {
    pub token: Option<String>,
}

/// The job token from `JOB-TOKEN` or the `token` parameter.
pub fn job_token(headers: &HeaderMap, query: &TokenParam) -> Option<String> {
    headers
        .get("job-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query.token.clone())
}

/// The start of `Content-Range: <start>-<end>`.
fn range_start(headers: &HeaderMap) -> Result<u64, ApiError> {
    let raw = headers
        .get("content-range")
        .ok_or_else(|| ApiError::bad_request("Missing header Content-Range"))?
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Range: not ASCII"))?;
    let start = raw.trim().split_once('-').map(|(s, _)| s).unwrap_or("");
    start.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "Content-Range: expected <start>-<end> in bytes, got {raw:?}"
        ))
    })
}

pub async fn append_trace(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TokenParam>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = job_token(&headers, &query)
        .ok_or(ApiError::new(StatusCode::FORBIDDEN, "missing job token"))?;
    let start = range_start(&headers)?;
    let done = state.traces.append(id, &token, start, &body).await?;
    Ok((
        StatusCode::ACCEPTED,
        [
            ("range", format!("0-{}", done.length)),
            ("job-status", done.status.to_string()),
            (
                "x-gitlab-trace-update-interval",
                if done.watched {
                    WATCHED_UPDATE_INTERVAL_S
                } else {
                    UPDATE_INTERVAL_S
                }
                .to_string(),
            ),
        ],
    )
        .into_response())
}

/// `PUT /api/v4/jobs/:id`, JSON or form: `token`, `state`, `failure_reason`, `exit_code`,
/// `output[checksum]` (`crc32:%08x`), `output[bytesize]`, legacy `checksum`.
pub async fn update_job(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let fields = put_fields(&headers, &body)?;
    let token = fields
        .get("token")
        .cloned()
        .or_else(|| job_token(&headers, &TokenParam::default()))
        .ok_or(ApiError::new(StatusCode::FORBIDDEN, "missing job token"))?;
    let request = finish_request(&fields)?;
    match state.traces.finish(id, &token, request).await? {
        FinishOutcome::Accepted { backoff_s } => Ok((
            StatusCode::ACCEPTED,
            [
                ("job-status", "running".to_owned()),
                ("x-gitlab-trace-update-interval", backoff_s.to_string()),
            ],
            "202",
        )
            .into_response()),
        FinishOutcome::Done { status } => {
            Ok((StatusCode::OK, [("job-status", status.to_string())], "200").into_response())
        }
    }
}

/// The PUT's fields, flattened to `name` / `output[name]`, from a JSON or form body.
fn put_fields(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !json {
        return serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::bad_request(format!("form body: {e}")));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("JSON body: {e}")))?;
    let mut out = HashMap::new();
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    if let Some(obj) = value.as_object() {
        for (k, v) in obj {
            if let (Some(inner), "output") = (v.as_object(), k.as_str()) {
                for (ik, iv) in inner {
                    if let Some(s) = scalar(iv) {
                        out.insert(format!("output[{ik}]"), s);
                    }
                }
            } else if let Some(s) = scalar(v) {
                out.insert(k.clone(), s);
            }
        }
    }
    Ok(out)
}

fn finish_request(fields: &HashMap<String, String>) -> Result<FinishRequest, ApiError> {
    let state = match fields.get("state").map(String::as_str) {
        None | Some("running") => BuildStatus::Running,
        Some("success") => BuildStatus::Success,
        Some("failed") => BuildStatus::Failed,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state: expected running, success or failed, got {other:?}"
            )));
        }
    };
    let checksum = match fields
        .get("output[checksum]")
        .or_else(|| fields.get("checksum"))
    {
        None => None,
        Some(raw) => Some(parse_runner_crc32(raw).ok_or_else(|| {
            ApiError::bad_request(format!(
                "output[checksum]: expected crc32:<8 hex digits>, got {raw:?}"
            ))
        })?),
    };
    let bytesize = match fields.get("output[bytesize]") {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "output[bytesize]: expected a byte count, got {raw:?}"
            ))
        })?),
    };
    let exit_code = match fields.get("exit_code") {
        None => None,
        Some(raw) => Some(raw.parse::<i32>().map_err(|_| {
            ApiError::bad_request(format!("exit_code: expected an integer, got {raw:?}"))
        })?),
    };
    Ok(FinishRequest {
        state,
        failure_reason: fields.get("failure_reason").cloned(),
        exit_code,
        checksum,
        bytesize,
    })
}
