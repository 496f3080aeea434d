//! The dashboard's list of jobs waiting to run again: `GET /admin/api/retries?limit=<n>` (admin
//! or read-only token), every queue's scheduled jobs merged, next to run first, each with the
//! error of its last failed run. An operator sees why archives are piling up (the store's
//! error) and when they will be tried next, before any of them reaches the dead set.
//!
//! Cost: one [`Broker::scheduled_list`](crate::jobs::Broker::scheduled_list) of at most
//! `limit` jobs per queue (a range read of the queue's schedule, whatever its length).

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::failed;
use super::{ApiError, AppState};
use crate::jobs::ScheduledJob;

/// Jobs listed when the page does not say.
const RETRIES_DEFAULT: usize = 50;
/// Jobs listed at most in one answer.
const RETRIES_MAX: usize = 200;

#[derive(Debug, Deserialize)]
pub(super) struct RetriesQuery {
    limit: Option<String>,
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None | Some("") => Ok(RETRIES_DEFAULT),
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=RETRIES_MAX).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit: expected a whole number from 1 to {RETRIES_MAX}, got {raw:?}"
            ))),
        },
    }
}

fn job_json(queue: &str, job: &ScheduledJob) -> Value {
    json!({
        "queue": queue,
        "id": job.envelope.id,
        "attempts": job.envelope.attempt,
        "max_attempts": job.envelope.max_attempts,
        "run_at_ms": job.run_at_ms,
        "last_error": job.last_error,
        "payload": job.envelope.payload,
    })
}

#[utoipa::path(
    get,
    path = "/admin/api/retries",
    tag = "admin",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Jobs listed at most (50)"),
    ),
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "Jobs waiting for their time (retries, snoozes, jobs for later), next to run first", body = super::openapi::RetryList),
        (status = 400, description = "A limit that is not 1 to 200", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn retries(
    State(state): State<AppState>,
    Query(query): Query<RetriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let broker = state.jobs.broker();
    let queues = broker
        .queues()
        .await
        .map_err(|e| failed("reading the job queue", e))?;
    let mut waiting: Vec<(String, ScheduledJob)> = Vec::new();
    for queue in queues {
        let jobs = broker
            .scheduled_list(&queue, limit)
            .await
            .map_err(|e| failed("listing scheduled jobs", e))?;
        waiting.extend(jobs.into_iter().map(|job| (queue.clone(), job)));
    }
    waiting.sort_by(|(qa, a), (qb, b)| {
        (a.run_at_ms, qa, &a.envelope.id).cmp(&(b.run_at_ms, qb, &b.envelope.id))
    });
    waiting.truncate(limit);
    let jobs: Vec<Value> = waiting.iter().map(|(q, job)| job_json(q, job)).collect();
    Ok(Json(json!({
        "now_ms": state.jobs.clock().now_ms(),
        "jobs": jobs,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_defaults_to_fifty_and_refuses_what_is_out_of_range() {
        assert_eq!(parse_limit(None).ok(), Some(50));
        assert_eq!(parse_limit(Some("200")).ok(), Some(200));
        for bad in ["0", "201", "-1", "x"] {
            let message = parse_limit(Some(bad)).unwrap_err().message;
            assert!(message.starts_with("limit:"), "{message}");
        }
    }
}
