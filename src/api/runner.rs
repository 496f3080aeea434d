//! The runner's trace endpoint, GitLab's wire format (`shared/reference/gitlab-traces.md` §7):
//! `PATCH /api/v4/jobs/:id/trace` with `Content-Range: <start>-<end>` (only `start` counts: the
//! end is start + body length), the job token in `JOB-TOKEN` or `?token=`.
//! 202 + `Range: 0-<length>`, `Job-Status`, `X-GitLab-Trace-Update-Interval`; 416 + the current
//! `Range`; 400 without or with a malformed `Content-Range`; 403 for a bad token, a job that is
//! not running, or a log past the size limit; 429 + `Retry-After` past the job's PATCH rate
//! ([`super::rate_limit`]). The token, the job's state and the rate are checked before the body
//! is read.
//! `PUT /api/v4/jobs/:id`: the final state; 202 (with a backoff) while live chunks are flushed,
//! then 200; 400 for an unknown state, a malformed checksum or an unknown `failure_reason`.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use std::collections::HashMap;

use super::openapi::{FinishJob, FinishJobForm};
use super::{ApiError, AppState, MAX_PATCH_BYTES};
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

#[utoipa::path(
    patch,
    path = "/api/v4/jobs/{id}/trace",
    tag = "runner",
    params(
        ("id" = i64, Path, description = "The job"),
        ("Content-Range" = String, Header, description = "`<start>-<end>`: where the body goes; only `start` counts (it must be the log's length)", example = "0-5"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The log bytes (any bytes), at most 4 MiB"),
    security(("job_token" = []), ("job_token_query" = [])),
    responses(
        (status = 202, description = "Appended", headers(
            ("Range" = String, description = "`0-<length>`: the log's length now"),
            ("Job-Status" = String, description = "The job's status"),
            ("X-GitLab-Trace-Update-Interval" = u32, description = "Seconds until the next PATCH: 60, or 3 while someone tails the log"),
        )),
        (status = 400, description = "No or a malformed Content-Range; a body cut short", body = super::openapi::ErrorBody),
        (status = 403, description = "No or a wrong job token, an unknown job, a job not running, or a log past the size limit", body = super::openapi::ErrorBody,
            headers(("Job-Status" = String, description = "The job's status, when it is not running"))),
        (status = 408, description = "The body stopped arriving", body = super::openapi::ErrorBody),
        (status = 413, description = "A body over 4 MiB", body = super::openapi::ErrorBody),
        (status = 416, description = "`start` is not the log's length: nothing written; resend from `Range`'s end", body = super::openapi::ErrorBody,
            headers(("Range" = String, description = "`0-<length>`"))),
        (status = 429, description = "Past the job's PATCH rate", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
        (status = 503, description = "The live store (Redis) does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn append_trace(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<TokenParam>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let token = job_token(&headers, &query)
        .ok_or(ApiError::new(StatusCode::FORBIDDEN, "missing job token"))?;
    let start = range_start(&headers)?;
    // Everything that can refuse the PATCH is decided before its body is read: a wrong token,
    // a finished job or a runaway client costs no upload.
    state.traces.authenticate_running(id, &token).await?;
    if let Err(retry_after) = state.patch_rate.check(id, Instant::now()) {
        metrics::counter!("buildlogs_trace_patches_limited_total").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many PATCHes for job {id}; retry in {retry_after} s"),
        )
        .header("retry-after", retry_after.to_string()));
    }
    let body = read_body(&headers, body).await?;
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

/// A PATCH's body, at most [`MAX_PATCH_BYTES`]: 413 past it (told by `Content-Length` before
/// any byte is read), 408 when the client stops sending it (the server's body timeout), 400
/// for a body cut short.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a PATCH body may be {MAX_PATCH_BYTES} bytes at most"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PATCH_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_PATCH_BYTES)
        .await
        .map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                if err.is::<tower_http::timeout::TimeoutError>() {
                    return ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body stopped arriving",
                    );
                }
                source = err.source();
            }
            ApiError::bad_request(format!("request body: {e}"))
        })
}

