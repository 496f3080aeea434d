//! The HTTP API: GitLab's runner wire format (`runner`, rate limited per job by
//! `rate_limit`), job registration and reading (`jobs`), live tailing (`stream`, one poller per
//! build in `stream_hub`), the OpenAPI document of all of it (`openapi`), the operator dashboard (`admin`, with its backlog chart's samples in
//! `backlog`), the log page for readers in a browser (`logpage`: read links, sessions, the log
//! by lines, search), one error shape (`error`), operator tokens (`auth`), and the HTTP server with its timeouts and connection
//! cap (`server`), the pages' static files (`page_asset`). Handlers are thin: they parse the wire
//! format and call the [`TraceService`](crate::traces::service::TraceService), or, for the
//! dashboard, the broker and the metadata store.

mod admin;
mod admin_builds;
mod admin_retries;
mod auth;
pub mod backlog;
mod error;
mod jobs;
pub mod logpage;
pub mod openapi;
mod page_asset;
pub mod rate_limit;
mod runner;
pub mod server;
mod stream;
pub mod stream_hub;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post};
use tokio_util::sync::CancellationToken;

use crate::jobs::JobClient;
use crate::jobs::cron::Scheduler;
use crate::traces::metadata::MetadataStore;
use crate::traces::service::TraceService;

pub use backlog::BacklogHistory;
pub use error::ApiError;
pub use logpage::LogPage;
pub use rate_limit::{PatchRate, PatchRateLimit};
pub use stream_hub::{StreamHub, StreamLimits};

/// A PATCH body may be this large: 4x the runner's own 1 MiB limit per PATCH.
pub const MAX_PATCH_BYTES: usize = 4 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub traces: Arc<TraceService>,
    /// `BUILDLOGS_ADMIN_TOKEN`: registers jobs, reads any of them, opens the dashboard.
    pub admin_token: Arc<str>,
    /// `BUILDLOGS_READ_TOKEN`: reads any job, its log and stream, and the dashboard's views;
    /// changes nothing. `None`: no such token.
    pub read_token: Option<Arc<str>>,
    /// The job queue and its clock: the dashboard's queues, dead jobs and limits.
    pub jobs: JobClient,
    /// The dashboard's object store breaker and stale-trace recovery cursor.
    pub meta: Arc<dyn MetadataStore>,
    /// The cron schedules the scheduler role fires (the binary builds them from the same
    /// settings), for the dashboard's cron view; only [`Scheduler::status`] is called.
    pub cron: Arc<Scheduler>,
    /// The backlog chart's samples; [`BacklogHistory::run`] fills it, the dashboard reads it.
    pub backlog: Arc<BacklogHistory>,
    /// Cancelled when the server shuts down: open trace streams end (clients resume from
    /// `Last-Event-ID` elsewhere), so a tailed job cannot hold the process up.
    pub shutdown: CancellationToken,
    /// The per-job PATCH rate limit of this process (429 with `Retry-After`).
    pub patch_rate: Arc<PatchRateLimit>,
    /// This process's trace streams: their cap and lifetime, one poller per tailed build.
    pub streams: Arc<StreamHub>,
    /// The log page's settings (public URL, read link lifetime) and line index cache.
    pub logpage: Arc<LogPage>,
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
        .route("/api/v4/openapi.json", get(openapi::openapi_json))
        .route("/favicon.ico", get(page_asset::favicon))
        .merge(admin::routes(state.clone()))
        .merge(logpage::routes())
        .layer(DefaultBodyLimit::max(MAX_PATCH_BYTES))
        .with_state(state)
}
