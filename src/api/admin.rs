//! The operator dashboard (shared/DESIGN.md §8): what `buildlogs status`, `dead`, `limits`,
//! `cron` and `recover` show, in a browser, refreshed every 2 s, limits editable, dead jobs
//! re-run or discarded, and a backlog chart.
//!
//! `GET /admin` serves a static page (`admin.html`, `admin.js`, `admin.css`: plain HTML and
//! JS, no build step, nothing from another origin) that reads and changes everything through
//! these JSON endpoints:
//!
//! | method and path                                  | what                                        |
//! |--------------------------------------------------|---------------------------------------------|
//! | `GET /admin/api/queues`                          | every queue's [`QueueStats`]                |
//! | `GET /admin/api/builds?state=&before=&limit=`    | builds, newest first ([`super::admin_builds`]) |
//! | `GET /admin/api/retries?limit=N`                 | jobs waiting to run again, next first, last error ([`super::admin_retries`]) |
//! | `GET /admin/api/queues/{queue}/dead?limit=N`     | its dead jobs, newest first (N ≤ 1000)      |
//! | `POST /admin/api/queues/{queue}/dead/{id}/retry` | a dead job back to ready, fresh attempts    |
//! | `DELETE /admin/api/queues/{queue}/dead/{id}`     | a dead job deleted                          |
//! | `PUT /admin/api/queues/{queue}/limit`            | `{"limit": N}`, or `"none"` / `null`        |
//! | `GET /admin/api/cron`                            | schedules: last fired, next tick            |
//! | `GET /admin/api/breaker`                         | the object store breaker: open, since, why  |
//! | `GET /admin/api/recovery`                        | stale-trace recovery: cursor, last step, stale builds, schedule |
//! | `POST /admin/api/recovery/run`                   | a recovery run enqueued now (admin only)    |
//! | `GET /admin/api/expiry`                          | whether archives expire (the newest archive's `expire_at`) |
//! | `GET /admin/api/backlog`                         | the chart's samples ([`super::backlog`])    |
//!
//! Authorization: every `/admin/api/` call needs `Authorization: Bearer <BUILDLOGS_ADMIN_TOKEN>`:
//! 401 without it, 403 with a wrong one. The read-only token (`BUILDLOGS_READ_TOKEN`) opens the
//! views (`GET`) and gets 403 for every change (any other method). The page itself (and its
//! script and style) loads without the token: it holds no data. It asks for the token, keeps
//! it in the tab's `sessionStorage` and sends it in that header on each call. A browser cannot
//! add a header to a navigation, the token must never travel in a URL (server logs, history, `Referer`), and a
//! cookie would need a login endpoint and CSRF defences; a token only ever sent as a header by
//! the page's own script gives another site's page nothing to ride on.
//!
//! Guarantees: a bad input (a limit that is not a whole number of at least 1 or "none", a bad
//! `limit` parameter) is a 400 naming the field and changes nothing; an unknown queue is a
//! 404; API answers are `Cache-Control: no-store`; the page is served with a content security
//! policy that allows only its own script, style and API (no inline script: dead jobs' errors
//! and payloads are shown as text, and could not run as script anyway).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Access};
use super::openapi::{
    Backlog, Breaker, Cron, DeadDone, DeadList, Expiry, LimitSet, Queues, Recovery, RecoveryRun,
    SetLimit,
};
use super::page_asset::page_asset;
use super::{ApiError, AppState};
use crate::jobs::Job;
use crate::jobs::broker::{EnqueueOutcome, QueueStats};
use crate::status;
use crate::traces::jobs::RecoverStaleTraces;

const PAGE: &str = include_str!("admin.html");
const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// Only the page's own script, style and API; no framing (the page changes limits).
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Dead jobs listed when the page does not say: a screenful.
const DEAD_LIST_DEFAULT: usize = 50;
/// Dead jobs listed at most in one answer (the dead set holds up to 10,000).
const DEAD_LIST_MAX: usize = 1_000;

/// The dashboard's routes, `/admin/api/` behind the admin token (views also behind the
/// read-only one).
pub fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        .route("/admin/api/queues", get(queues))
        .route("/admin/api/builds", get(super::admin_builds::builds))
        .route("/admin/api/retries", get(super::admin_retries::retries))
        .route("/admin/api/queues/{queue}/dead", get(dead_list))
        .route("/admin/api/queues/{queue}/dead/{id}", delete(dead_discard))
        .route(
            "/admin/api/queues/{queue}/dead/{id}/retry",
            post(dead_retry),
        )
        .route("/admin/api/queues/{queue}/limit", put(set_limit))
        .route("/admin/api/cron", get(cron))
        .route("/admin/api/breaker", get(breaker))
        .route("/admin/api/recovery", get(recovery))
        .route("/admin/api/recovery/run", post(recovery_run))
        .route("/admin/api/expiry", get(expiry))
        .route("/admin/api/backlog", get(backlog))
        .route_layer(middleware::from_fn_with_state(state, require_token));
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .route("/admin/admin.js", get(script))
        .route("/admin/admin.css", get(style))
        .merge(api)
}