/// `PUT /api/v4/jobs/:id`, JSON or form: `token`, `state`, `failure_reason`, `exit_code`,
/// `output[checksum]` (`crc32:%08x`), `output[bytesize]`, legacy `checksum`.
#[utoipa::path(
    put,
    path = "/api/v4/jobs/{id}",
    tag = "runner",
    params(("id" = i64, Path, description = "The job")),
    request_body(content(
        (FinishJob = "application/json"),
        (FinishJobForm = "application/x-www-form-urlencoded"),
    ), description = "The final state; the token in the body or `JOB-TOKEN`"),
    security(("job_token" = []), ()),
    responses(
        (status = 200, description = "State committed (or `running`: the keep-alive)", content_type = "text/plain", body = String,
            headers(("Job-Status" = String, description = "The job's status"))),
        (status = 202, description = "Live chunks are being flushed: PUT again after the backoff", content_type = "text/plain", body = String,
            headers(
                ("Job-Status" = String, description = "`running`"),
                ("X-GitLab-Trace-Update-Interval" = u64, description = "Seconds to wait before the next PUT"),
            )),
        (status = 400, description = "A body that does not parse, an unknown state, a malformed checksum or byte size, a non-integer exit code, an unknown failure_reason; nothing recorded", body = super::openapi::ErrorBody),
        (status = 403, description = "No or a wrong job token, or an unknown job", body = super::openapi::ErrorBody),
        (status = 503, description = "The live store (Redis) does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
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
        Some(raw) => Some(
            raw.parse::<u64>()
                .ok()
                .filter(|&n| n <= MAX_BYTESIZE)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "output[bytesize]: expected a byte count from 0 to {MAX_BYTESIZE}, got {raw:?}"
                    ))
                })?,
        ),
    };
    let exit_code = match fields.get("exit_code") {
        None => None,
        Some(raw) => Some(raw.parse::<i32>().map_err(|_| {
            ApiError::bad_request(format!("exit_code: expected an integer, got {raw:?}"))
        })?),
    };
    let failure_reason = match fields.get("failure_reason") {
        None => None,
        Some(raw) => Some(failure_reason(raw)?),
    };
    Ok(FinishRequest {
        state,
        failure_reason,
        exit_code,
        checksum,
        bytesize,
    })
}

/// The largest `output[bytesize]` taken: the databases store it as a signed 64-bit integer.
/// Checked here, before anything is recorded: past it, the PUT used to close the log and then
/// fail to store its pending state (a 500 that had changed something).
const MAX_BYTESIZE: u64 = i64::MAX as u64;

/// The longest `failure_reason` taken (the longest known one is 47 bytes): a bound on what an
/// error message echoes back, checked before the list.
const MAX_FAILURE_REASON_BYTES: usize = 64;

/// The `failure_reason` values GitLab records: its `CommitStatus` enum (`failure_reasons` in
/// `app/models/concerns/enums/ci/commit_status.rb`, with the EE additions), plus
/// `image_pull_failure`, which newer runners send. A runner sends only reasons its coordinator
/// advertises; anything else is a client bug, refused before anything is recorded.
const FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "failed_outdated_deployment_job",
    "protected_environment_failure",
    "insufficient_bridge_permissions",
    "downstream_bridge_project_not_found",
    "invalid_bridge_trigger",
    "bridge_pipeline_is_child_pipeline",
    "downstream_pipeline_creation_failed",
    "secrets_provider_not_found",
    "reached_max_descendant_pipelines_depth",
    "ip_restriction_failure",
    "reached_max_pipeline_hierarchy_size",
    "reached_downstream_pipeline_trigger_rate_limit",
    "image_pull_failure",
];

/// A known `failure_reason`, or a 400 naming the field.
fn failure_reason(raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_FAILURE_REASON_BYTES {
        return Err(ApiError::bad_request(format!(
            "failure_reason: longer than {MAX_FAILURE_REASON_BYTES} bytes"
        )));
    }
    if FAILURE_REASONS.contains(&raw) {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "failure_reason: unknown value {raw:?} (expected one of GitLab's, e.g. script_failure, runner_system_failure, job_execution_timeout, unknown_failure)"
        )))
    }
}
