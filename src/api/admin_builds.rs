//! The dashboard's builds list: `GET /admin/api/builds?state=…&before=<id>&limit=<n>` (admin or
//! read-only token, like every dashboard view), newest first, a page at a time by id.
//!
//! Each build comes with what an operator looks for before opening its log page (`web_url`,
//! `/jobs/<id>`): its status, times (RFC 3339, as in the job JSON), the log's size and state
//! (`live`, `flushing`, `archived`, `expired`), a checksum mismatch (`checksum_valid: false`)
//! and a partial log (`partial`, `lost_bytes`).
//!
//! Cost: one metadata query of at most `limit` rows (an index range scan, see
//! [`BuildStore::builds_page`](crate::traces::metadata::BuildStore::builds_page)), plus
//! one live-store length read per build not yet archived (archived ones carry their size).
//! `next_before` is the id to ask `before=` for the next page; `null` on the last page.

use axum::Json;
use axum::extract::{Query, State};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::failed;
use super::jobs::rfc3339;
use super::{ApiError, AppState};
use crate::traces::model::{BuildListFilter, BuildSummary, TraceState};

/// Builds listed when the page does not say.
const BUILDS_DEFAULT: u32 = 50;
/// Builds listed at most in one answer.
pub(super) const BUILDS_MAX: u32 = 200;
/// Live lengths read at once for one page (a Redis round trip each on the production stack).
const LENGTHS_AT_ONCE: usize = 16;

#[derive(Debug, Deserialize)]
pub(super) struct BuildsQuery {
    state: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// The query's values, each refusal naming its parameter.
fn parse(query: &BuildsQuery) -> Result<(BuildListFilter, i64, u32), ApiError> {
    let filter = match query.state.as_deref() {
        None | Some("") => BuildListFilter::All,
        Some(raw) => raw
            .parse()
            .map_err(|e: String| ApiError::bad_request(format!("state: {e}")))?,
    };
    let before = match query.before.as_deref() {
        None | Some("") => i64::MAX,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(id) if id >= 1 => id,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "before: expected a build id (a whole number of at least 1), got {raw:?}"
                )));
            }
        },
    };
    let limit = match query.limit.as_deref() {
        None | Some("") => BUILDS_DEFAULT,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if (1..=BUILDS_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: expected a whole number from 1 to {BUILDS_MAX}, got {raw:?}"
                )));
            }
        },
    };
    Ok((filter, before, limit))
}

fn build_json(b: &BuildSummary, size: Option<u64>) -> Value {
    json!({
        "id": b.id,
        "status": b.status,
        "failure_reason": b.failure_reason,
        "created_at": rfc3339(Some(b.created_at_ms)),
        "finished_at": rfc3339(b.finished_at_ms),
        "trace": {
            "size": size,
            "state": b.trace_state.as_str(),
            "checksum_valid": b.checksum_valid,
            "partial": b.lost_bytes > 0,
            "lost_bytes": b.lost_bytes,
        },
        "web_url": format!("/jobs/{}", b.id),
    })
}

#[utoipa::path(
    get,
    path = "/admin/api/builds",
    tag = "admin",
    params(
        ("state" = Option<String>, Query, description = "`running`, `finished`, `partial` (bytes lost before the archive), `mismatch` (checksum mismatch) or `all` (the default)"),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only builds with a lower id: the previous answer's `next_before`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Builds listed at most (50)"),
    ),
    security(("admin_token" = []), ("read_token" = [])),
    responses(
        (status = 200, description = "Builds, newest first", body = super::openapi::Builds),
        (status = 400, description = "A bad `state`, `before` or `limit` (the message names it)", body = super::openapi::ErrorBody),
        (status = 401, description = "No bearer token", body = super::openapi::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "A wrong token", body = super::openapi::ErrorBody),
        (status = 500, description = "The metadata store failed (details in the server log)", body = super::openapi::ErrorBody),
        (status = 503, description = "The live store (Redis) does not answer", body = super::openapi::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds"))),
    )
)]
pub(super) async fn builds(
    State(state): State<AppState>,
    Query(query): Query<BuildsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (filter, before, limit) = parse(&query)?;
    let page = state
        .meta
        .builds_page(filter, before, limit)
        .await
        .map_err(|e| failed("listing builds", e))?;
    // An archive knows its size; a log still live or flushing asks the live store; an
    // expired one has none left.
    let wanted: Vec<(i64, Option<u64>, TraceState)> = page
        .iter()
        .map(|b| (b.id, b.archived_size, b.trace_state))
        .collect();
    let traces = state.traces.clone();
    let sizes: Vec<Option<u64>> = futures::stream::iter(wanted)
        .map(|(id, archived_size, trace_state)| {
            let traces = traces.clone();
            async move {
                match (archived_size, trace_state) {
                    (Some(size), _) => Ok(Some(size)),
                    (None, TraceState::Expired) => Ok(None),
                    (None, _) => traces.length(id).await.map(Some),
                }
            }
        })
        .buffered(LENGTHS_AT_ONCE)
        .try_collect()
        .await?;
    let next_before = (page.len() == limit as usize)
        .then(|| page.last().map(|b| b.id))
        .flatten();
    let rows: Vec<Value> = page
        .iter()
        .zip(sizes)
        .map(|(b, size)| build_json(b, size))
        .collect();
    Ok(Json(json!({
        "now_ms": state.jobs.clock().now_ms(),
        "builds": rows,
        "next_before": next_before,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(
        state: Option<&str>,
        before: Option<&str>,
        limit: Option<&str>,
    ) -> Result<(BuildListFilter, i64, u32), String> {
        parse(&BuildsQuery {
            state: state.map(str::to_owned),
            before: before.map(str::to_owned),
            limit: limit.map(str::to_owned),
        })
        .map_err(|e| e.message)
    }

    #[test]
    fn the_query_defaults_to_all_builds_newest_first_fifty_at_a_time() {
        assert_eq!(
            parsed(None, None, None),
            Ok((BuildListFilter::All, i64::MAX, 50))
        );
        assert_eq!(
            parsed(Some("running"), Some("42"), Some("200")),
            Ok((BuildListFilter::Running, 42, 200))
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        for (query, field) in [
            (parsed(Some("done"), None, None), "state:"),
            (parsed(None, Some("0"), None), "before:"),
            (parsed(None, Some("x"), None), "before:"),
            (parsed(None, None, Some("0")), "limit:"),
            (parsed(None, None, Some("201")), "limit:"),
            (parsed(None, None, Some("-1")), "limit:"),
        ] {
            let message = query.unwrap_err();
            assert!(message.starts_with(field), "{message}");
        }
    }
}