/// 401 without the admin token, 403 with a wrong one; the read-only token passes for views
/// only (`GET`, `HEAD`: every change is another method); answers are never cached.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let view = matches!(*request.method(), Method::GET | Method::HEAD);
    let access = auth::access(&state, request.headers());
    let mut response = if access == Access::Admin || (access == Access::Read && view) {
        next.run(request).await
    } else if access == Access::Read {
        auth::read_only("change anything (re-run or discard dead jobs, set limits, run recovery)")
            .into_response()
    } else if auth::bearer(request.headers()).is_none() {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin token required (Authorization: Bearer …)",
        )
        .header("www-authenticate", "Bearer".into())
        .into_response()
    } else {
        ApiError::new(StatusCode::FORBIDDEN, "wrong admin token").into_response()
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A store that failed: logged with its cause, answered without it.
pub(super) fn failed(what: &'static str, error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "dashboard: {what} failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{what} failed (details in the server log)"),
    )
}

fn now_ms(state: &AppState) -> i64 {
    state.jobs.clock().now_ms()
}

/// 404 unless the broker knows `queue` (it had a job or a limit once), so a typo neither
/// reads as an empty queue nor creates one.
async fn known_queue(state: &AppState, queue: &str) -> Result<(), ApiError> {
    let queues = state
        .jobs
        .broker()
        .queues()
        .await
        .map_err(|e| failed("reading the job queue", e))?;
    if queues.iter().any(|q| q == queue) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no queue {queue:?}"),
        ))
    }
}

fn queue_json(s: &QueueStats) -> Value {
    json!({
        "queue": s.queue,
        "ready": s.ready,
        "scheduled": s.scheduled,
        "running": s.running,
        "limit": s.limit,
        "latency_ms": s.latency_ms,
        "dead": s.dead,
        "processed": s.processed,
        "failed": s.failed,
    })
}

#[utoipa::path(
    get,
    path = "/admin/api/queues",
    tag = "admin",
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "Every queue's counts", body = Queues),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn queues(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = now_ms(&state);
    let stats = status::queues(state.jobs.broker().as_ref(), now)
        .await
        .map_err(|e| failed("reading the job queue", e))?;
    let rows: Vec<Value> = stats.iter().map(queue_json).collect();
    Ok(Json(json!({ "now_ms": now, "queues": rows })))
}

#[derive(Debug, Deserialize)]
pub(super) struct DeadQuery {
    limit: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/api/queues/{queue}/dead",
    tag = "admin",
    params(("queue" = String, Path, description = "A queue name"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Jobs listed at most (50)"),
    ),
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "Its dead jobs, newest first", body = DeadList),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
        (status = 400, description = "A limit that is not 1 to 1000", body = super::openapi::ErrorBody),
        (status = 404, description = "An unknown queue", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn dead_list(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    Query(query): Query<DeadQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.limit.as_deref() {
        None => DEAD_LIST_DEFAULT,
        Some(raw) => match raw.trim().parse::<usize>() {
            Ok(n) if (1..=DEAD_LIST_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: expected a whole number from 1 to {DEAD_LIST_MAX}, got {raw:?}"
                )));
            }
        },
    };
    known_queue(&state, &queue).await?;
    let dead = state
        .jobs
        .broker()
        .dead_list(&queue, limit)
        .await
        .map_err(|e| failed("reading the dead set", e))?;
    let jobs: Vec<Value> = dead
        .iter()
        .map(|d| {
            json!({
                "id": d.envelope.id,
                "attempts": d.envelope.attempt,
                "max_attempts": d.envelope.max_attempts,
                "enqueued_at_ms": d.envelope.enqueued_at_ms,
                "died_at_ms": d.died_at_ms,
                "error": d.error,
                "payload": d.envelope.payload,
            })
        })
        .collect();
    Ok(Json(json!({ "queue": queue, "jobs": jobs })))
}

fn no_dead_job(queue: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no dead job {id:?} in queue {queue:?}"),
    )
}

