//! Who may read a job's log page, and how a browser gets there without a secret in a URL.
//!
//! Duties:
//! 1. `POST /api/v4/jobs/:id/read_link` (admin or read-only token): a signed, expiring,
//!    read-only link for that one job, `<public url>/jobs/<id>#grant=<grant>`
//!    ([`read_link`]; `POST /api/v4/jobs` returns one too). The grant rides in the fragment,
//!    which browsers never send: it reaches no server, proxy or access log.
//! 2. `POST /jobs/:id/session` with `{"grant": …}` (from a read link) or `{"token": …}` (the
//!    sign-in form: read-only, admin, or this job's token): 204 and a session cookie scoped to
//!    the job's page (`Path=/jobs/<id>`, `HttpOnly`, `SameSite=Strict`, `Secure` behind https)
//!    holding a signed session grant, never the token, for at most 12 hours and never past the
//!    link's expiry. `DELETE` clears it.
//! 3. [`authorize_page`]: every page data endpoint accepts that cookie, an operator token
//!    (`Authorization: Bearer`) or the job's `JOB-TOKEN`; otherwise 401 `{"message": …}`.
//!
//! Guarantees: tokens are compared in constant time (`auth`, the job token's digest), grants
//! verified in constant time (`grant`); a refused request changes nothing and sets no cookie.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::grant::{GrantError, GrantKey, Purpose};
use crate::api::auth::{self, Access};
use crate::api::{ApiError, AppState};
use crate::traces::model::Build;
use crate::traces::service::TraceError;

/// A session lasts at most this long (seconds); a read link's session no longer than the link.
pub const SESSION_MAX_AGE_S: i64 = 12 * 3600;

/// The session cookie's name for job `id` (one per job: a reader may have several open).
pub fn cookie_name(id: i64) -> String {
    format!("buildlogs_job_{id}")
}

fn now_s(state: &AppState) -> i64 {
    state.jobs.clock().now_ms().div_euclid(1000)
}

fn key(state: &AppState) -> GrantKey {
    GrantKey::from_admin_token(&state.admin_token)
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

fn no_job(id: i64) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no job {id}"))
}

/// An operator's view of job `id`: the build, or 404.
async fn existing(state: &AppState, id: i64) -> Result<Build, ApiError> {
    state.traces.build(id).await?.ok_or_else(|| no_job(id))
}

