//! One error shape for the whole API: a status, a JSON `{"message": …}` and the headers the
//! runner protocol needs (`Range`, `Job-Status`). Known cases map to 4xx; anything else is a 500
//! whose cause chain is logged, never shown.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::traces::service::TraceError;

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
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
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
