//! One error shape for the whole API: a status, a JSON `{"message": …}` and the headers the
//! runner protocol needs (`Range`, `Job-Status`). Known cases map to 4xx; a read that needs the
//! object store while it is down (unreachable, or its circuit breaker open), or any request
//! that finds the live store (Redis) unreachable, is a 503 with `Retry-After`; anything else is a 500 whose cause chain is logged, never shown.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::traces::chunk_source::ChunkReadError;
use crate::traces::live::LiveStoreError;
use crate::traces::objects::is_not_found;
use crate::traces::service::TraceError;

/// `Retry-After` (seconds) of a 503 while the object store is down: an open breaker probes the
/// store every 5 s and closes at the first success, so a reader retrying after this long finds
/// it back soon after it is, without hammering a store that is still down.
pub const OBJECT_STORE_RETRY_AFTER_S: u64 = 10;

/// `Retry-After` (seconds) of a 503 while Redis does not answer: a restart from its AOF or a
/// failover takes a second or a few.
pub const LIVE_STORE_RETRY_AFTER_S: u64 = 2;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Protocol headers (`range`, `job-status`, …); a `Vec` keeps the error small.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl From<TraceError> for ApiError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Unauthorized => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            TraceError::NotRunning(status) => ApiError::new(StatusCode::FORBIDDEN, e.to_string())
                .header("job-status", status.to_string()),
            TraceError::TooLarge { .. } => ApiError::new(StatusCode::FORBIDDEN, e.to_string())
                .header("job-status", "failed".into()),
            TraceError::RangeMismatch { length } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string())
                    .header("range", format!("0-{length}"))
            }
            TraceError::Expired => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            TraceError::ObjectStoreDown => object_store_down(&e),
            TraceError::Objects(ref source)
            | TraceError::ChunkRead(ChunkReadError::Objects(ref source))
                if !is_not_found(source) =>
            {
                object_store_down(&e)
            }
            TraceError::Live(LiveStoreError::Redis(ref source))
            | TraceError::ChunkRead(ChunkReadError::Live(LiveStoreError::Redis(ref source)))
                if is_unreachable(source) =>
            {
                live_store_down(&e)
            }
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

/// 503: the bytes asked for are in the object store, which does not answer (or whose breaker
/// is open); they are not lost, so the reader is told when to come back.
fn object_store_down(e: &TraceError) -> ApiError {
    tracing::warn!(error = %e, "read refused: the object store is down");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the object store holding this log is unavailable; retry later",
    )
    .header("retry-after", OBJECT_STORE_RETRY_AFTER_S.to_string())
}

/// A Redis error that says the server was not reached (restarting, refusing, dropped the
/// connection, timed out), as opposed to a bad reply: the request may simply be repeated.
fn is_unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// 503: the live store (Redis) holding a running log's chunks does not answer — a restart or a
/// failover takes seconds, and the bytes are kept (AOF) — so the client is told to come back.
fn live_store_down(e: &TraceError) -> ApiError {
    tracing::warn!(error = %e, "request refused: the live chunk store is unreachable");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the live store holding this log is unavailable; retry later",
    )
    .header("retry-after", LIVE_STORE_RETRY_AFTER_S.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        let body = axum::Json(serde_json::json!({ "message": self.message }));
        (self.status, headers, body).into_response()
    }
}