/// The job token checked against job `id`: a wrong token or an unknown job is 401 (never 404:
/// that would tell which jobs exist).
async fn with_job_token(state: &AppState, id: i64, token: &str) -> Result<Build, ApiError> {
    match state.traces.authenticate(id, token).await {
        Ok(build) => Ok(build),
        Err(TraceError::Unauthorized) => Err(unauthorized(
            "wrong token for this job (a read-only, admin or this job's token)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v.trim())
        })
}

/// The build behind a page data request: its session cookie, an operator token or its job
/// token; otherwise 401. An unknown job is 404 for an operator token, 401 otherwise.
pub async fn authorize_page(
    state: &AppState,
    id: i64,
    headers: &HeaderMap,
) -> Result<Build, ApiError> {
    if auth::access(state, headers).reads_all() {
        return existing(state, id).await;
    }
    if let Some(token) = headers.get("job-token").and_then(|v| v.to_str().ok()) {
        return with_job_token(state, id, token).await;
    }
    let Some(value) = cookie(headers, &cookie_name(id)) else {
        return Err(unauthorized(
            "sign in to read this log: open a read link, or send a read-only, admin or job token",
        ));
    };
    match key(state).verify(Purpose::Session, value, id, now_s(state)) {
        Ok(_) => state
            .traces
            .build(id)
            .await?
            .ok_or_else(|| unauthorized("this session is for a job that does not exist")),
        Err(GrantError::Expired) => Err(unauthorized("the session expired: sign in again")),
        Err(e) => Err(unauthorized(format!(
            "the session cookie is not valid ({e})"
        ))),
    }
}

/// A read link for job `id`: its URL (the grant in the fragment) and expiry (unix seconds).
pub fn read_link(state: &AppState, id: i64) -> (String, i64) {
    let expires_at = now_s(state).saturating_add(state.logpage.read_link_ttl_s());
    let grant = key(state).sign(Purpose::Link, id, expires_at);
    (
        format!("{}#grant={grant}", state.logpage.web_url(id)),
        expires_at,
    )
}

/// Unix seconds as RFC 3339 in UTC.
fn rfc3339_s(at: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(at, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[utoipa::path(
    post,
    path = "/api/v4/jobs/{id}/read_link",
    tag = "jobs",
    params(("id" = i64, Path, description = "The job")),
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 201, description = "A signed, expiring, read-only link to the job's log page (the grant is in the fragment, which no server sees)", body = crate::api::openapi::ReadLink),
        (status = 401, description = "No or a wrong operator token", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "The metadata store does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn create_read_link(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !auth::access(&state, &headers).reads_all() {
        return Err(unauthorized(
            "an operator token is required (Authorization: Bearer <admin or read-only token>)",
        ));
    }
    existing(&state, id).await?;
    let (url, expires_at) = read_link(&state, id);
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "url": url, "expires_at": rfc3339_s(expires_at) })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRequest {
    grant: Option<String>,
    token: Option<String>,
}

#[utoipa::path(
    post,
    path = "/jobs/{id}/session",
    tag = "log page",
    params(("id" = i64, Path, description = "The job")),
    request_body(content = crate::api::openapi::SessionRequest, content_type = "application/json"),
    security(()),
    responses(
        (status = 204, description = "Signed in: a session cookie for this job's page",
            headers(("Set-Cookie" = String, description = "`buildlogs_job_<id>=…; Path=/jobs/<id>; HttpOnly; SameSite=Strict; Max-Age=…`"))),
        (status = 400, description = "Not JSON with exactly one of `grant` and `token`", body = crate::api::openapi::ErrorBody),
        (status = 401, description = "A bad or expired grant, or a wrong token", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "An unknown job (with an operator token)", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "A store does not answer", body = crate::api::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub async fn sign_in(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SessionRequest = serde_json::from_slice(&body).map_err(|_| {
        ApiError::bad_request(r#"body: expected JSON {"grant": "…"} or {"token": "…"}"#)
    })?;
    let now = now_s(&state);
    let session_ends = now.saturating_add(SESSION_MAX_AGE_S);
    let expires_at = match (request.grant, request.token) {
        (Some(grant), None) => match key(&state).verify(Purpose::Link, &grant, id, now) {
            Ok(link_ends) => link_ends.min(session_ends),
            Err(GrantError::Expired) => {
                return Err(unauthorized(
                    "grant: this read link has expired; ask for a new one",
                ));
            }
            Err(e) => {
                return Err(unauthorized(format!(
                    "grant: not a valid read link for job {id} ({e})"
                )));
            }
        },
        (None, Some(token)) => {
            match auth::access_of(&state, &token) {
                Access::Admin | Access::Read => {
                    existing(&state, id).await?;
                }
                Access::None => {
                    with_job_token(&state, id, &token).await?;
                }
            }
            session_ends
        }
        _ => {
            return Err(ApiError::bad_request(
                r#"body: expected exactly one of "grant" and "token""#,
            ));
        }
    };
    let value = key(&state).sign(Purpose::Session, id, expires_at);
    Ok(session_cookie(&state, id, &value, expires_at - now))
}

#[utoipa::path(
    delete,
    path = "/jobs/{id}/session",
    tag = "log page",
    params(("id" = i64, Path, description = "The job")),
    security(()),
    responses(
        (status = 204, description = "Signed out: the session cookie is cleared",
            headers(("Set-Cookie" = String, description = "`buildlogs_job_<id>=; …; Max-Age=0`"))),
    )
)]
pub async fn sign_out(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    session_cookie(&state, id, "", 0)
}

/// 204 setting the job's session cookie to `value` for `max_age` seconds (0: clears it).
fn session_cookie(state: &AppState, id: i64, value: &str, max_age: i64) -> Response {
    let secure = if state.logpage.https() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{}={value}; Path=/jobs/{id}; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        cookie_name(id),
        max_age.max(0)
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::cookie;
    use axum::http::HeaderMap;

    #[test]
    fn the_named_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append("cookie", "a=1; buildlogs_job_7=xyz".parse().unwrap());
        headers.append("cookie", "buildlogs_job_70=no".parse().unwrap());
        assert_eq!(cookie(&headers, "buildlogs_job_7"), Some("xyz"));
        assert_eq!(cookie(&headers, "buildlogs_job_70"), Some("no"));
        assert_eq!(cookie(&headers, "buildlogs_job_8"), None);
    }
}
