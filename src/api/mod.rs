//! The HTTP API: GitLab's runner wire format (`runner`), job registration and reading
//! (`jobs`), one error shape (`error`). Handlers are thin: they parse the wire format and call
//! the [`TraceService`](crate::traces::service::TraceService).

mod error;
mod jobs;
mod runner;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};

use crate::traces::service::TraceService;

pub use error::ApiError;

/// A PATCH body may be this large: 4x the runner's own 1 MiB limit per PATCH.
pub const MAX_PATCH_BYTES: usize = 4 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub traces: Arc<TraceService>,
    /// `BUILDLOGS_ADMIN_TOKEN`: registers jobs and reads any of them.
    pub admin_token: Arc<str>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v4/jobs", post(jobs::create))
        .route("/api/v4/jobs/{id}", get(jobs::show).put(runner::update_job))
        .route(
            "/api/v4/jobs/{id}/trace",
            patch(runner::append_trace).get(jobs::trace),
        )
        .route("/api/v4/jobs/{id}/trace/stream", get(stream::trace_stream))
        .layer(DefaultBodyLimit::max(MAX_PATCH_BYTES))
        .with_state(state)
}