#[utoipa::path(
    post,
    path = "/admin/api/queues/{queue}/dead/{id}/retry",
    tag = "admin",
    params(("queue" = String, Path, description = "A queue name"), ("id" = String, Path, description = "The dead job")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Queued again with fresh attempts", body = DeadDone),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such dead job in the queue", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn dead_retry(
    State(state): State<AppState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let now = now_ms(&state);
    let retried = state
        .jobs
        .broker()
        .dead_retry(&queue, &id, now)
        .await
        .map_err(|e| failed("re-running a dead job", e))?;
    if !retried {
        return Err(no_dead_job(&queue, &id));
    }
    tracing::info!(queue, id, "dashboard: dead job queued again");
    Ok(Json(json!({ "queue": queue, "id": id, "retried": true })))
}

#[utoipa::path(
    delete,
    path = "/admin/api/queues/{queue}/dead/{id}",
    tag = "admin",
    params(("queue" = String, Path, description = "A queue name"), ("id" = String, Path, description = "The dead job")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Deleted", body = DeadDone),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such dead job in the queue", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn dead_discard(
    State(state): State<AppState>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let discarded = state
        .jobs
        .broker()
        .dead_discard(&queue, &id)
        .await
        .map_err(|e| failed("discarding a dead job", e))?;
    if !discarded {
        return Err(no_dead_job(&queue, &id));
    }
    tracing::info!(queue, id, "dashboard: dead job discarded");
    Ok(Json(json!({ "queue": queue, "id": id, "discarded": true })))
}

/// The limit in `{"limit": N | "none" | null}`: `None` removes it. Every refusal names the
/// field.
fn parse_limit(body: &[u8]) -> Result<Option<u32>, ApiError> {
    let bad = |got: &str| {
        let mut got = got.to_owned();
        if got.len() > 100 {
            let mut end = 100;
            while !got.is_char_boundary(end) {
                end -= 1;
            }
            got.truncate(end);
            got.push('…');
        }
        ApiError::bad_request(format!(
            "limit: expected {{\"limit\": <a whole number of at least 1>}} or \
             {{\"limit\": \"none\"}} (or null) to remove it; got {got}"
        ))
    };
    let body: Value =
        serde_json::from_slice(body).map_err(|e| bad(&format!("a body that is not JSON: {e}")))?;
    let Some(limit) = body.get("limit") else {
        return Err(bad(&format!("no \"limit\" in {body}")));
    };
    match limit {
        Value::Null => Ok(None),
        Value::String(s) if s == "none" => Ok(None),
        Value::Number(n) => match n.as_u64().map(u32::try_from) {
            Some(Ok(n)) if n >= 1 => Ok(Some(n)),
            _ => Err(bad(&n.to_string())),
        },
        other => Err(bad(&other.to_string())),
    }
}

#[utoipa::path(
    put,
    path = "/admin/api/queues/{queue}/limit",
    tag = "admin",
    params(("queue" = String, Path, description = "A queue name"),),
    request_body = SetLimit,
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The limit now set", body = LimitSet),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
        (status = 400, description = "A body that is not `{\"limit\": N | \"none\" | null}` with N ≥ 1; nothing changed", body = super::openapi::ErrorBody),
        (status = 404, description = "An unknown queue", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn set_limit(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let limit = parse_limit(&body)?;
    known_queue(&state, &queue).await?;
    state
        .jobs
        .broker()
        .set_limit(&queue, limit)
        .await
        .map_err(|e| failed("setting a limit", e))?;
    tracing::info!(queue, ?limit, "dashboard: queue limit set");
    Ok(Json(json!({ "queue": queue, "limit": limit })))
}

#[utoipa::path(
    get,
    path = "/admin/api/cron",
    tag = "admin",
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "Cron schedules", body = Cron),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn cron(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let schedules: Vec<Value> = state
        .cron
        .status()
        .await
        .map_err(|e| failed("reading the cron schedules", e))?
        .into_iter()
        .map(|s| {
            json!({
                "name": s.name,
                "expression": s.expression,
                "queue": s.queue,
                "last_fired_ms": s.last_fired_ms,
                "next_tick_ms": s.next_tick_ms,
            })
        })
        .collect();
    Ok(Json(
        json!({ "now_ms": now_ms(&state), "schedules": schedules }),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/api/breaker",
    tag = "admin",
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "The object store's circuit breaker", body = Breaker),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn breaker(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let view = status::breaker(state.meta.as_ref())
        .await
        .map_err(|e| failed("reading the breaker", e))?;
    Ok(Json(json!({
        "now_ms": now_ms(&state),
        "name": view.name,
        "open": view.open,
        "since_ms": view.since_ms,
        "reason": view.reason,
        "history": view.history.iter().map(|c| json!({
            "open": c.open,
            "at_ms": c.at_ms,
            "reason": c.reason,
            "lasted_ms": c.lasted_ms,
        })).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(
    get,
    path = "/admin/api/recovery",
    tag = "admin",
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "The stale-trace recovery cursor", body = Recovery),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn recovery(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = now_ms(&state);
    let view = status::recovery(state.meta.as_ref(), state.meta.as_ref(), now)
        .await
        .map_err(|e| failed("reading stale-trace recovery", e))?;
    let schedule = state
        .cron
        .status()
        .await
        .map_err(|e| failed("reading the cron schedules", e))?
        .into_iter()
        .find(|s| s.queue == RecoverStaleTraces::NAME)
        .map(|s| json!({ "last_fired_ms": s.last_fired_ms, "next_tick_ms": s.next_tick_ms }));
    Ok(Json(json!({
        "now_ms": now,
        "cursor_name": view.cursor_name,
        "cursor": view.cursor,
        "last_step_ms": view.last_step_ms,
        "stale": view.stale,
        "stale_more": view.stale_more,
        "stale_after_ms": view.stale_after_ms,
        "schedule": schedule,
    })))
}

#[utoipa::path(
    post,
    path = "/admin/api/recovery/run",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A recovery run queued now, or one already queued or running", body = RecoveryRun),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token, or the read-only one", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn recovery_run(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // The cron job itself, so one run at a time still holds (its dedup key).
    let outcome = state
        .jobs
        .enqueue(&RecoverStaleTraces {})
        .await
        .map_err(|e| failed("enqueueing a recovery run", e))?;
    let queued = outcome == EnqueueOutcome::Enqueued;
    tracing::info!(queued, "dashboard: recovery run asked for");
    Ok(Json(json!({
        "queued": queued,
        "message": if queued {
            "a recovery run is queued: a worker starts it shortly"
        } else {
            "a recovery run is already queued or running"
        },
    })))
}

#[utoipa::path(
    get,
    path = "/admin/api/expiry",
    tag = "admin",
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "Whether archived logs expire", body = Expiry),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token", body = super::openapi::ErrorBody),
        (status = 500, description = "The metadata store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn expiry(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    // The workers stamp each archive with its expiry (or none, with
    // BUILDLOGS_TRACE_EXPIRE_DAYS unset); the web role has no such setting, so the newest
    // archive is what says whether expiry is on now, whatever process wrote it.
    let newest = state
        .meta
        .newest_trace_artifact()
        .await
        .map_err(|e| failed("reading the newest archive", e))?;
    Ok(Json(json!({
        "now_ms": now_ms(&state),
        "archived": newest.is_some(),
        "on": newest.as_ref().map(|a| a.expire_at_ms.is_some()),
        "keep_ms": newest.as_ref().and_then(|a| a.expire_at_ms.map(|at| at - a.created_at_ms)),
        "newest_archived_at_ms": newest.as_ref().map(|a| a.created_at_ms),
        "newest_expires_at_ms": newest.and_then(|a| a.expire_at_ms),
    })))
}

#[utoipa::path(
    get,
    path = "/admin/api/backlog",
    tag = "admin",
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "The backlog chart's samples", body = Backlog),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token (or, for a change, the read-only one)", body = super::openapi::ErrorBody),
        (status = 500, description = "The job system's store failed (details in the server log)", body = super::openapi::ErrorBody),
    )
)]
pub(super) async fn backlog(State(state): State<AppState>) -> Json<Value> {
    let history = &state.backlog;
    Json(json!({
        "now_ms": now_ms(&state),
        "interval_ms": history.interval().as_millis() as u64,
        "capacity": history.capacity(),
        "samples": history.samples(),
    }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    page_asset(content_type, PAGE_POLICY, body)
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::parse_limit;

    fn limit(body: &str) -> Result<Option<u32>, String> {
        parse_limit(body.as_bytes()).map_err(|e| e.message)
    }

    #[test]
    fn a_limit_is_a_whole_number_of_at_least_one_or_none() {
        assert_eq!(limit(r#"{"limit": 3}"#), Ok(Some(3)));
        assert_eq!(limit(r#"{"limit": 4294967295}"#), Ok(Some(u32::MAX)));
        assert_eq!(limit(r#"{"limit": "none"}"#), Ok(None));
        assert_eq!(limit(r#"{"limit": null}"#), Ok(None));
        for bad in [
            r#"{"limit": 0}"#,
            r#"{"limit": -1}"#,
            r#"{"limit": 2.5}"#,
            r#"{"limit": 4294967296}"#,
            r#"{"limit": "3"}"#,
            r#"{"limit": "None"}"#,
            r#"{"limit": [1]}"#,
            r#"{"max": 3}"#,
            "[]",
            "",
            "limit=3",
        ] {
            let message = limit(bad).unwrap_err();
            assert!(message.starts_with("limit:"), "{bad}: {message}");
        }
    }

    #[test]
    fn a_long_bad_value_is_cut_in_the_message() {
        let body = format!(r#"{{"limit": "{}"}}"#, "é".repeat(500));
        let message = limit(&body).unwrap_err();
        assert!(message.len() < 400, "{}", message.len());
        assert!(message.ends_with('…'));
    }
}
